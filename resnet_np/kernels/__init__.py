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

Which of the two runs is decided by :mod:`resnet_np.dispatch` (its table, and
``resnet_np.implementations()`` to see it): the nn modules and the convolution call
through it. The switches of its policy are kept here too:

    ``use_kernels(False)`` forces the generic path, ``use_kernels(True)`` the kernels;
    it also works as a context manager that restores the previous setting on exit,
    and ``use_kernels(None)`` returns to ``RESNET_NP_KERNELS`` (``0`` disables the
    kernels; ``1`` or unset enables them).

TF32
    ``set_tf32(True)`` lets CuPy's float32 matrix products use TF32 tensor cores
    (10-bit mantissa inputs, float32 accumulation); off by default, since exact
    float32 is what the tests compare against. CuPy honours it in 2-D products,
    which is why the convolutions multiply 2-D matrices.
"""
import numpy as np

from .. import backend, dispatch
from ..dispatch import emulated_on_host, kernels_enabled, use_kernels
from .batchnorm import BatchNormKernelCache, batch_norm2d_backward_gpu, batch_norm2d_forward_gpu
from .conv import col2im_gpu, im2col_gpu
from .loss import (SoftmaxXentKernelCache, softmax_cross_entropy_backward_gpu,
                   softmax_cross_entropy_forward_gpu)
from .pooling import MaxPoolKernelCache, max_pool2d_backward_gpu, max_pool2d_forward_gpu

__all__ = ["ENV_VAR", "BatchNormKernelCache", "MaxPoolKernelCache", "SoftmaxXentKernelCache",
           "batch_norm2d_backward", "batch_norm2d_backward_gpu", "batch_norm2d_forward",
           "batch_norm2d_forward_gpu", "col2im", "col2im_gpu", "emulated_on_host", "im2col",
           "im2col_gpu", "kernels_enabled", "max_pool2d_backward", "max_pool2d_backward_gpu",
           "max_pool2d_forward", "max_pool2d_forward_gpu", "set_tf32",
           "softmax_cross_entropy_backward", "softmax_cross_entropy_backward_gpu",
           "softmax_cross_entropy_forward", "softmax_cross_entropy_forward_gpu",
           "tf32_enabled", "use_kernels", "uses_kernel"]

ENV_VAR = dispatch.KERNELS_ENV


def uses_kernel(a):
    """Whether an operation on ``a`` may go to a kernel: a float32/float64 CuPy array (or,
    inside :func:`emulated_on_host`, NumPy array), kernels on."""
    return dispatch.kernel_policy(backend.device_of(a), np.dtype(a.dtype).name)[0]


# --------------------------------------------------------------------------- #
# The layer functions through the dispatch: a kernel where it covers the call
# --------------------------------------------------------------------------- #
def im2col(x_nhwc, R, S, stride, padding, dilation, groups=1):
    """functional.conv.im2col, by the kernel for CuPy arrays (a 1x1 stride-1 conv stays a view)."""
    return dispatch.call("im2col", x_nhwc, R, S, stride, padding, dilation, groups)


def col2im(cols, x_shape_nhwc, R, S, stride, padding, dilation, groups=1):
    """functional.conv.col2im, by the kernel for CuPy arrays (a 1x1 stride-1 conv is a reshape)."""
    return dispatch.call("col2im", cols, x_shape_nhwc, R, S, stride, padding, dilation, groups)


def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training,
                         momentum=0.1, eps=1e-5):
    """functional.batch_norm2d_forward, by the kernels for CuPy arrays -> out, cache."""
    return dispatch.call("batch_norm2d_forward", x, gamma, beta, running_mean, running_var,
                         training, momentum, eps)


def batch_norm2d_backward(dout, cache, relu_out=None):
    """functional.batch_norm2d_backward for either forward's cache -> dx, dgamma, dbeta.

    With ``relu_out``, dout is the gradient of a ReLU applied to the batch norm's
    output, and the ReLU's mask is applied first (fused into the kernel).
    """
    return dispatch.backward("batch_norm2d_backward", dout, cache, relu_out=relu_out)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """functional.max_pool2d_forward, by the kernel for CuPy arrays -> out, cache."""
    return dispatch.call("max_pool2d_forward", x, kernel_size, stride, padding, dilation,
                         ceil_mode)


def max_pool2d_backward(dout, cache):
    """functional.max_pool2d_backward for either forward's cache -> dx."""
    return dispatch.backward("max_pool2d_backward", dout, cache)


def softmax_cross_entropy_forward(logits, labels, label_smoothing=0.0, *, weight=None,
                                  ignore_index=-100, reduction="mean"):
    """functional.softmax_cross_entropy_forward, by the kernel for CuPy arrays -> loss, cache."""
    return dispatch.call("softmax_cross_entropy_forward", logits, labels, label_smoothing,
                         weight=weight, ignore_index=ignore_index, reduction=reduction)


def softmax_cross_entropy_backward(dloss, cache):
    """functional.softmax_cross_entropy_backward for either forward's cache -> dlogits."""
    return dispatch.backward("softmax_cross_entropy_backward", dloss, cache)


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
    dispatch.policy["tf32"] = enabled


def tf32_enabled():
    """Whether :func:`set_tf32` last turned TF32 on."""
    return dispatch.policy["tf32"]
