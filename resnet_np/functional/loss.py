"""Softmax cross-entropy with mean reduction and optional label smoothing.

    logits (N, M), labels (N,) integers in [0, M)
    p       = softmax(logits)                            (computed stably: logits - max)
    target  = (1 - eps) * onehot(labels) + eps / M       (eps = label_smoothing)
    loss    = -1/N * sum_n sum_m target[n, m] * log p[n, m]
    dlogits = (p - target) / N
"""
from .. import backend
from ._checks import check_float, check_rank


def softmax_cross_entropy_forward(logits, labels, label_smoothing=0.0):
    """-> loss (a 0-d array of the logits' dtype), cache"""
    layer = "softmax_cross_entropy"
    check_rank(layer, logits, 2, "logits (N, M)")
    check_float(layer, logits)
    xp = backend.get_array_module(logits)
    labels = backend.to_device(labels, backend.device_of(logits))
    N, M = logits.shape
    if labels.shape != (N,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{layer}: labels must be integers of shape ({N},), got shape "
                         f"{tuple(labels.shape)} and dtype {labels.dtype}")
    # One host sync for the check; CuPy would silently wrap an out-of-range index.
    if N and bool(((labels < 0) | (labels >= M)).any()):
        raise ValueError(f"{layer}: labels must lie in [0, {M}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{layer}: label_smoothing must be in [0, 1], got {label_smoothing}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    nll = -log_p[xp.arange(N), labels]
    loss = (1 - label_smoothing) * nll.mean()
    if label_smoothing:
        loss = loss - label_smoothing * log_p.mean(axis=1).mean()
    return loss.astype(logits.dtype), (xp.exp(log_p), labels, label_smoothing)


def softmax_cross_entropy_backward(dloss, cache):
    """dloss (scalar, 1.0 for the loss itself) -> dlogits (N, M)"""
    p, labels, label_smoothing = cache
    xp = backend.get_array_module(p)
    N, M = p.shape
    target = xp.full_like(p, label_smoothing / M)
    target[xp.arange(N), labels] += 1 - label_smoothing
    return (p - target) * (dloss / N)
