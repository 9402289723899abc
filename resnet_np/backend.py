"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every layer takes its array module ``xp`` from its inputs with
:func:`get_array_module`, so the same maths runs on either device. The only
place that imports CuPy is this file; on the GPU the layers run CuPy's own
array operations and cuBLAS (the hand-written kernels of :mod:`resnet_np.kernels`
stand beside them). With ``RESNET_NP_CUPY_STANDIN=1`` the strict stand-in of
:mod:`resnet_np.cupy_standin` takes CuPy's place: the GPU code paths then run on
NumPy, with CuPy's rules enforced, on a machine without a GPU.

Defaults: float32 everywhere; float64 on request (``dtype="float64"``) for
gradient checks. Arrays keep the dtype they are given: no layer upcasts.
"""
import contextlib
import ctypes
import ctypes.util
import os
import sys

import numpy as np

from . import cupy_standin

if cupy_standin.requested():  # RESNET_NP_CUPY_STANDIN=1: the GPU code paths on NumPy
    _cupy = cupy_standin
else:
    try:  # any installed cupy-cuda* wheel provides the module ``cupy``
        import cupy as _cupy
    except Exception:  # ImportError, or a CUDA library that fails to load
        _cupy = None

SUPPORTED_DTYPES = ("float32", "float64")

_rng = np.random.default_rng(0)
_flags = {"check_finite": False, "threads": None}
_pools = {}


# --------------------------------------------------------------------------- #
# Array module and device
# --------------------------------------------------------------------------- #
def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return np


def uses_standin():
    """Whether the CuPy of this process is the stand-in (RESNET_NP_CUPY_STANDIN=1)."""
    return _cupy is cupy_standin


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def require_gpu():
    """Return the ``cupy`` module, or raise a clear error saying what is missing."""
    if _cupy is None:
        raise RuntimeError(
            "device 'gpu' needs CuPy: install the wheel that matches your CUDA "
            "toolkit, e.g. `pip install cupy-cuda12x` (or cupy-cuda13x)")
    if not gpu_available():
        raise RuntimeError("device 'gpu': CuPy is installed but no CUDA device is visible")
    return _cupy


def device_of(array):
    """'gpu' for a CuPy array, 'cpu' for a NumPy array."""
    return "gpu" if get_array_module(array) is not np else "cpu"


def array_module_for(device):
    """The array module of a device name: 'cpu' -> numpy, 'gpu'/'cuda' -> cupy."""
    device = normalize_device(device)
    return np if device == "cpu" else require_gpu()


def normalize_device(device):
    name = str(device).lower()
    if name in ("cpu", "numpy"):
        return "cpu"
    if name in ("gpu", "cuda", "cupy", "cuda:0"):
        return "gpu"
    if name.startswith("cuda:"):
        raise ValueError(f"device {device!r}: only the current GPU is supported; choose the "
                         "card with CUDA_VISIBLE_DEVICES and use 'gpu'")
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'gpu'")


def to_device(array, device):
    """Copy ``array`` to 'cpu' (NumPy) or 'gpu' (CuPy); a no-op if already there."""
    device = normalize_device(device)
    if device == "cpu":
        return to_numpy(array)
    cp = require_gpu()
    return cp.asarray(array)


def to_numpy(array):
    """A NumPy array of ``array`` (CuPy arrays are copied to the host)."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().numpy()
    return np.asarray(array)


TALL_ROWS = 4096       # products with at least this many rows run in blocks of BLOCK_ROWS
BLOCK_ROWS = 2048
BLOCK_MIN_INNER = 64   # ... unless their inner dimension is shorter than this


def matmul(a, b):
    """``a @ b`` for 2-D (m, k) @ (k, n) or batched (G, m, k) @ (G, k, n) operands,
    computed in the faster of two orientations.

    OpenBLAS's float32 kernels slow down by up to 30x on a product whose result
    has fewer rows than columns while the inner dimension is long (a conv
    weight gradient, (K, N*P*Q) @ (N*P*Q, R*S*C)). The same result as
    ``(b.T @ a.T).T`` (each matrix of a batch transposed) runs at full speed,
    and the transposes are free views. A tall product (an im2col convolution on
    a large map, (N*P*Q, R*S*C) @ (R*S*C, K)) ran up to 18% faster here in blocks
    of 2048 rows written into one result, but slower with an inner dimension as short
    as the CIFAR stem's 27 (benchmarks/gemm_blocks.py).
    """
    if get_array_module(a) is not np:       # cuBLAS has neither quirk
        return a @ b
    if a.shape[-2] < b.shape[-1]:
        return (b.swapaxes(-1, -2) @ a.swapaxes(-1, -2)).swapaxes(-1, -2)
    m = a.shape[-2]
    if m < TALL_ROWS or a.shape[-1] < BLOCK_MIN_INNER:
        return a @ b
    out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (m, b.shape[-1]),
                   dtype=np.result_type(a, b))
    for start in range(0, m, BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        np.matmul(a[..., rows, :], b, out=out[..., rows, :])
    return out


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def allocator_left_alone():
    """Whether ``RESNET_NP_MALLOC=default`` asks :func:`retain_freed_memory` to do nothing."""
    return os.environ.get("RESNET_NP_MALLOC", "").lower() == "default"


def retain_freed_memory():
    """Keep freed NumPy buffers in the process instead of returning them to the OS.

    A train step allocates and frees the same large activation buffers every step.
    glibc's malloc serves a block above its mmap threshold (128 KiB, rising to at most
    32 MiB) with a fresh ``mmap`` and unmaps it when freed, so every step page-faults
    (and zeroes) that memory again, ResNet-50's 58 MiB im2col buffers at batch 8
    among them. With mmap off
    (``M_MMAP_MAX`` 0) and the trim threshold at 1 GiB, those blocks stay in the heap
    for the next step. The first step's peak is unchanged; memory freed after the peak
    stays with the process (as PyTorch's CPU allocators keep theirs).

    Process-wide and glibc-only (Linux): returns True when applied, False elsewhere
    or when ``RESNET_NP_MALLOC=default`` asks to leave the allocator alone. The
    ``train`` command and the bench call it; call it in your own training script.
    """
    if allocator_left_alone() or sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):      # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 1 << 30))


# --------------------------------------------------------------------------- #
# Elementwise passes on several cores
# --------------------------------------------------------------------------- #
PARALLEL_MIN_SIZE = 1 << 20     # elements: below this, threads cost more than they save


def elementwise_threads():
    """Threads for large elementwise NumPy passes: :func:`set_elementwise_threads`'s,
    else RESNET_NP_NUM_THREADS, OPENBLAS_NUM_THREADS or OMP_NUM_THREADS, else the
    cores this process may use (as OpenBLAS counts its own threads)."""
    if _flags["threads"] is not None:
        return _flags["threads"]
    for name in ("RESNET_NP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:              # not on Linux
        return os.cpu_count() or 1


def set_elementwise_threads(threads):
    """Use ``threads`` threads for large elementwise passes (1: one, as NumPy alone);
    ``None`` returns to :func:`elementwise_threads`' default."""
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"set_elementwise_threads: expected a positive int or None, "
                         f"got {threads!r}")
    _flags["threads"] = threads


def in_row_blocks(pass_, rows, size, xp=np, align=1):
    """Run ``pass_(rows_slice)`` over consecutive blocks of ``range(rows)``: in one call,
    or, for a NumPy pass over at least PARALLEL_MIN_SIZE elements, one block per thread.

    NumPy runs a ufunc loop on one core but releases the GIL inside it, so a memory-
    bound pass split along its outermost axis runs on every core. Each block must write
    only its own rows, so the result is the same, bit for bit, however it is split.
    Block starts are multiples of ``align``. Returns the calls' results, in row order.
    """
    threads = elementwise_threads() if xp is np and size >= PARALLEL_MIN_SIZE else 1
    threads = min(threads, max(rows // max(align, 1), 1))
    if threads <= 1:
        return [pass_(slice(0, rows))]
    step = -(-rows // threads // align) * align
    blocks = [slice(start, min(start + step, rows)) for start in range(0, rows, step)]
    pool = _pools.get(threads)
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor
        pool = _pools[threads] = ThreadPoolExecutor(threads - 1, thread_name_prefix="resnet-np")
    others = [pool.submit(pass_, block) for block in blocks[1:]]
    first = pass_(blocks[0])            # this thread takes the first block
    return [first] + [other.result() for other in others]


def as_strided(x, shape, strides):
    """A strided view of ``x`` (NumPy or CuPy): the heart of im2col."""
    xp = get_array_module(x)
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


# --------------------------------------------------------------------------- #
# dtypes
# --------------------------------------------------------------------------- #
def resolve_dtype(dtype):
    """``"float32"``, ``np.float64``... -> a NumPy dtype; anything else is an error."""
    dt = np.dtype(dtype)
    if dt.name not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {dt.name!r}: use one of {SUPPORTED_DTYPES}")
    return dt


# --------------------------------------------------------------------------- #
# Random numbers (parameter initialisation draws from one seeded generator)
# --------------------------------------------------------------------------- #
def manual_seed(seed):
    """Reseed the generator used to initialise parameters."""
    global _rng
    _rng = np.random.default_rng(seed)


def rng():
    """The generator used to initialise parameters."""
    return _rng


# --------------------------------------------------------------------------- #
# Opt-in checks
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def check_finite(enabled=True):
    """Within this context every module checks its inputs for NaN and inf.

    Off by default, since it costs one pass over every activation.
    """
    old = _flags["check_finite"]
    _flags["check_finite"] = enabled
    try:
        yield
    finally:
        _flags["check_finite"] = old


def finite_checks_enabled():
    return _flags["check_finite"]
