"""Hand-written CUDA kernels for the layers where CuPy's generic code is slowest.

    im2col, col2im                      cuda/im2col.cu     (col2im gathers: no atomics)
    batch norm forward and backward     cuda/batchnorm.cu  (ReLU's mask fused into the backward)
    max-pool forward and backward       cuda/maxpool.cu    (the forward keeps its winners)
    softmax cross-entropy               cuda/softmax_xent.cu

Each ``*_gpu`` function has the arguments and results of the NumPy/CuPy
function it replaces in :mod:`resnet_np.functional`, and each kernel's comment
names that function and the formula. The functions without ``_gpu`` dispatch:
CuPy arrays of float32 or float64 go to a kernel while kernels are enabled;
everything else (NumPy arrays, float16, kernels disabled) goes to the generic
code, with the same result.

The switch
    ``use_kernels(False)`` forces the generic path, ``use_kernels(True)`` the
    kernels; it also works as a context manager that restores the previous
    setting on exit, and ``use_kernels(None)`` returns to the environment's
    choice. Without a call, the environment variable ``RESNET_NP_KERNELS``
    decides: ``0``/``false``/``off`` disables the kernels, ``1``/``true``/``on``
    (or unset) enables them.

TF32
    ``set_tf32(True)`` lets CuPy's float32 matrix products use TF32 tensor cores
    (10-bit mantissa inputs, float32 accumulation); off by default, since exact
    float32 is what the tests compare against.
"""
import contextlib
import functools
import os
import types

import numpy as np

from .. import backend
from ..functional.conv import sides
from .batchnorm import BatchNormKernelCache, batch_norm2d_backward_gpu, batch_norm2d_forward_gpu
from .conv import col2im_gpu, im2col_gpu
from .loss import (SoftmaxXentKernelCache, softmax_cross_entropy_backward_gpu,
                   softmax_cross_entropy_forward_gpu)
from .pooling import MaxPoolKernelCache, max_pool2d_backward_gpu, max_pool2d_forward_gpu

__all__ = ["ENV_VAR", "BatchNormKernelCache", "MaxPoolKernelCache", "SoftmaxXentKernelCache",
           "batch_norm2d_backward", "batch_norm2d_backward_gpu", "batch_norm2d_forward",
           "batch_norm2d_forward_gpu", "col2im", "col2im_gpu", "emulated_on_host", "generic", "im2col", "im2col_gpu",
           "kernels_enabled", "max_pool2d_backward", "max_pool2d_backward_gpu",
           "max_pool2d_forward", "max_pool2d_forward_gpu", "set_tf32",
           "softmax_cross_entropy_backward",
           "softmax_cross_entropy_backward_gpu", "softmax_cross_entropy_forward",
           "softmax_cross_entropy_forward_gpu", "tf32_enabled", "use_kernels", "uses_kernel", "wired_into_functional"]

ENV_VAR = "RESNET_NP_KERNELS"
KERNEL_DTYPES = ("float32", "float64")
_TRUE, _FALSE = ("1", "true", "on", "yes", ""), ("0", "false", "off", "no")
# kernels: None = as the environment says; host: the launcher of emulated_on_host, or None
_state = {"kernels": None, "tf32": False, "host": None}


# --------------------------------------------------------------------------- #
# The switch
# --------------------------------------------------------------------------- #
def _from_environment():
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: expected 1 (use the CUDA kernels) or "
                     "0 (use the generic CuPy code)")


def kernels_enabled():
    """Whether CuPy arrays go to the kernels now (the switch, else the environment)."""
    if _state["kernels"] is not None:
        return _state["kernels"]
    return _from_environment()


class use_kernels:
    """``use_kernels(False)`` forces the generic CuPy path from now on; as a context
    manager (``with use_kernels(False): ...``) only inside the block.

    ``True`` enables the kernels, ``None`` hands the choice back to ``RESNET_NP_KERNELS``.
    """

    def __init__(self, enabled):
        if enabled not in (True, False, None):
            raise TypeError(f"use_kernels: expected True, False or None, got {enabled!r}")
        self._previous = _state["kernels"]
        _state["kernels"] = enabled

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _state["kernels"] = self._previous
        return False


def _is_cupy_array(a):
    cp = backend._cupy
    return cp is not None and isinstance(a, cp.ndarray)


def uses_kernel(a):
    """Whether an operation on ``a`` goes to a kernel: a float32/float64 CuPy array (or,
    inside :func:`emulated_on_host`, NumPy array), kernels on."""
    on_device = _is_cupy_array(a) or (_state["host"] is not None and isinstance(a, np.ndarray))
    return on_device and a.dtype.name in KERNEL_DTYPES and kernels_enabled()


def _launcher_for(a):
    """None (the GPU) for a CuPy array, the host emulation for a NumPy one."""
    return None if _is_cupy_array(a) else _state["host"]


@contextlib.contextmanager
def emulated_on_host(launcher):
    """Within this context NumPy arrays go to the kernels too, run by ``launcher`` (a
    :class:`resnet_np.kernels.host.HostLauncher`): a whole model through every
    barrier-free kernel on the CPU, to test the dispatch without a GPU. Slow."""
    previous = _state["host"]
    _state["host"] = launcher
    try:
        yield launcher
    finally:
        _state["host"] = previous


# --------------------------------------------------------------------------- #
# Dispatch: a kernel for CuPy arrays, the generic code otherwise
# --------------------------------------------------------------------------- #
@functools.lru_cache(maxsize=None)
def generic():
    """The generic functions of resnet_np.functional, as they were when first asked for.

    Captured once, so that code which points the functional names at the
    dispatchers below (as the GPU benchmark does) never makes them call themselves.
    """
    from ..functional import activation, batchnorm, conv, loss, pooling
    return types.SimpleNamespace(
        im2col=conv.im2col, col2im=conv.col2im, relu_backward=activation.relu_backward,
        batch_norm2d_forward=batchnorm.batch_norm2d_forward,
        batch_norm2d_backward=batchnorm.batch_norm2d_backward,
        max_pool2d_forward=pooling.max_pool2d_forward,
        max_pool2d_backward=pooling.max_pool2d_backward,
        softmax_cross_entropy_forward=loss.softmax_cross_entropy_forward,
        softmax_cross_entropy_backward=loss.softmax_cross_entropy_backward)


def _is_identity_im2col(R, S, stride, padding):
    return R == S == 1 and tuple(stride) == (1, 1) and sides(padding) == ((0, 0), (0, 0))


def im2col(x_nhwc, R, S, stride, padding, dilation, groups=1):
    """functional.conv.im2col, by the kernel for CuPy arrays (a 1x1 stride-1 conv stays a view)."""
    if uses_kernel(x_nhwc) and not (_is_identity_im2col(R, S, stride, padding)
                                    and x_nhwc.flags.c_contiguous):
        return im2col_gpu(x_nhwc, R, S, stride, padding, dilation, groups,
                          launcher=_launcher_for(x_nhwc))
    return generic().im2col(x_nhwc, R, S, stride, padding, dilation, groups)


def col2im(cols, x_shape_nhwc, R, S, stride, padding, dilation, groups=1):
    """functional.conv.col2im, by the kernel for CuPy arrays (a 1x1 stride-1 conv is a reshape)."""
    if uses_kernel(cols) and not _is_identity_im2col(R, S, stride, padding):
        return col2im_gpu(cols, x_shape_nhwc, R, S, stride, padding, dilation, groups,
                          launcher=_launcher_for(cols))
    return generic().col2im(cols, x_shape_nhwc, R, S, stride, padding, dilation, groups)


def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training,
                         momentum=0.1, eps=1e-5):
    """functional.batch_norm2d_forward, by the kernels for CuPy arrays -> out, cache.

    The kernels cover the affine batch norm with running statistics (every ResNet's);
    the other options go to the generic code."""
    covered = all(a is not None for a in (gamma, beta, running_mean, running_var))
    if uses_kernel(x) and covered and getattr(x, "ndim", 0) == 4 and x.shape[0] > 0:
        return batch_norm2d_forward_gpu(x, gamma, beta, running_mean, running_var, training,
                                        momentum, eps, launcher=_launcher_for(x))
    return generic().batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training,
                                  momentum, eps)


def batch_norm2d_backward(dout, cache, relu_out=None):
    """functional.batch_norm2d_backward for either forward's cache -> dx, dgamma, dbeta.

    With ``relu_out``, dout is the gradient of a ReLU applied to the batch norm's
    output, and the ReLU's mask is applied first (fused into the kernel).
    """
    if isinstance(cache, BatchNormKernelCache):
        return batch_norm2d_backward_gpu(dout, cache, relu_out, launcher=_launcher_for(dout))
    if relu_out is not None:
        dout = generic().relu_backward(dout, relu_out)
    return generic().batch_norm2d_backward(dout, cache)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """functional.max_pool2d_forward, by the kernel for CuPy arrays -> out, cache.

    The kernel covers batched inputs without dilation or ceil_mode (every ResNet's
    pool); the other options go to the generic code."""
    if uses_kernel(x) and x.ndim == 4 and dilation in (1, (1, 1)) and not ceil_mode:
        return max_pool2d_forward_gpu(x, kernel_size, stride, padding, launcher=_launcher_for(x))
    return generic().max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d_backward(dout, cache):
    """functional.max_pool2d_backward for either forward's cache -> dx."""
    if isinstance(cache, MaxPoolKernelCache):
        return max_pool2d_backward_gpu(dout, cache, launcher=_launcher_for(dout))
    return generic().max_pool2d_backward(dout, cache)


def softmax_cross_entropy_forward(logits, labels, label_smoothing=0.0, *, weight=None,
                                  ignore_index=-100, reduction="mean"):
    """functional.softmax_cross_entropy_forward, by the kernel for CuPy arrays -> loss, cache.

    The kernel covers the mean loss of (N, M) logits over integer labels, without class
    weights or ignored labels; the other options go to the generic code."""
    covered = (weight is None and reduction == "mean" and getattr(logits, "ndim", 0) == 2
               and getattr(labels, "ndim", 0) == 1 and getattr(labels, "dtype", None) is not None
               and labels.dtype.kind in "iu" and len(labels) > 0
               and not bool((labels == ignore_index).any()))
    if uses_kernel(logits) and covered:
        version = "block" if _is_cupy_array(logits) else "rows"    # the host has no barriers
        return softmax_cross_entropy_forward_gpu(logits, labels, label_smoothing, version,
                                                 launcher=_launcher_for(logits))
    return generic().softmax_cross_entropy_forward(logits, labels, label_smoothing, weight=weight,
                                                   ignore_index=ignore_index,
                                                   reduction=reduction)


def softmax_cross_entropy_backward(dloss, cache):
    """functional.softmax_cross_entropy_backward for either forward's cache -> dlogits."""
    if isinstance(cache, SoftmaxXentKernelCache):
        return softmax_cross_entropy_backward_gpu(dloss, cache, launcher=_launcher_for(cache.p))
    return generic().softmax_cross_entropy_backward(dloss, cache)


_WIRED = ("im2col", "col2im", "batch_norm2d_forward", "batch_norm2d_backward",
          "max_pool2d_forward", "max_pool2d_backward", "softmax_cross_entropy_forward",
          "softmax_cross_entropy_backward")


@contextlib.contextmanager
def wired_into_functional():
    """Within this context resnet_np.functional's layer functions are the dispatchers
    above, so models and modules use the kernels (while enabled) for CuPy arrays.

    For the benchmark and the tests, until the functional layers call these
    dispatchers themselves; the previous functions are put back on exit.
    """
    from .. import functional as F
    from ..functional import conv
    generic()                                     # capture the generic functions first
    saved = [(F, name, getattr(F, name)) for name in _WIRED]
    saved += [(conv, "im2col", conv.im2col), (conv, "col2im", conv.col2im)]
    try:
        for owner, name, _ in saved:
            setattr(owner, name, globals()[name])
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


# --------------------------------------------------------------------------- #
# TF32 for CuPy's float32 matrix products
# --------------------------------------------------------------------------- #
# cupy/_core/_routines_linalg: COMPUTE_TYPE_DEFAULT = 1 (float32 computes in
# float32), COMPUTE_TYPE_TF32 = 7 (inputs rounded to TF32 on tensor cores).
_COMPUTE_TYPE_DEFAULT, _COMPUTE_TYPE_TF32 = 1, 7


def set_tf32(enabled):
    """Let CuPy's float32 GEMMs (matmul, dot, tensordot) use TF32 tensor cores, or not.

    Calls ``cupy._core.set_compute_type(float32, ...)``, which overrides the
    ``CUPY_TF32`` environment variable; off by default. Without CuPy, turning
    it on is an error and turning it off does nothing.
    """
    enabled = bool(enabled)
    cp = backend._cupy
    if cp is None:
        if enabled:
            raise RuntimeError("set_tf32(True) needs CuPy: TF32 is a mode of NVIDIA GPUs")
    else:
        linalg = getattr(cp._core, "_routines_linalg", None)
        compute_type = (getattr(linalg, "COMPUTE_TYPE_TF32", _COMPUTE_TYPE_TF32) if enabled
                        else getattr(linalg, "COMPUTE_TYPE_DEFAULT", _COMPUTE_TYPE_DEFAULT))
        cp._core.set_compute_type(np.float32, compute_type)
    _state["tf32"] = enabled


def tf32_enabled():
    """Whether :func:`set_tf32` last turned TF32 on."""
    return _state["tf32"]
