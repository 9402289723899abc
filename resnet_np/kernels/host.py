"""The barrier-free kernels compiled for the CPU with g++, for tests without a GPU.

``cuda/host_emulation.h`` turns the CUDA built-ins into globals and a launch
into loops over blocks and threads; a generated driver gives each kernel
instance a C entry point, loaded with ctypes. :class:`HostLauncher` has the
interface of :class:`._launch.CudaLauncher` but takes NumPy arrays, so the
wrappers (shapes, strides, grids, the arithmetic around each launch) run here
exactly as they do on the GPU, only slower. Small grids and blocks make every
grid-stride loop go round more than once.

Needs a C++17 compiler (``g++`` or ``$CXX``); :func:`host_compiler` says if there is one.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ._sources import C_TYPES, CUDA_DIR, INDEX_TYPES, KERNELS, WITH_BARRIERS, c_type


def host_compiler():
    """The C++ compiler to use, or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _symbol(kernel, c_name, index):
    return f"{kernel}_{c_name}_{'i32' if index == 'int' else 'i64'}"


def driver_source():
    """The C++ file that includes every source and exports each barrier-free kernel."""
    lines = ['#include "host_emulation.h"']
    lines += [f'#include "{filename}"' for filename in KERNELS]
    for names in KERNELS.values():
        for kernel in names:
            if kernel in WITH_BARRIERS:
                continue
            for c_name in C_TYPES.values():
                for index in INDEX_TYPES:
                    lines.append(f"HOST_ENTRY({_symbol(kernel, c_name, index)}, "
                                 f"{kernel}<{c_name}, {index}>)")
    return "\n".join(lines) + "\n"


def build(directory=None):
    """Compile the driver into a shared library (cached by the sources' hash) -> its path."""
    compiler = host_compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler: install g++ or set CXX to build the host kernels")
    driver = driver_source()
    digest = hashlib.sha256(driver.encode())
    for path in sorted(CUDA_DIR.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    directory = Path(directory or tempfile.gettempdir()) / "resnet_np_host_kernels"
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / f"kernels_{digest.hexdigest()[:16]}.so"
    if library.exists():
        return library
    with tempfile.TemporaryDirectory(dir=directory) as work:
        source = Path(work) / "driver.cpp"
        source.write_text(driver)
        built = Path(work) / "kernels.so"
        command = [compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-Wall", "-Werror",
                   "-DRESNET_NP_HOST_EMULATION", f"-I{CUDA_DIR}", str(source), "-o", str(built)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"host build of the kernels failed:\n{' '.join(command)}\n"
                               f"{result.stderr}")
        os.replace(built, library)        # atomic: a concurrent build never sees half a file
    return library


class HostLauncher:
    """Runs the barrier-free kernels on NumPy arrays, one emulated thread at a time."""

    block_1d = 8
    block_2d = (4, 2)
    max_blocks = 3
    max_threads = 16
    index = None              # None: as the sizes need; "int" or "long long" forces one

    def __init__(self, library=None):
        self._lib = ctypes.CDLL(str(library or build()))
        self.launches = []          # (kernel, dtype, grid, block) of every launch, for tests

    def launch(self, kernel, dtype, grid, block, args, index):
        if kernel in WITH_BARRIERS:
            raise ValueError(f"{kernel} has barriers: it cannot be emulated one thread at a time")
        function = getattr(self._lib, _symbol(kernel, c_type(dtype), index))
        grid, block = tuple(grid) + (1,) * (2 - len(grid)), tuple(block) + (1,) * (2 - len(block))
        dims = (ctypes.c_uint * 4)(grid[0], grid[1], block[0], block[1])
        values = [_host_argument(a, index) for a in args]
        pointers = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        self.launches.append((kernel, np.dtype(dtype).name, grid, block, index))
        function(dims, pointers)


def _host_argument(value, index):
    if value is None:
        return ctypes.c_void_p(None)
    if isinstance(value, bool):
        raise TypeError("kernel arguments are arrays, ints, floats or None, not bool")
    if isinstance(value, int):
        return ctypes.c_int(value) if index == "int" else ctypes.c_longlong(value)
    if isinstance(value, float):
        return ctypes.c_double(value)
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    raise TypeError(f"the host kernels take NumPy arrays, got {type(value).__name__}")
