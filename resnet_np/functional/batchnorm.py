"""Batch normalisation over (N, H, W) for each channel, as torch.nn.BatchNorm2d.

The fast twin of :func:`.reference.batch_norm2d_forward` and
:func:`.reference.batch_norm2d_backward` (read those for the maths, step by step).

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

How it is made fast, and kept accurate:

- One scale and one shift per channel (:func:`scale_and_shift`):
  out = x * scale + shift is two passes over the activations instead of the
  four of the staged formula (commit "batch_norm2d: one scale and one shift
  per channel"); eval mode keeps only its input, no new memory.
- Float64 block sums (:func:`channel_sum`): the per-channel sums (mu, var,
  dbeta, dgamma) add M values. Summed row after row in float32 their error
  grows with M; here each block of ``BLOCK_ROWS`` rows is summed in the input's
  dtype and the block sums are added in float64, at no extra cost, so the
  float32 sums are as accurate as torch's
  (tests/test_torch_compat_core.py::test_float32_batch_norm_sums_as_accurate_as_torch).
- The rounding of the mean carried in float64: x - mu is stored in the
  input's dtype as ``centered = x - round(mu)``; ``offset = mu - round(mu)``
  is what that rounding left out, so every sum and coefficient uses
  (x - mu) = centered - offset exactly, in float64.
- Large passes in row blocks over the cores (:func:`resnet_np.backend.in_row_blocks`):
  the same result bit for bit however the rows are split (on a 2-core machine a
  whole ResNet-50 step was not measurably faster with two threads than with one:
  README, "How the layers are computed").

Data parallelism reuses all of it: :func:`batch_norm2d_forward` takes a
``reduce`` hook that adds per-channel float64 sums over every rank
(:mod:`resnet_np.distributed.sync_batchnorm`); without it the sums are this
process's own.
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
    reduce: object = None   # adds float64 sums over every rank (synchronised batch norm)


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


def scale_and_shift(gamma, beta, mean, var, eps):
    """(inv_std, scale, shift), float64 (C,): gamma * (x - mean) / sqrt(var + eps) + beta
    = x * scale + shift per channel, with inv_std = 1 / sqrt(var + eps). gamma, beta None:
    1 and 0. Also the folding of an eval-mode batch norm into a convolution."""
    xp = backend.get_array_module(var)
    inv_std = 1 / xp.sqrt(var.astype(xp.float64) + eps)
    scale = inv_std if gamma is None else gamma * inv_std
    shift = xp.zeros(len(var), xp.float64) if beta is None else beta.astype(xp.float64)
    return inv_std, scale, shift - mean * scale


def fold_into_conv(weight, bias, gamma, beta, running_mean, running_var, eps):
    """The (weight, bias), float64, of one convolution equal to an eval-mode batch norm
    applied after the convolution (weight (K, C/G, R, S), bias (K,) or None):

        s = gamma / sqrt(running_var + eps)    w' = w * s[k]    b' = (b - running_mean) * s + beta
    """
    _, scale, shift = scale_and_shift(gamma, beta, running_mean, running_var, eps)
    folded_weight = weight * scale.reshape(-1, 1, 1, 1)
    return folded_weight, (shift if bias is None else shift + bias * scale)


def _in_row_blocks(rows_step, a):
    """Run an elementwise ``rows_step(rows)`` over the rows of the (M, C) matrix ``a``, on
    several cores for a large NumPy array (:func:`resnet_np.backend.in_row_blocks`)."""
    backend.in_row_blocks(rows_step, a.shape[0], a.size, backend.get_array_module(a))


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
                         momentum=0.1, eps=1e-5, *, reduce=None):
    """Normalise each channel; in train mode also update the running statistics in place.

    Returns ``out (N, C, H, W), cache``. As torch's ``F.batch_norm`` does,
    ``running_mean`` and ``running_var`` (when given) are modified in place in
    train mode, by the factor ``momentum``. An empty batch (N = 0) gives an
    empty output and leaves the running statistics alone, as torch does.
    ``reduce(sums)``, when given, returns a float64 array summed over every rank
    (``comm.allreduce``): the train-mode statistics are then those of the global batch.
    """
    layer = "batch_norm2d" if reduce is None else "sync_batch_norm2d"
    _check_inputs(layer, x, gamma, beta, running_mean, running_var, training, momentum, eps)
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    if N == 0 and reduce is None:
        cache = BatchNormCache(None, None, None, 0.0, None, gamma, beta is not None, training,
                               x.shape, x.dtype)
        return xp.zeros(x.shape, dtype=x.dtype), cache
    x_mat = _channels_last_matrix(x)
    if training:
        mean, centered, offset, var = _batch_statistics(layer, x, x_mat, reduce, running_mean,
                                                        running_var, momentum)
        # the source is x - round(mean): the shift takes off the offset that rounding left
        inv_std, scale, shift = scale_and_shift(gamma, beta, offset, var, eps)
    else:
        mean, centered, offset = running_mean, None, 0.0
        inv_std, scale, shift = scale_and_shift(gamma, beta, running_mean, running_var, eps)
    source = x_mat if centered is None else centered
    scale, shift, out = scale.astype(x.dtype), shift.astype(x.dtype), xp.empty_like(x_mat)

    def normalise(rows):        # out = source * scale + shift
        xp.multiply(source[rows], scale, out=out[rows])
        out[rows] += shift
    _in_row_blocks(normalise, out)
    # Train mode keeps x - mean; eval mode keeps x (its own input, no new memory).
    cache = BatchNormCache(None if training else x_mat, centered, mean, offset, inv_std, gamma,
                           beta is not None, training, x.shape, x.dtype, reduce)
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache


def _batch_statistics(layer, x, x_mat, reduce, running_mean, running_var, momentum):
    """The batch's mean (float64), x_mat centred on it in x's dtype, the offset that
    rounding left out (float64: x - mean = centered - offset), and the variance (float64);
    the running statistics updated in place. Over every rank with ``reduce``."""
    xp = backend.get_array_module(x)
    sums, M = channel_sum(x_mat), x_mat.shape[0]
    too_few = M < 2
    if reduce is not None:      # every rank's sums and counts, in one reduction
        sums = reduce(xp.concatenate([sums, xp.full(1, M, dtype=xp.float64)]))
        sums, M = sums[:-1], sums[-1]       # M stays an array: no host sync on a GPU,
        too_few = too_few and float(M) < 2  # but for a rank that alone has too few values
    if too_few:
        where = "" if reduce is None else " over all ranks"
        raise ValueError(f"{layer}: train mode needs more than 1 value per channel{where}, got "
                         f"input shape {tuple(x.shape)}")
    mean = sums / M
    mean_x, centered = mean.astype(x.dtype), xp.empty_like(x_mat)
    _in_row_blocks(lambda rows: xp.subtract(x_mat[rows], mean_x, out=centered[rows]), centered)
    offset = mean - mean_x
    squares = channel_sum(centered, centered)
    if reduce is not None:
        squares = reduce(squares)
    var = squares / M - offset * offset
    if running_mean is not None:
        running_mean *= 1 - momentum
        running_mean += (momentum * mean).astype(x.dtype)
        running_var *= 1 - momentum
        running_var += (momentum * var * (M / (M - 1))).astype(x.dtype)
    return mean, centered, offset, var


def batch_norm2d_backward(dout, cache):
    """dout (N, C, H, W) -> dx (N, C, H, W), dgamma (C,) or None, dbeta (C,) or None

    With a synchronised forward (``cache.reduce``), dx uses the sums over every rank
    and dgamma, dbeta are this rank's part (the gradient allreduce adds them)."""
    c = cache
    check_dout("batch_norm2d", dout, c.shape)
    xp = backend.get_array_module(dout)
    N, C, H, W = c.shape
    dtype = c.dtype
    if N == 0 and c.reduce is None:
        zeros = xp.zeros(C, dtype=dtype)
        return (xp.zeros(c.shape, dtype=dtype), None if c.gamma is None else zeros,
                zeros.copy() if c.has_beta else None)
    dout_mat = _channels_last_matrix(dout)
    centered = c.centered if c.training else c.x_mat - c.mean    # eval: the forward kept x
    dbeta = channel_sum(dout_mat)                                  # float64
    dgamma = (channel_sum(dout_mat, centered) - c.offset * dbeta) * c.inv_std   # sum(dout*xhat)
    scale = c.inv_std if c.gamma is None else c.gamma * c.inv_std
    dx, scale = xp.empty_like(dout_mat), scale.astype(dtype)
    if c.training:
        total_dbeta, total_dgamma, M = _over_ranks(c.reduce, dbeta, dgamma, dout_mat.shape[0])
        # dx = scale * (dout - dbeta / M - xhat * dgamma / M), with
        # xhat = (centered - offset) * inv_std:  dx = scale * (dout + centered * k + shift)
        k = -c.inv_std * total_dgamma / M
        k, shift = k.astype(dtype), (-total_dbeta / M - c.offset * k).astype(dtype)

        def input_gradient(rows):
            d = dx[rows]
            xp.multiply(centered[rows], k, out=d)
            d += dout_mat[rows]
            d += shift
            d *= scale
    else:
        def input_gradient(rows):
            xp.multiply(dout_mat[rows], scale, out=dx[rows])
    _in_row_blocks(input_gradient, dx)
    dgamma = None if c.gamma is None else dgamma.astype(dtype)
    dbeta = dbeta.astype(dtype) if c.has_beta else None
    return dx.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta


def _over_ranks(reduce, dbeta, dgamma, rows):
    """(dbeta, dgamma, M) summed over every rank by ``reduce`` (one reduction), or as given;
    M stays on the device (no host sync)."""
    if reduce is None:
        return dbeta, dgamma, rows
    xp = backend.get_array_module(dbeta)
    sums = reduce(xp.concatenate([dbeta, dgamma, xp.full(1, rows, dtype=xp.float64)]))
    C = len(dbeta)
    return sums[:C], sums[C:2 * C], sums[-1]
