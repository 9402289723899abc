"""Launching a kernel: on the GPU through CuPy, or emulated on the CPU (see :mod:`.host`).

A launcher has one method, ``launch(kernel, dtype, grid, block, args, index)``, and
the sizes the wrappers choose their grids from. ``args`` are the kernel's
arguments in order: arrays (CuPy on the GPU, NumPy on the host; passed as a
pointer to their first element), Python ints (the index type ``index``, int
or long long), Python floats (``double``) and None (a null pointer). The wrappers in this package are
written once against this interface, so the same Python code that launches a
kernel on the GPU is tested on the CPU.
"""
import math

import numpy as np

from .. import backend
from ._sources import (INDEX_TYPES, KERNELS, extent, index_type, name_expression, source_of,
                       source_text)


class CudaLauncher:
    """Compiles each source file once (CuPy's RawModule, NVRTC) and launches on the GPU."""

    block_1d = 256            # threads per block of the one-dimensional kernels
    block_2d = (32, 8)        # channels x rows, for the per-channel sums
    max_blocks = 8192         # a grid-stride loop covers the rest
    max_threads = 1 << 18     # about what an H200 keeps resident (132 SMs x 2048)

    index = None              # None: int or long long as the sizes need (see choose_index)

    def __init__(self):
        self._modules = {}

    def _function(self, kernel, dtype, index):
        cp = backend.require_gpu()
        filename = source_of(kernel)
        if filename not in self._modules:
            names = [name_expression(k, t, i) for k in KERNELS[filename]
                     for t in ("float32", "float64") for i in INDEX_TYPES]
            self._modules[filename] = cp.RawModule(code=source_text(filename),
                                                   name_expressions=names)
        return self._modules[filename].get_function(name_expression(kernel, dtype, index))

    def launch(self, kernel, dtype, grid, block, args, index):
        function = self._function(kernel, dtype, index)
        function(tuple(grid), tuple(block), tuple(_cuda_argument(a, index) for a in args))


def choose_index(launcher, *arrays_or_sizes):
    """The index type of a launch: the launcher's own choice if it has one, else 'int'
    when every array's extent and every size fits below INT_LIMIT."""
    if launcher.index is not None:
        return launcher.index
    return index_type(*(a if isinstance(a, int) else extent(a) for a in arrays_or_sizes))


def _cuda_argument(value, index):
    if value is None:
        return np.uint64(0)             # a null pointer
    if isinstance(value, bool):
        raise TypeError("kernel arguments are arrays, ints, floats or None, not bool")
    if isinstance(value, int):
        return np.int32(value) if index == "int" else np.int64(value)
    if isinstance(value, float):
        return np.float64(value)
    return value                        # a CuPy array


def grid_1d(total, launcher):
    """(grid, block) for a grid-stride kernel over ``total`` elements."""
    block = launcher.block_1d
    blocks = max(1, min(math.ceil(total / block), launcher.max_blocks))
    return (blocks,), (block,)


def grid_channel_sums(channels, rows, launcher):
    """(grid, block) of the per-channel sums: x covers every channel, y splits the rows.

    Enough row blocks to fill about ``max_threads`` threads, but no more rows of
    partial sums than there are rows.
    """
    bx, by = launcher.block_2d
    gx = math.ceil(channels / bx)
    gy = max(1, min(math.ceil(launcher.max_threads / (bx * by * gx)), math.ceil(rows / by)))
    return (gx, gy), (bx, by)


_cuda = None


def cuda_launcher():
    """The one CudaLauncher of the process (its compiled modules are kept)."""
    global _cuda
    if _cuda is None:
        _cuda = CudaLauncher()
    return _cuda
