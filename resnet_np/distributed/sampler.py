"""Each rank's share of a dataset, epoch by epoch (as torch's DistributedSampler).

Every rank draws the same shuffled order of epoch e (same seed everywhere) and
keeps every R-th index from its rank on:

    order    = permutation(N)  of (seed, epoch)            the same on every rank
    usable   = N - N % R                                    the tail of the order is dropped
    shard_r  = order[r : usable : R]                        N // R indices, disjoint

Training drops the last N % R indices of each epoch's order (fewer than R
images, a different few each epoch) rather than padding with repeats, so no
image counts twice in an epoch. With batches of B per rank, batch i of every
rank together is ``order[i*R*B : (i+1)*R*B]``: one process's batch i at batch
size R*B, so R ranks at B see the same images per step as one process at R*B.

Evaluation (``drop_tail=False``) keeps every index: shards differ in length by
at most one, and every test image is evaluated exactly once.

Augmentation: the loader draws each image's crops and flips from a generator
of its own, seeded by ``(seed, epoch, index of the image)``, so an image is
augmented alike whichever rank and batch it lands in: R ranks at batch B equal
one process at R*B with augmentation on too.
"""
from ..data import DataLoader


def shard(order, rank, size, drop_tail=True):
    """Rank ``rank``'s indices of ``order``: every ``size``-th from ``rank`` on."""
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    end = len(order) - len(order) % size if drop_tail else len(order)
    return order[rank:end:size]


def shard_length(n, rank, size, drop_tail=True):
    """len(shard(range(n), rank, size, drop_tail))."""
    return n // size if drop_tail else len(range(rank, n, size))


class ShardedLoader(DataLoader):
    """A DataLoader over rank ``rank``'s shard of each epoch's order.

    Same arguments as :class:`~resnet_np.data.DataLoader`, plus ``rank`` and
    ``size`` (the number of ranks) and ``drop_tail`` (see the module
    docstring). ``batch_size`` is per rank, at most the shard's length.
    The state dict is the DataLoader's: a resumed run continues each shard.
    """

    def __init__(self, dataset, batch_size, rank, size, drop_tail=True, **kwargs):
        super().__init__(dataset, batch_size, **kwargs)
        self.rank, self.size, self.drop_tail = rank, size, drop_tail
        length = shard_length(len(dataset.labels), rank, size, drop_tail)
        if batch_size > length:
            raise ValueError(f"batch size {batch_size} per rank is larger than rank {rank}'s "
                             f"share of the {len(dataset.labels)} images ({length} of them on "
                             f"each of {size} ranks); use --batch-size {max(length, 1)} or less")

    def __len__(self):
        n = shard_length(len(self.dataset.labels), self.rank, self.size, self.drop_tail)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, epoch):
        return shard(super()._order(epoch), self.rank, self.size, self.drop_tail)


def sharded_loader(comm, dataset, batch_size, drop_tail=True, clip_batch=False, **kwargs):
    """This rank's loader: a plain DataLoader in one process, else a ShardedLoader.

    ``clip_batch`` lowers ``batch_size`` to the shard's length (for evaluation).
    """
    n = len(dataset.labels)
    length = shard_length(n, comm.rank, comm.size, drop_tail)
    if length == 0:
        raise ValueError(f"{n} images cannot be shared among {comm.size} ranks: use fewer "
                         "processes or more images (--limit / --test-limit)")
    if clip_batch:
        batch_size = min(batch_size, length)
    if comm.size == 1:
        return DataLoader(dataset, batch_size, **kwargs)
    return ShardedLoader(dataset, batch_size, comm.rank, comm.size, drop_tail, **kwargs)
