"""Softmax cross-entropy as CUDA kernels (``cuda/softmax_xent.cu``).

Same maths as :mod:`resnet_np.functional.loss`:

    lse[n]   = log sum_m exp(logits[n, m])           p = exp(logits - lse)
    loss     = (1 - eps) * mean_n (lse[n] - logits[n, labels[n]]) - eps * mean_n mean_m log p[n, m]
    dlogits  = (p - (1 - eps) * onehot(labels) - eps / M) * dloss / N

The forward reads each row in three passes (max, sums, p), all in one kernel;
the sums are taken in double. Two versions: ``"rows"``, one thread per row
(no barriers, so it also runs on the CPU emulation), and ``"block"``, one
block of 256 threads per row (the default on the GPU).
"""
from typing import Any, NamedTuple

from .. import backend
from ..functional._checks import check_float, check_rank
from ._launch import choose_index, cuda_launcher, grid_1d

SOFTMAX_BLOCK = 256          # threads of the "block" version; cuda/softmax_xent.cu's SOFTMAX_BLOCK


class SoftmaxXentKernelCache(NamedTuple):
    p: Any                   # (N, M) softmax of the logits
    labels: Any              # (N,) int64, on the logits' device
    label_smoothing: float


def softmax_cross_entropy_forward_gpu(logits, labels, label_smoothing=0.0, version="block",
                                      launcher=None, *, weight=None, ignore_index=-100,
                                      reduction="mean"):
    """The kernel twin of functional.softmax_cross_entropy_forward -> loss (0-d), cache.

    Covers the mean loss over class indices without class weights; labels equal to
    ``ignore_index`` raise :class:`resnet_np.dispatch.NotCovered` (the dispatch then takes
    the generic code). The labels are checked where they are: NumPy labels on the host,
    device labels with one host sync (an out-of-range label would read out of bounds).
    """
    from ..dispatch import NotCovered
    layer = "softmax_cross_entropy"
    check_rank(layer, logits, 2, "logits (N, M)")
    check_float(layer, logits)
    if version not in ("rows", "block"):
        raise ValueError(f"{layer}: version must be 'rows' or 'block', got {version!r}")
    if weight is not None or reduction != "mean":
        raise ValueError(f"{layer}: the kernel takes the mean loss without class weights")
    launcher = launcher or cuda_launcher()
    xp = backend.get_array_module(logits)
    N, M = logits.shape
    if getattr(labels, "shape", None) != (N,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{layer}: labels must be integers of shape ({N},), got shape "
                         f"{tuple(getattr(labels, 'shape', ()))} and dtype "
                         f"{getattr(labels, 'dtype', type(labels).__name__)}")
    lx = backend.get_array_module(labels)
    bad, ignored = lx.stack([((labels < 0) | (labels >= M)).any(),
                             (labels == ignore_index).any()]).tolist()   # one sync: two flags
    if ignored:
        raise NotCovered("labels equal to ignore_index")
    if N and bad:                                   # the kernel would read out of bounds
        raise ValueError(f"{layer}: labels must lie in [0, {M}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    labels = backend.to_device(labels, backend.device_of(logits))
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{layer}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if N == 0 or M == 0:
        raise ValueError(f"{layer}: logits must have at least one row and one class, got "
                         f"shape {tuple(logits.shape)}")
    logits = xp.ascontiguousarray(logits)
    labels = xp.ascontiguousarray(labels, dtype="int64")
    p = xp.empty_like(logits)
    nll = xp.empty(N, dtype="float64")
    mean_logp = xp.empty(N, dtype="float64")
    args = [logits, labels, p, nll, mean_logp, N, M]
    index = choose_index(launcher, logits)
    if version == "rows":
        grid, block = grid_1d(N, launcher)
        launcher.launch("softmax_xent_rows", logits.dtype, grid, block, args, index)
    else:
        launcher.launch("softmax_xent_block", logits.dtype, (min(N, launcher.max_blocks),),
                        (SOFTMAX_BLOCK,), args, index)
    loss = (1 - label_smoothing) * nll.mean()
    if label_smoothing:
        loss = loss - label_smoothing * mean_logp.mean()
    return loss.astype(logits.dtype), SoftmaxXentKernelCache(p, labels, float(label_smoothing))


def softmax_cross_entropy_backward_gpu(dloss, cache, launcher=None):
    """The kernel twin of functional.softmax_cross_entropy_backward: dloss -> dlogits (N, M)."""
    p, labels, eps = cache
    launcher = launcher or cuda_launcher()
    xp = backend.get_array_module(p)
    N, M = p.shape
    dlogits = xp.empty_like(p)
    grid, block = grid_1d(p.size, launcher)
    launcher.launch("softmax_xent_backward", p.dtype, grid, block,
                    [p, labels, dlogits, N, M, float(eps), float(dloss) / N],   # dloss: a float
                    choose_index(launcher, p))
    return dlogits
