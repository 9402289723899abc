"""Batch norm as CUDA kernels (``cuda/batchnorm.cu``), with ReLU's mask fused into the backward.

Same maths as :mod:`resnet_np.functional.batchnorm` (see its docstring):

    forward   one pass of per-channel sums (mean, biased var), then out = (x - mean) * scale + beta
    backward  one pass of sums (dbeta = sum g, dgamma = sum g * xhat), then
              dx = scale * (g - dbeta/M - xhat * dgamma/M),   g = dout * [relu_out > 0]

where scale = gamma / sqrt(var + eps) and, when the batch norm is followed by
a ReLU, ``relu_out`` is that ReLU's output: the backward then takes the ReLU's
upstream gradient and applies its mask on the fly, one pass instead of two.
The cache keeps the input x itself (not x - mean, as the NumPy layer does),
so the forward allocates only its output.
"""
from typing import Any, NamedTuple

from .. import backend
from ..functional._checks import check_dout, check_float, check_rank, check_same_dtype
from ._launch import choose_index, cuda_launcher, grid_1d, grid_channel_sums
from .conv import element_strides


class BatchNormKernelCache(NamedTuple):
    """What :func:`batch_norm2d_backward_gpu` needs from the forward."""
    x: Any            # (N, C, H, W), the input
    mean: Any         # (C,) the batch mean (train) or the running mean (eval)
    inv_std: Any      # (C,) 1 / sqrt(var + eps)
    gamma: Any        # (C,)
    training: bool


def _nhwc_view(a):
    """(N, C, H, W) -> (a or a copy, (sN, sHW, sC)): a (N, H*W, C) reading in elements."""
    xp = backend.get_array_module(a)
    sN, sC, sH, sW = element_strides(a)
    if sH != a.shape[3] * sW and a.shape[2] > 1:
        a = xp.ascontiguousarray(a)
        sN, sC, sH, sW = element_strides(a)
    return a, (sN, sW, sC)


def _vector(v, dtype):
    """A contiguous (C,) array of ``dtype``, as the kernels read their per-channel values."""
    xp = backend.get_array_module(v)
    return xp.ascontiguousarray(v, dtype=dtype)


def _channel_sums(kernel, arrays, scalars, N, HW, C, launcher, xp):
    """Launch a per-channel sums kernel and add its partial rows -> two float64 (C,) arrays."""
    grid, block = grid_channel_sums(C, N * HW, launcher)
    rows = grid[1] * block[1]
    first = xp.empty((rows, C), dtype="float64")
    second = xp.empty((rows, C), dtype="float64")
    launcher.launch(kernel, arrays[0].dtype, grid, block,
                    [*arrays, first, second, N, HW, C, *scalars],
                    choose_index(launcher, N * HW * C, first, *arrays))
    return first.sum(axis=0), second.sum(axis=0)


def batch_norm2d_forward_gpu(x, gamma, beta, running_mean, running_var, training,
                             momentum=0.1, eps=1e-5, launcher=None):
    """The kernel twin of functional.batch_norm2d_forward -> out (N, C, H, W), cache.

    Train mode updates ``running_mean`` and ``running_var`` in place, as the
    NumPy layer does (unbiased variance in the running estimate).
    """
    layer = "batch_norm2d"
    check_rank(layer, x, 4, "(N, C, H, W)")
    check_float(layer, x)
    check_same_dtype(layer, x, gamma, "weight")
    N, C, H, W = x.shape
    if gamma.shape != (C,):
        raise ValueError(f"{layer}: input has {C} channels but the layer has {gamma.shape[0]} "
                         f"(x.shape={tuple(x.shape)})")
    launcher = launcher or cuda_launcher()
    xp = backend.get_array_module(x)
    M = N * H * W
    x, strides = _nhwc_view(x)
    if training:
        if M < 2:
            raise ValueError(f"{layer}: train mode needs more than 1 value per channel, got "
                             f"input shape {tuple(x.shape)}")
        shift = xp.ascontiguousarray(x[0, :, 0, 0])
        total, squares = _channel_sums("bn_forward_sums", [x, shift], strides, N, H * W, C,
                                       launcher, xp)
        mean64 = shift.astype("float64") + total / M
        var64 = xp.maximum(squares / M - (total / M) ** 2, 0.0)
        mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (M / (M - 1))
    else:
        mean, var = _vector(running_mean, x.dtype), _vector(running_var, x.dtype)
    inv_std = 1 / xp.sqrt(var + eps)
    scale = _vector(gamma * inv_std, x.dtype)
    out = xp.empty((N, H, W, C), dtype=x.dtype)
    if out.size:
        grid, block = grid_1d(out.size, launcher)
        launcher.launch("bn_apply", x.dtype, grid, block,
                        [x, mean, scale, _vector(beta, x.dtype), out, N, H * W, C, *strides],
                        choose_index(launcher, x, out))
    return out.transpose(0, 3, 1, 2), BatchNormKernelCache(x, mean, inv_std, gamma, training)


def batch_norm2d_backward_gpu(dout, cache, relu_out=None, launcher=None):
    """The kernel twin of functional.batch_norm2d_backward -> dx, dgamma, dbeta.

    dout (N, C, H, W) is the gradient of the batch norm's output or, with
    ``relu_out`` (the output of a ReLU applied to it), the gradient of that
    ReLU's output: then dx = batch_norm2d_backward(relu_backward(dout, relu_out)).
    """
    x, mean, inv_std, gamma, training = cache
    check_dout("batch_norm2d", dout, x.shape)
    if relu_out is not None:
        check_dout("relu (fused into batch_norm2d)", relu_out, x.shape)
    launcher = launcher or cuda_launcher()
    xp = backend.get_array_module(dout)
    N, C, H, W = x.shape
    M = N * H * W
    dout, d_strides = _nhwc_view(dout)
    if relu_out is not None:
        relu_out, r_strides = _nhwc_view(relu_out)
    else:
        r_strides = (0, 0, 0)
    x_strides = _nhwc_view(x)[1]
    dbeta64, dot64 = _channel_sums("bn_backward_sums", [dout, relu_out, x, mean],
                                   (*d_strides, *r_strides, *x_strides), N, H * W, C, launcher, xp)
    dbeta = dbeta64.astype(dout.dtype)
    dgamma = (dot64 * inv_std).astype(dout.dtype)
    scale = gamma * inv_std
    if training:
        b, k = dbeta / M, inv_std * dgamma / M
    else:                                          # mean and var are constants
        b, k = xp.zeros_like(scale), xp.zeros_like(scale)
    scale, b, k = (_vector(v, dout.dtype) for v in (scale, b, k))
    dx = xp.empty((N, H, W, C), dtype=dout.dtype)
    if dx.size:
        grid, block = grid_1d(dx.size, launcher)
        launcher.launch("bn_backward_apply", dout.dtype, grid, block,
                        [dout, relu_out, x, mean, scale, b, k, dx, N, H * W, C,
                         *d_strides, *r_strides, *x_strides],
                        choose_index(launcher, dout, relu_out, x, dx))
    return dx.transpose(0, 3, 1, 2), dgamma, dbeta
