"""Batch normalisation over (N, H, W) for each channel, as torch.nn.BatchNorm2d.

    x (N, C, H, W); gamma, beta, running_mean, running_var (C,) or None  ->  out (N, C, H, W)

Train mode (batch statistics), with M = N*H*W values per channel:

    mu    = mean(x)                          var = mean((x - mu)^2)   (biased)
    xhat  = (x - mu) / sqrt(var + eps)       out = gamma * xhat + beta
    running_mean <- (1 - momentum) * running_mean + momentum * mu
    running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)

Eval mode uses running_mean and running_var in place of mu and var. gamma and
beta may be None (torch's ``affine=False``: gamma 1, beta 0), and the running
statistics may be None in train mode (``track_running_stats=False``).

Backward in the compact closed form (train mode):

    dbeta  = sum(dout)          dgamma = sum(dout * xhat)
    dx     = gamma / sqrt(var + eps) * (dout - dbeta / M - xhat * dgamma / M)

In eval mode mu and var are constants, so dx = gamma / sqrt(running_var + eps) * dout.

Precision: the per-channel sums (mu, var, dbeta, dgamma) add M values. Summed
row after row in float32 their error grows with M; here each block of
``BLOCK_ROWS`` rows is summed in the input's dtype and the block sums are added
in float64 (:func:`channel_sum`), which costs no more time and is as accurate
as a pairwise sum. The per-channel coefficients are formed in float64 too.
"""
from typing import NamedTuple, Optional

import numpy as np

from .. import backend
from ._checks import check_dout, check_float, check_rank, check_same_dtype

BLOCK_ROWS = 16


class BatchNormCache(NamedTuple):
    """What the backward needs. x_mat and centered are (M, C) channels-last matrices."""
    x_mat: object           # the input (eval mode only; None in train mode)
    centered: object        # x - mean (train mode only; None in eval mode)
    mean: object            # (C,) the mean used: the batch's, or running_mean
    offset: object          # (C,) float64: the mean minus its rounding in centered (or 0)
    inv_std: object         # (C,) float64, 1 / sqrt(var + eps)
    gamma: Optional[object]
    has_beta: bool
    training: bool
    shape: tuple            # (N, C, H, W)
    dtype: object


def channel_sum(a, b=None):
    """(M, C) -> (C,) float64: sum over rows of ``a`` (or of ``a * b``).

    Blocks of BLOCK_ROWS rows are summed in a's dtype, the block sums in float64.
    """
    xp = backend.get_array_module(a)
    if xp is not np:           # CuPy's reductions are tree-shaped already
        return (a if b is None else a * b).sum(axis=0, dtype=xp.float64)
    M, C = a.shape
    K = M // BLOCK_ROWS
    head = K * BLOCK_ROWS
    blocks = a[:head].reshape(K, BLOCK_ROWS, C)
    if b is None:
        total = blocks.sum(axis=1).sum(axis=0, dtype=xp.float64)
        return total + a[head:].sum(axis=0, dtype=xp.float64)
    partial = xp.einsum("krc,krc->kc", blocks, b[:head].reshape(K, BLOCK_ROWS, C))
    rest = xp.einsum("mc,mc->c", a[head:], b[head:])
    return partial.sum(axis=0, dtype=xp.float64) + rest


def _elementwise(pass_, a):
    """Run an elementwise ``pass_(rows)`` over the rows of the (M, C) matrix ``a``, on
    several cores for a large NumPy array (:func:`resnet_np.backend.in_row_blocks`)."""
    backend.in_row_blocks(pass_, a.shape[0], a.size, backend.get_array_module(a))


def _channels_last_matrix(x):
    """(N, C, H, W) -> (N*H*W, C) view of channels-last memory (a copy otherwise)."""
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(N * H * W, C)


def _check_inputs(layer, x, gamma, beta, running_mean, running_var, training, momentum, eps):
    check_rank(layer, x, 4, "(N, C, H, W)")
    check_float(layer, x)
    C = x.shape[1]
    for name, value in (("weight", gamma), ("bias", beta), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if value is None:
            continue
        check_same_dtype(layer, x, value, name)
        if tuple(value.shape) != (C,):
            raise ValueError(f"{layer}: input has {C} channels but {name} has shape "
                             f"{tuple(value.shape)} (x.shape={tuple(x.shape)})")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{layer}: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError(f"{layer}: eval mode (training=False) needs running_mean and "
                         "running_var; without them use the batch statistics (training=True)")
    if training and running_mean is not None and not 0 <= momentum <= 1:
        raise ValueError(f"{layer}: momentum must be in [0, 1], got {momentum!r}")
    if not eps > 0:
        raise ValueError(f"{layer}: eps must be positive, got {eps!r}")


def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training,
                         momentum=0.1, eps=1e-5):
    """Normalise each channel; in train mode also update the running statistics in place.

    Returns ``out (N, C, H, W), cache``. As torch's ``F.batch_norm`` does,
    ``running_mean`` and ``running_var`` (when given) are modified in place in
    train mode, by the factor ``momentum``. An empty batch (N = 0) gives an
    empty output and leaves the running statistics alone, as torch does.
    """
    layer = "batch_norm2d"
    _check_inputs(layer, x, gamma, beta, running_mean, running_var, training, momentum, eps)
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    x_mat = _channels_last_matrix(x)
    M = x_mat.shape[0]
    if N == 0:
        cache = BatchNormCache(None, None, None, 0.0, None, gamma, beta is not None, training,
                               x.shape, x.dtype)
        return xp.zeros(x.shape, dtype=x.dtype), cache
    if training:
        if M < 2:
            raise ValueError(f"{layer}: train mode needs more than 1 value per channel, got "
                             f"input shape {tuple(x.shape)}")
        mean = channel_sum(x_mat) / M                      # float64
        # centered = x - mean rounded to x's dtype; offset is what that rounding left
        # out, (x - mean) = centered - offset: carried in float64 into every sum.
        mean_x, centered = mean.astype(x.dtype), xp.empty_like(x_mat)
        _elementwise(lambda r: xp.subtract(x_mat[r], mean_x, out=centered[r]), centered)
        offset = mean - mean_x
        var = channel_sum(centered, centered) / M - offset * offset
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += (momentum * mean).astype(x.dtype)
            running_var *= 1 - momentum
            running_var += (momentum * var * (M / (M - 1))).astype(x.dtype)
    else:
        mean, var, centered = running_mean, running_var.astype(xp.float64), None
        offset = 0.0
    inv_std = 1 / xp.sqrt(var + eps)
    # out = gamma * (x - mean) * inv_std + beta, as one scale and one shift per channel:
    # two passes over the activations instead of four.
    scale = inv_std if gamma is None else gamma * inv_std
    shift = xp.zeros(C, xp.float64) if beta is None else beta.astype(xp.float64)
    source = centered if training else x_mat
    shift = (shift - offset * scale) if training else (shift - mean * scale)
    scale, shift = scale.astype(x.dtype), shift.astype(x.dtype)
    out = xp.empty_like(x_mat)

    def normalise(r):
        xp.multiply(source[r], scale, out=out[r])
        out[r] += shift
    _elementwise(normalise, out)
    # Train mode keeps x - mean; eval mode keeps x (its own input, no new memory).
    cache = BatchNormCache(None if training else x_mat, centered, mean, offset, inv_std, gamma,
                           beta is not None, training, x.shape, x.dtype)
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache


def batch_norm2d_backward(dout, cache):
    """dout (N, C, H, W) -> dx (N, C, H, W), dgamma (C,) or None, dbeta (C,) or None"""
    c = cache
    check_dout("batch_norm2d", dout, c.shape)
    xp = backend.get_array_module(dout)
    N, C, H, W = c.shape
    dtype = c.dtype
    if N == 0:
        zeros = xp.zeros(C, dtype=dtype)
        return (xp.zeros(c.shape, dtype=dtype), None if c.gamma is None else zeros,
                zeros.copy() if c.has_beta else None)
    dout_mat = _channels_last_matrix(dout)
    M = dout_mat.shape[0]
    centered = c.centered if c.training else c.x_mat - c.mean    # eval: the forward kept x
    dbeta = channel_sum(dout_mat)                                  # float64
    dgamma = (channel_sum(dout_mat, centered) - c.offset * dbeta) * c.inv_std   # sum(dout*xhat)
    scale = c.inv_std if c.gamma is None else c.gamma * c.inv_std
    dx, scale = xp.empty_like(dout_mat), scale.astype(dtype)
    if c.training:
        # dx = scale * (dout - dbeta / M - xhat * dgamma / M), with
        # xhat = (centered - offset) * inv_std
        k = -c.inv_std * dgamma / M
        k, shift = k.astype(dtype), (-dbeta / M - c.offset * k).astype(dtype)

        def pass_(r):
            d = dx[r]
            xp.multiply(centered[r], k, out=d)
            d += dout_mat[r]
            d += shift
            d *= scale
    else:
        def pass_(r):
            xp.multiply(dout_mat[r], scale, out=dx[r])
    _elementwise(pass_, dx)
    dgamma = None if c.gamma is None else dgamma.astype(dtype)
    dbeta = dbeta.astype(dtype) if c.has_beta else None
    return dx.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta
