"""Which implementation each layer runs: one table, one policy, decided here.

    op                      NumPy arrays                    CuPy float32/float64      CuPy float16
    ----------------------  ------------------------------  ------------------------  ------------
    conv2d                  Winograd F(4x4) or F(2x2) where  im2col kernel + GEMM      im2col + GEMM
                            winograd_tile picks it, else
                            im2col + GEMM
    conv2d input gradient   transposed convolution (stride   (as on NumPy), col2im by  (as NumPy)
                            1, maps of 14x14 or more), else  the kernel
                            GEMM + col2im
    batch_norm2d            generic                          kernel                    generic
    max_pool2d              generic                          kernel                    generic
    softmax_cross_entropy   generic                          kernel                    generic

"generic" is the NumPy/CuPy code of :mod:`resnet_np.functional`; "kernel" a CUDA kernel of
:mod:`resnet_np.kernels`, where it covers the call (the ``covers`` column of
:data:`KERNEL_OPS`: every ResNet's case) and else the generic code. Each backward follows
its forward: it goes where the forward's cache says.

The policy, each switch overriding its environment variable:

    kernels    ``kernels.use_kernels(True/False/None)``   RESNET_NP_KERNELS=0 turns them off
    Winograd   ``use_winograd(True/False/"fast"/"accurate")``   RESNET_NP_WINOGRAD=0 off;
               "fast" (F(4x4) allowed) in inference, "accurate" (F(2x2) only) in training
    TF32       ``kernels.set_tf32(True)``: CuPy's float32 GEMMs (2-D) on TF32 tensor cores
    the host   ``kernels.emulated_on_host(launcher)``: NumPy arrays to the kernels too,
               run by the g++ emulation (tests)

:func:`implementations` prints, for the current settings, what each op runs and why.
The other variables choose no implementation: RESNET_NP_CUPY_STANDIN picks which CuPy
(:mod:`resnet_np.backend`), RESNET_NP_NUM_THREADS the threads of the elementwise passes
and RESNET_NP_MALLOC the allocator's settings.
"""
import contextlib
import functools
import importlib
import os
from typing import Callable, NamedTuple

import numpy as np

from . import backend

KERNELS_ENV, WINOGRAD_ENV = "RESNET_NP_KERNELS", "RESNET_NP_WINOGRAD"
KERNEL_DTYPES = ("float32", "float64")
_TRUE, _FALSE = ("1", "true", "on", "yes", ""), ("0", "false", "off", "no")

# the switches: None means "as the environment says"
policy = {"kernels": None, "winograd": None, "tf32": False, "host": None}


def _identity_im2col(R, S, stride, padding):
    from .functional.conv import sides
    return R == S == 1 and tuple(stride) == (1, 1) and sides(padding) == ((0, 0), (0, 0))


class KernelOp(NamedTuple):
    kernel: str          # module:function of the kernel twin (takes launcher=)
    generic: str         # module:function of the generic code
    covers: Callable     # (the call's arguments) -> None if the kernel covers it, else why not
    backward: str = ""   # the op whose implementation the cache picks


# op -> (kernel, generic, which calls the kernel covers)
KERNEL_OPS = {
    "im2col": KernelOp(
        "kernels.conv:im2col_gpu", "functional:im2col",
        lambda x, R, S, stride, padding, dilation, groups=1:
            "a 1x1 stride-1 convolution's columns are its input (a view)"
            if _identity_im2col(R, S, stride, padding) and x.flags.c_contiguous else None),
    "col2im": KernelOp(
        "kernels.conv:col2im_gpu", "functional:col2im",
        lambda cols, x_shape, R, S, stride, padding, dilation, groups=1:
            "a 1x1 stride-1 convolution's col2im is a reshape"
            if _identity_im2col(R, S, stride, padding) else None),
    "batch_norm2d_forward": KernelOp(
        "kernels.batchnorm:batch_norm2d_forward_gpu", "functional:batch_norm2d_forward",
        lambda x, gamma, beta, running_mean, running_var, *rest:
            "the kernels need weight, bias and running statistics"
            if any(a is None for a in (gamma, beta, running_mean, running_var)) else
            "the kernels take a non-empty (N, C, H, W) batch"
            if getattr(x, "ndim", 0) != 4 or x.shape[0] == 0 else None,
        "batch_norm2d_backward"),
    "max_pool2d_forward": KernelOp(
        "kernels.pooling:max_pool2d_forward_gpu", "functional:max_pool2d_forward",
        lambda x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False:
            "the kernel takes (N, C, H, W) without dilation or ceil_mode"
            if x.ndim != 4 or dilation not in (1, (1, 1)) or ceil_mode else None,
        "max_pool2d_backward"),
    "softmax_cross_entropy_forward": KernelOp(
        "kernels.loss:softmax_cross_entropy_forward_gpu",
        "functional:softmax_cross_entropy_forward",
        lambda logits, labels, label_smoothing=0.0, *, weight=None, ignore_index=-100,
        reduction="mean":
            "the kernel takes the mean loss of (N, M) logits over class indices, without "
            "class weights" if weight is not None or reduction != "mean"
            or getattr(logits, "ndim", 0) != 2 or getattr(labels, "ndim", 0) != 1
            or np.dtype(labels.dtype).kind not in "iu" or len(labels) == 0 else None,
        "softmax_cross_entropy_backward"),
}
BACKWARD = {
    # op -> (the kernel forward's cache type, kernel backward, generic backward)
    "batch_norm2d_backward": ("kernels.batchnorm:BatchNormKernelCache",
                              "kernels.batchnorm:batch_norm2d_backward_gpu",
                              "functional:batch_norm2d_backward"),
    "max_pool2d_backward": ("kernels.pooling:MaxPoolKernelCache",
                            "kernels.pooling:max_pool2d_backward_gpu",
                            "functional:max_pool2d_backward"),
    "softmax_cross_entropy_backward": ("kernels.loss:SoftmaxXentKernelCache",
                                       "kernels.loss:softmax_cross_entropy_backward_gpu",
                                       "functional:softmax_cross_entropy_backward"),
}


def _resolve(path):
    """The function at "module:name" under resnet_np, looked up at each call: the generic
    code is found in :mod:`resnet_np.functional` itself, so a wrapper set there (the
    gradient check's record of ReLU and max-pool choices, a profiler's timer) is what runs."""
    module, name = path.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


class NotCovered(Exception):
    """Raised by a kernel that finds, from the data, a case it does not cover (labels equal
    to ignore_index): the call goes to the generic code instead."""


class Choice(NamedTuple):
    op: str
    implementation: str          # "kernel", "generic", "Winograd F(2x2)", "im2col", ...
    reason: str
    function: Callable = None
    tile: int = 0                # Winograd's output tile side m (conv2d)


# --------------------------------------------------------------------------- #
# The switches
# --------------------------------------------------------------------------- #
def _env_flag(name, default=True):
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return default if value == "" else True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={os.environ[name]!r}: expected 1 (on) or 0 (off)")


def kernels_enabled():
    """Whether CuPy arrays go to the kernels now (the switch, else RESNET_NP_KERNELS)."""
    if policy["kernels"] is not None:
        return policy["kernels"]
    try:
        return _env_flag(KERNELS_ENV)
    except ValueError:
        raise ValueError(f"{KERNELS_ENV}={os.environ[KERNELS_ENV]!r}: expected 1 (use the CUDA "
                         "kernels) or 0 (use the generic CuPy code)") from None


class use_kernels:
    """``use_kernels(False)`` forces the generic CuPy path from now on; as a context
    manager (``with use_kernels(False): ...``) only inside the block.

    ``True`` enables the kernels, ``None`` hands the choice back to ``RESNET_NP_KERNELS``.
    """

    def __init__(self, enabled):
        if enabled not in (True, False, None):
            raise TypeError(f"use_kernels: expected True, False or None, got {enabled!r}")
        self._previous = policy["kernels"]
        policy["kernels"] = enabled

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        policy["kernels"] = self._previous
        return False


def winograd_setting():
    """True (where winograd_tile picks it), False, or a forced mode "fast"/"accurate"."""
    if policy["winograd"] is not None:
        return policy["winograd"]
    return os.environ.get(WINOGRAD_ENV, "1") != "0"


@contextlib.contextmanager
def use_winograd(enabled=True):
    """Within this context conv2d uses Winograd where :func:`winograd_tile` picks it
    (True, the default; ``RESNET_NP_WINOGRAD=0`` in the environment turns it off), never
    (False), or with one mode, "fast" or "accurate", wherever Winograd is asked for,
    training included (to measure what the other mode would do)."""
    if enabled not in (True, False, "fast", "accurate"):
        raise ValueError(f"use_winograd: enabled must be True, False, 'fast' or 'accurate', "
                         f"got {enabled!r}")
    old = policy["winograd"]
    policy["winograd"] = enabled
    try:
        yield
    finally:
        policy["winograd"] = old


@contextlib.contextmanager
def emulated_on_host(launcher):
    """Within this context NumPy arrays go to the kernels too, run by ``launcher`` (a
    :class:`resnet_np.kernels.host.HostLauncher`): a whole model through every
    kernel the emulation has, on the CPU, to test the dispatch without a GPU. Slow."""
    previous = policy["host"]
    policy["host"] = launcher
    try:
        yield launcher
    finally:
        policy["host"] = previous


# --------------------------------------------------------------------------- #
# The choices
# --------------------------------------------------------------------------- #
def _device(a):
    return a.device if isinstance(a, _Probe) else backend.device_of(a)


def _device_and_dtype(a):
    return _device(a), np.dtype(a.dtype).name


def kernel_policy(device, dtype):
    """-> (True, why) when kernels run arrays of ``device`` and ``dtype``, else (False, why)."""
    if device == "cpu" and policy["host"] is None:
        return False, "NumPy arrays: the NumPy code"
    if dtype not in KERNEL_DTYPES:
        return False, f"{dtype}: the kernels take float32 and float64"
    if not kernels_enabled():
        why = "use_kernels(False)" if policy["kernels"] is False else f"{KERNELS_ENV}=0"
        return False, f"kernels off ({why})"
    if device == "cpu":
        return True, "NumPy arrays, the kernels emulated on the host (emulated_on_host)"
    return True, f"CuPy {dtype} arrays, kernels on"


# the CUDA kernel each op launches first on a GPU
LAUNCHES = {"im2col": "im2col", "col2im": "col2im", "batch_norm2d_forward": "bn_forward_sums",
            "max_pool2d_forward": "maxpool_forward",
            "softmax_cross_entropy_forward": "softmax_xent_block"}


def _launches(op):
    """None if this GPU can launch the op's kernel, else why not: the CuPy stand-in's
    g++ emulation needs a C++ compiler, and may lack the kernels with barriers."""
    if not backend.uses_standin():
        return None
    return backend._cupy.cannot_emulate(LAUNCHES[op])


def choose(op, *args, **kwargs):
    """The implementation of kernel op ``op`` for this call -> Choice (function bound to
    its launcher)."""
    entry = KERNEL_OPS[op]
    device, dtype = _device_and_dtype(args[0])
    use, reason = kernel_policy(device, dtype)
    if use:
        not_covered = entry.covers(*args, **kwargs) or (device == "gpu" and _launches(op))
        if not_covered:
            use, reason = False, not_covered
    if not use:
        return Choice(op, "generic", reason, _resolve(entry.generic))
    launcher = policy["host"] if device == "cpu" else None
    kernel = functools.partial(_resolve(entry.kernel), launcher=launcher)
    if op == "softmax_cross_entropy_forward":
        kernel = functools.partial(kernel, version="block" if device == "gpu" else "rows")
    return Choice(op, "kernel", reason, kernel)


def call(op, *args, **kwargs):
    """Run kernel op ``op`` by the implementation :func:`choose` picks."""
    choice = choose(op, *args, **kwargs)
    try:
        return choice.function(*args, **kwargs)
    except NotCovered:
        return _resolve(KERNEL_OPS[op].generic)(*args, **kwargs)


def backward(op, dout, cache, **kwargs):
    """Run a backward by the implementation its forward's cache belongs to; ``relu_out``
    (batch norm only) applies a following ReLU's mask first, fused into the kernel."""
    cache_type, kernel, generic = BACKWARD[op]
    if isinstance(cache, _resolve(cache_type)):
        launcher = policy["host"] if backend.device_of(dout) == "cpu" else None
        return _resolve(kernel)(dout, cache, launcher=launcher, **kwargs)
    relu_out = kwargs.pop("relu_out", None)
    if relu_out is not None:
        from .functional.activation import relu_backward
        dout = relu_backward(dout, relu_out)
    return _resolve(generic)(dout, cache, **kwargs)


def winograd_mode(training):
    """The Winograd mode nn.Conv2d asks for: "accurate" (F(2x2), its float32 rounding close
    to im2col's: benchmarks/float32_accuracy.py) in training, "fast" (F(4x4) too) in
    inference, where no backward compounds the rounding."""
    return "accurate" if training else "fast"


def conv_algorithm(x, g, mode):
    """conv2d's forward for input ``x`` and geometry ``g`` (a ConvGeometry), asked for
    Winograd ``mode`` (None, "fast" or "accurate") -> Choice; implementation "im2col" or
    "Winograd F(mxm)" (the tile side m in the name)."""
    from .functional.winograd import winograd_tile
    setting = winograd_setting()
    if not mode:
        return Choice("conv2d", "im2col", "Winograd not asked for")
    if setting is False:
        return Choice("conv2d", "im2col", "Winograd off (use_winograd(False) or "
                                          f"{WINOGRAD_ENV}=0)")
    if _device(x) != "cpu":
        return Choice("conv2d", "im2col", "CuPy: Winograd was not measured against the GEMM")
    mode = setting if isinstance(setting, str) else mode
    m = winograd_tile(x, g, mode)
    if not m:
        return Choice("conv2d", "im2col", f"winograd_tile ({mode}) does not pick this shape")
    return Choice("conv2d", f"Winograd F({m}x{m})", f"winograd_tile ({mode}) picks it", tile=m)


def conv_input_grad(g):
    """dx of a convolution: "transposed convolution" or "GEMM + col2im" -> Choice."""
    from .functional.conv import _transposed_conv_is_faster
    if _transposed_conv_is_faster(g):
        return Choice("conv2d input gradient", "transposed convolution",
                      "stride 1 on a map of 14x14 or more: measured faster (CPU)")
    return Choice("conv2d input gradient", "GEMM + col2im", "strided, 1x1 or a small map")


# --------------------------------------------------------------------------- #
# What runs now
# --------------------------------------------------------------------------- #
def implementations(device="cpu", dtype="float32", training=True, file=None):
    """Print and return, for the current settings, which implementation each op runs on
    arrays of ``device`` and ``dtype`` in training (or inference) mode, and why.

    For conv2d the choice depends on the shape: shown for a 3x3 stride-1 convolution of
    64 channels on 56x56, 28x28 and 7x7 maps, and a 1x1 one.
    """
    from .functional.conv import ConvGeometry
    device = backend.normalize_device(device)
    dtype = np.dtype(dtype).name
    rows = []
    for size, (R, pad) in ((56, (3, 1)), (28, (3, 1)), (7, (3, 1)), (14, (1, 0))):
        g = ConvGeometry(8, 64, size, size, 64, R, R, 1, size, size, (1, 1),
                         ((pad, pad), (pad, pad)), (1, 1))
        probe = _Probe(device, dtype, (8, 64, size, size))
        choice = conv_algorithm(probe, g, winograd_mode(training))
        rows.append(choice._replace(op=f"conv2d {R}x{R} on {size}x{size}"))
        if training:
            grad = (Choice("", choice.implementation, "a Winograd forward's backward: the "
                           "transposed convolution, by the same tiles") if choice.tile
                    else conv_input_grad(g))
            rows.append(grad._replace(op="  its input gradient"))
    use, reason = kernel_policy(device, dtype)
    for op, entry in KERNEL_OPS.items():
        not_covered = use and device == "gpu" and _launches(op)
        if use and not not_covered:
            rows.append(Choice(op, "kernel", reason + " (where it covers the call)"))
        else:
            rows.append(Choice(op, "generic", not_covered or reason))
    if device == "gpu":
        tf32 = policy["tf32"] and dtype == "float32"
        rows.append(Choice("GEMMs (2-D)", "TF32" if tf32 else dtype,
                           "set_tf32(True)" if tf32 else "float32 accumulation"
                           if dtype == "float16" else "exact in the data type"))
    width = max(len(r.op) for r in rows)
    lines = [f"{device} {dtype} ({'training' if training else 'inference'}):"]
    lines += [f"  {r.op:<{width}}  {r.implementation:<22}  {r.reason}" for r in rows]
    print("\n".join(lines), file=file)
    return rows


class _Probe:
    """An array's device, dtype and shape, without its data (for :func:`implementations`)."""

    def __init__(self, device, dtype, shape):
        self.dtype, self.shape, self.ndim = np.dtype(dtype), shape, len(shape)
        self.device = device
