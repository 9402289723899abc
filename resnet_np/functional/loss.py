"""Softmax cross-entropy, as torch.nn.functional.cross_entropy defines it.

    logits (N, M), (M,) or (N, M, d1, ...): M classes along axis 1 (axis 0 unbatched)
    target: class indices (N,), () or (N, d1, ...), or probabilities of the logits' shape

Each position i (a row of M logits) has log p_i = log_softmax(logits_i) and a
row of target weights T_i, so that

    loss_i  = -sum_m T_im log p_im
    dlogits_i = dloss_i * (p_i * sum_m T_im - T_i)

with eps = label_smoothing and w the class weights (1 when not given):

    class indices y:   T_i = (1 - eps) w[y_i] onehot(y_i) + eps / M * w
                       (T_i = 0 where y_i == ignore_index)
    probabilities t:   T_i = ((1 - eps) t_i + eps / M) * w

reduction 'none' keeps loss_i; 'sum' adds them; 'mean' divides the sum by
sum_i w[y_i] over the targets not ignored (class indices: the weighted mean,
so with no weights the number of targets kept) or by the number of positions
(probabilities). An empty batch gives NaN for 'mean' and 0 for 'sum', as torch.
"""
from typing import NamedTuple

import numpy as np

from .. import backend
from ._checks import check_float

REDUCTIONS = ("mean", "sum", "none")


class CrossEntropyCache(NamedTuple):
    p: object                # (R, M) softmax of each position, R = positions
    target: object           # (R, M) the target weights T
    denominator: object      # what 'mean' divides by (1 for 'sum' and 'none')
    reduction: str
    loss_shape: tuple        # shape of the 'none' loss
    logits_shape: tuple


def _rows(x, classes_axis):
    """(N, M, d1, ...) -> (N*d1*..., M): the class axis last, one position a row."""
    xp = backend.get_array_module(x)
    return xp.moveaxis(x, classes_axis, -1).reshape(-1, x.shape[classes_axis])


def _check_options(layer, M, weight, reduction, label_smoothing, dtype, xp, device):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{layer}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{layer}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if weight is None:
        return None
    weight = backend.to_device(backend.to_numpy(weight), device)
    if tuple(weight.shape) != (M,) or weight.dtype.kind not in "fiu":
        raise ValueError(f"{layer}: weight must hold one number per class, shape ({M},), got "
                         f"shape {tuple(weight.shape)} and dtype {weight.dtype}")
    return weight.astype(dtype)


def _index_targets(layer, labels, M, weight, ignore_index, label_smoothing, xp, dtype,
                   host_labels=None):
    """Class indices (R,) -> T (R, M) and the weighted count of the targets kept.

    The labels are checked (CuPy would silently wrap an out-of-range index) on the host
    when they came from there (``host_labels``), else with one host sync."""
    R = labels.shape[0]
    keep = labels != ignore_index
    safe = xp.where(keep, labels, 0)
    check = labels if host_labels is None else host_labels.reshape(-1)
    bad = (check != ignore_index) & ((check < 0) | (check >= M))
    if R and bool(bad.any()):
        raise ValueError(f"{layer}: labels must lie in [0, {M}) (or equal ignore_index="
                         f"{ignore_index}), got {int(check[bad][0])}")
    w = xp.ones(M, dtype=dtype) if weight is None else weight
    w_y = w[safe] * keep                                   # (R,): 0 where ignored
    target = (label_smoothing / M) * w[None, :] * keep[:, None].astype(dtype)
    target[xp.arange(R), safe] += (1 - label_smoothing) * w_y
    return target, w_y.sum(dtype=xp.float64)


def softmax_cross_entropy_forward(logits, labels, label_smoothing=0.0, *, weight=None,
                                  ignore_index=-100, reduction="mean"):
    """-> loss (a 0-d array of the logits' dtype; the loss per position for 'none'), cache"""
    layer = "softmax_cross_entropy"
    ndim = getattr(logits, "ndim", 0)
    if ndim < 1:
        raise ValueError(f"{layer}: expected logits (N, M), (M,) or (N, M, d1, ...), got shape "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    check_float(layer, logits)
    xp = backend.get_array_module(logits)
    device = backend.device_of(logits)
    host_labels = labels if isinstance(labels, np.ndarray) else None
    labels = backend.to_device(labels, device)
    classes_axis = 0 if ndim == 1 else 1
    M = logits.shape[classes_axis]
    loss_shape = tuple(s for i, s in enumerate(logits.shape) if i != classes_axis)
    weight = _check_options(layer, M, weight, reduction, label_smoothing, logits.dtype, xp,
                            device)
    z = _rows(logits, classes_axis)
    shifted = z - z.max(axis=1, keepdims=True) if z.shape[0] else z
    log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    if labels.dtype.kind in "iu":
        if tuple(labels.shape) != loss_shape:
            raise ValueError(f"{layer}: class-index labels must have shape {loss_shape} (the "
                             f"logits' shape without the class axis), got {tuple(labels.shape)}")
        target, kept = _index_targets(layer, labels.reshape(-1), M, weight, ignore_index,
                                      label_smoothing, xp, logits.dtype, host_labels)
        denominator = kept
    elif labels.dtype.kind == "f":
        if tuple(labels.shape) != tuple(logits.shape):
            raise ValueError(f"{layer}: probability targets must have the logits' shape "
                             f"{tuple(logits.shape)}, got {tuple(labels.shape)}")
        if ignore_index >= 0:
            raise ValueError(f"{layer}: ignore_index is not supported for probability targets "
                             f"(got ignore_index={ignore_index})")
        target = _rows(labels.astype(logits.dtype), classes_axis)
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / M
        if weight is not None:
            target = target * weight
        denominator = z.shape[0]
    else:
        raise ValueError(f"{layer}: labels must be class indices (integers) or probabilities "
                         f"(floats), got dtype {labels.dtype}")
    per_position = -(target * log_p).sum(axis=1)
    if reduction == "none":
        loss, denominator = per_position.reshape(loss_shape), 1
    elif reduction == "sum":
        loss, denominator = per_position.sum(), 1
    else:
        with np.errstate(invalid="ignore", divide="ignore"):    # empty: NaN, as torch
            loss = per_position.sum(dtype=xp.float64) / denominator
    cache = CrossEntropyCache(xp.exp(log_p), target, denominator, reduction, loss_shape,
                              tuple(logits.shape))
    return xp.asarray(loss).astype(logits.dtype), cache


def softmax_cross_entropy_backward(dloss, cache):
    """dloss (a scalar, 1.0 for the loss itself; the loss's shape for 'none') -> dlogits"""
    p, target, denominator, reduction, loss_shape, logits_shape = cache
    xp = backend.get_array_module(p)
    if reduction == "none":
        dloss = xp.asarray(dloss)
        if tuple(dloss.shape) != loss_shape:
            raise ValueError(f"softmax_cross_entropy backward: with reduction='none' dloss must "
                             f"have the loss's shape {loss_shape}, got {tuple(dloss.shape)}")
        coef = dloss.reshape(-1, 1).astype(p.dtype)
    else:
        if getattr(dloss, "size", 1) != 1:
            raise ValueError(f"softmax_cross_entropy backward: dloss must be a scalar for "
                             f"reduction={reduction!r}, got shape {tuple(dloss.shape)}")
        # No target kept (all ignored, or an empty batch): the loss is NaN and the
        # gradient 0, as torch's.
        denominator = xp.asarray(denominator, dtype=xp.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            coef = xp.where(denominator == 0, 0.0,
                            xp.asarray(dloss, dtype=xp.float64) / denominator).astype(p.dtype)
    dz = (p * target.sum(axis=1, keepdims=True) - target) * coef
    ndim = len(logits_shape)
    if ndim == 1:
        return dz.reshape(logits_shape)
    moved = (logits_shape[0],) + tuple(logits_shape[2:]) + (logits_shape[1],)
    return xp.moveaxis(dz.reshape(moved), -1, 1)
