"""Metrics over every rank: each rank evaluates its shard, the results are combined.

The test set is sharded without dropping (``ShardedLoader(..., drop_tail=False)``,
no shuffling), so rank r holds images r, r + R, r + 2R, ...; the combined
labels and predictions are put back in that order and equal those of one
process, and with them the top-1/top-5 counts and the confusion matrix. The
loss is the mean over all images of every rank's sum.
"""
import numpy as np

from ..training.evaluate import EvalResult, evaluate
from .data_parallel import broadcast_state


def reduce_eval(result, comm):
    """Combine the :class:`EvalResult` of every rank's strided shard into the whole set's."""
    if comm.size == 1:
        return result
    n = result.count
    top5 = None if result.top5 is None else round(result.top5 * n)   # None: 5 classes or fewer
    mine = (result.loss * n, round(result.top1 * n), top5, result.labels, result.predictions)
    parts = comm.allgather_object(mine)
    total = sum(part[3].shape[0] for part in parts)
    labels = np.empty(total, dtype=np.int64)
    predictions = np.empty(total, dtype=np.int64)
    for rank, (_, _, _, part_labels, part_predictions) in enumerate(parts):
        labels[rank::comm.size] = part_labels
        predictions[rank::comm.size] = part_predictions
    return EvalResult(loss=sum(p[0] for p in parts) / total,
                      top1=sum(p[1] for p in parts) / total,
                      top5=None if mine[2] is None else sum(p[2] for p in parts) / total,
                      labels=labels, predictions=predictions)


def evaluate_sharded(model, loader, comm, device="cpu", progress=False, desc="eval",
                     share_buffers=True):
    """:func:`~resnet_np.training.evaluate` of every rank's shard, combined.

    With ``share_buffers`` rank 0's buffers (batch-norm running statistics,
    which differ between ranks when batch norm is per rank) are broadcast
    first, so every rank evaluates the same model: the one rank 0 saves.
    """
    if comm.size > 1 and share_buffers:
        broadcast_state(model, comm, parameters=False)
    return reduce_eval(evaluate(model, loader, device, progress=progress, desc=desc), comm)


def reduce_sums(comm, *values):
    """The sums over ranks of a few numbers, as Python floats."""
    return [float(v) for v in comm.sum_host(values)]
