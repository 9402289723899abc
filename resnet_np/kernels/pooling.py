"""Max pooling as CUDA kernels (``cuda/maxpool.cu``): the forward keeps its winners.

Same maths as :func:`resnet_np.functional.max_pool2d_forward` and its backward:

    out[n, c, p, q] = max_{r, s} xpad[n, c, p*sh + r, q*sw + s]     (padding is -inf)
    dx[n, c, h, w]  = sum of dout[n, c, p, q] over the windows whose winner is (h, w)

The NumPy layer keeps only x and finds the winners again in the backward;
the forward kernel writes the winner's window offset r*S + s (int32) beside
the maximum, so the backward is one gather: a thread per input pixel looks at
the few windows that contain it (no atomics, no scatter).
"""
from typing import Any, NamedTuple

from .. import backend
from ..functional._checks import check_dout, check_float, check_rank, output_size, pair
from ._launch import choose_index, cuda_launcher, grid_1d
from .conv import element_strides


class MaxPoolKernelCache(NamedTuple):
    """The winners and the geometry, for :func:`max_pool2d_backward_gpu`."""
    argmax: Any           # (N, P, Q, C) int32, the winner's offset r*S + s in its window
    x_shape: tuple        # (N, C, H, W)
    kernel: tuple         # (R, S)
    stride: tuple         # (sh, sw)
    padding: tuple        # (ph, pw)


def max_pool2d_forward_gpu(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                           launcher=None):
    """The kernel twin of functional.max_pool2d_forward: x (N, C, H, W) -> out (N, C, P, Q),
    cache. Without dilation or ceil_mode (every ResNet's pool)."""
    layer = "max_pool2d"
    if dilation not in (1, (1, 1)) or ceil_mode:
        raise ValueError(f"{layer}: the kernel takes neither dilation nor ceil_mode")
    check_rank(layer, x, 4, "(N, C, H, W)")
    check_float(layer, x)
    R, S = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride if stride is not None else kernel_size, "stride")
    ph, pw = pair(padding, "padding")
    if ph > R // 2 or pw > S // 2 or min(ph, pw) < 0:
        raise ValueError(f"{layer}: padding {padding} must be between 0 and half the kernel "
                         f"size {kernel_size}")
    launcher = launcher or cuda_launcher()
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    P = output_size(layer, H, R, sh, ph, 1, "height")
    Q = output_size(layer, W, S, sw, pw, 1, "width")
    out = xp.empty((N, P, Q, C), dtype=x.dtype)
    argmax = xp.empty((N, P, Q, C), dtype="int32")
    x_nhwc = x.transpose(0, 2, 3, 1)
    if out.size:
        grid, block = grid_1d(out.size, launcher)
        launcher.launch("maxpool_forward", x.dtype, grid, block,
                        [x_nhwc, out, argmax, N, H, W, C, *element_strides(x_nhwc),
                         P, Q, R, S, sh, sw, ph, pw], choose_index(launcher, x_nhwc, out))
    cache = MaxPoolKernelCache(argmax, tuple(x.shape), (R, S), (sh, sw), (ph, pw))
    return out.transpose(0, 3, 1, 2), cache


def max_pool2d_backward_gpu(dout, cache, launcher=None):
    """The kernel twin of functional.max_pool2d_backward: dout (N, C, P, Q) -> dx (N, C, H, W)."""
    argmax, (N, C, H, W), (R, S), (sh, sw), (ph, pw) = cache
    P, Q = argmax.shape[1:3]
    check_dout("max_pool2d", dout, (N, C, P, Q))
    launcher = launcher or cuda_launcher()
    xp = backend.get_array_module(dout)
    dout_nhwc = dout.transpose(0, 2, 3, 1)
    dx = xp.empty((N, H, W, C), dtype=dout.dtype)
    if dx.size:
        grid, block = grid_1d(dx.size, launcher)
        launcher.launch("maxpool_backward", dout.dtype, grid, block,
                        [dout_nhwc, argmax, dx, N, H, W, C, *element_strides(dout_nhwc),
                         P, Q, R, S, sh, sw, ph, pw], choose_index(launcher, dout_nhwc, dx))
    return dx.transpose(0, 3, 1, 2)
