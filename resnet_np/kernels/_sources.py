"""The CUDA sources of the kernels, and which kernels each one defines.

Every kernel is a template over the element type T (float or double) and the
index type I (int or long long), so a kernel instance is named by a C++
expression such as ``im2col<float, int>``. The sources
are read from the ``cuda/`` folder beside this file, with ``common.cuh``
pasted in place of its #include, so that CuPy's compile cache (keyed by the
source text) sees every change.
"""
from pathlib import Path

import numpy as np

CUDA_DIR = Path(__file__).parent / "cuda"

# source file -> the kernels it defines
KERNELS = {
    "im2col.cu": ("im2col", "col2im"),
    "batchnorm.cu": ("bn_forward_sums", "bn_apply", "bn_backward_sums", "bn_backward_apply"),
    "maxpool.cu": ("maxpool_forward", "maxpool_backward"),
    "softmax_xent.cu": ("softmax_xent_rows", "softmax_xent_backward", "softmax_xent_block"),
}
# kernels whose threads wait on each other (__syncthreads, shared memory); the host
# emulation runs them as a team of threads, and the tests build them with ThreadSanitizer
WITH_BARRIERS = ("softmax_xent_block",)
# NumPy dtype name -> C++ type
C_TYPES = {"float32": "float", "float64": "double"}
INDEX_TYPES = ("int", "long long")
# int indexing while every offset stays below this (with room for a grid-stride step)
INT_LIMIT = 2 ** 31 - 2 ** 25
_INCLUDE = '#include "common.cuh"'


def source_of(kernel):
    """The file that defines ``kernel`` -> its name, e.g. 'im2col.cu'."""
    for filename, names in KERNELS.items():
        if kernel in names:
            return filename
    raise ValueError(f"unknown kernel {kernel!r}; the kernels are "
                     f"{', '.join(k for names in KERNELS.values() for k in names)}")


def source_text(filename):
    """The text of one source file, with common.cuh pasted in."""
    text = (CUDA_DIR / filename).read_text()
    return text.replace(_INCLUDE, (CUDA_DIR / "common.cuh").read_text())


def c_type(dtype):
    """'float32' -> 'float'; an unsupported dtype is a TypeError that says which are."""
    name = np.dtype(dtype).name
    if name not in C_TYPES:
        raise TypeError(f"the CUDA kernels take {' or '.join(C_TYPES)} arrays, got {name}")
    return C_TYPES[name]


def name_expression(kernel, dtype, index):
    """('im2col', 'float32', 'int') -> 'im2col<float, int>'."""
    if index not in INDEX_TYPES:
        raise ValueError(f"index type must be one of {INDEX_TYPES}, got {index!r}")
    return f"{kernel}<{c_type(dtype)}, {index}>"


def instantiations(filename):
    """Every name expression of a file: each kernel for each element and index type."""
    return [f"{k}<{t}, {i}>" for k in KERNELS[filename] for t in C_TYPES.values()
            for i in INDEX_TYPES]


def index_type(*extents):
    """'int' when every extent (element count, or largest offset + 1) is below INT_LIMIT."""
    return "int" if max(extents, default=0) < INT_LIMIT else "long long"


def extent(a):
    """1 + the largest element offset of ``a`` from its first element (0 when empty)."""
    if a is None or a.size == 0:
        return 0
    return 1 + sum((n - 1) * abs(s) // a.itemsize for n, s in zip(a.shape, a.strides))
