"""Every kernel compiled for the CPU with g++, for tests without a GPU.

``cuda/host_emulation.h`` turns the CUDA built-ins into C++: a launch of a kernel
with barriers (``WITH_BARRIERS``) runs one ``std::thread`` per CUDA thread of a
block, the blocks one after another; ``threadIdx`` and ``blockIdx`` are
thread-local, ``__syncthreads`` is a ``std::barrier`` and ``__shared__`` memory
belongs to the block in flight. The threads of a kernel without barriers never
wait on each other; a few ``std::thread`` share them out. A generated driver
gives each kernel instance a C entry point, loaded with ctypes. :class:`HostLauncher` has the interface of :class:`._launch.CudaLauncher` but
takes NumPy arrays, so the wrappers (shapes, strides, grids, the arithmetic
around each launch) run here exactly as they do on the GPU, only slower. Small
grids and blocks make every grid-stride loop go round more than once.

``build(sanitize="thread")`` builds the same kernels with ThreadSanitizer, which
reports two threads touching the same memory with no barrier between them;
such a library loads only into a process started with the sanitizer's runtime
(:func:`run_sanitized` starts one).

Needs a C++20 compiler (``g++`` 11 or later, or ``$CXX``); :func:`host_compiler`
says if there is one.
"""
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ._sources import C_TYPES, CUDA_DIR, INDEX_TYPES, KERNELS, WITH_BARRIERS, c_type

MAX_BLOCK_THREADS = 1024        # CUDA's limit on the threads of one block
SANITIZERS = {None: [], "thread": ["-fsanitize=thread", "-g"]}
# halt at the first race, with an exit status of its own
TSAN_OPTIONS = "halt_on_error=1 exitcode=66 report_signal_unsafe=0"
RACE_EXIT_STATUS = 66
_COULD_NOT_START, _BARRIER_IN_A_FREE_LAUNCH = -1, -2      # cuda/host_emulation.h's codes


def host_compiler():
    """The C++ compiler to use, or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _symbol(kernel, c_name, index):
    return f"{kernel}_{c_name}_{'i32' if index == 'int' else 'i64'}"


def driver_source():
    """The C++ file that includes every source and exports every kernel instance."""
    lines = ['#include "host_emulation.h"']
    lines += [f'#include "{filename}"' for filename in KERNELS]
    for names in KERNELS.values():
        for kernel in names:
            entry = "HOST_ENTRY_WITH_BARRIERS" if kernel in WITH_BARRIERS else "HOST_ENTRY"
            for c_name in C_TYPES.values():
                for index in INDEX_TYPES:
                    lines.append(f"{entry}({_symbol(kernel, c_name, index)}, "
                                 f"{kernel}<{c_name}, {index}>)")
    return "\n".join(lines) + "\n"


def _command(compiler, sanitize, source, output):
    return [compiler, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-Wall", "-Werror",
            *SANITIZERS[sanitize], f"-I{CUDA_DIR}",
            str(source), "-o", str(output)]


def build(directory=None, sanitize=None, driver=None, name="kernels"):
    """Compile the driver into a shared library -> its path.

    Cached by the hash of the sources and the compiler's command, so each
    change of a kernel builds once. ``sanitize="thread"``: a ThreadSanitizer build.
    ``driver``: another C++ file to build than :func:`driver_source` (it includes
    host_emulation.h and defines HOST_ENTRY points), into ``<name>_<hash>.so``.
    """
    if sanitize not in SANITIZERS:
        raise ValueError(f"sanitize must be one of {list(SANITIZERS)}, got {sanitize!r}")
    compiler = host_compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler: install g++ or set CXX to build the host kernels")
    driver = driver_source() if driver is None else driver
    digest = hashlib.sha256(driver.encode())
    digest.update(" ".join(_command(compiler, sanitize, "", "")).encode())
    for path in sorted(CUDA_DIR.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    directory = Path(directory or tempfile.gettempdir()) / "resnet_np_host_kernels"
    directory.mkdir(parents=True, exist_ok=True)
    name = name if sanitize is None else f"{name}_{sanitize}"
    library = directory / f"{name}_{digest.hexdigest()[:16]}.so"
    if library.exists():
        return library
    with tempfile.TemporaryDirectory(dir=directory) as work:
        source = Path(work) / "driver.cpp"
        source.write_text(driver)
        built = Path(work) / "kernels.so"
        command = _command(compiler, sanitize, source, built)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"host build of the kernels failed:\n{' '.join(command)}\n"
                               f"{result.stderr}")
        os.replace(built, library)        # atomic: a concurrent build never sees half a file
    return library


class HostLauncher:
    """Runs every kernel on NumPy arrays; ``barriers`` counts the barriers of each launch."""

    block_1d = 8
    block_2d = (4, 2)
    max_blocks = 3
    max_threads = 16
    index = None              # None: as the sizes need; "int" or "long long" forces one

    def __init__(self, library=None):
        self._lib = ctypes.CDLL(str(library or build()))
        self.launches = []          # (kernel, dtype, grid, block, index) of every launch
        self.barriers = []          # the barriers each launch's threads met (0: none)

    def launch(self, kernel, dtype, grid, block, args, index):
        function = getattr(self._lib, _symbol(kernel, c_type(dtype), index))
        function.restype = ctypes.c_longlong
        grid, block = _dims("grid", grid), _dims("block", block)
        if block[0] * block[1] > MAX_BLOCK_THREADS:
            raise ValueError(f"{kernel}: a block has at most {MAX_BLOCK_THREADS} threads, "
                             f"got {block[0]} x {block[1]}")
        dims = (ctypes.c_uint * 4)(grid[0], grid[1], block[0], block[1])
        values = [_host_argument(a, index) for a in args]
        pointers = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        self.launches.append((kernel, np.dtype(dtype).name, grid, block, index))
        met = function(dims, pointers)
        if met == _COULD_NOT_START:
            raise RuntimeError(f"{kernel}: could not start the threads of a block of "
                               f"{block[0] * block[1]}")
        if met == _BARRIER_IN_A_FREE_LAUNCH:
            raise RuntimeError(f"{kernel} waits at a barrier (__syncthreads): list it in "
                               "WITH_BARRIERS of resnet_np/kernels/_sources.py")
        self.barriers.append(met)


def _dims(what, dims):
    """A 1-d or 2-d grid or block -> (x, y), each at least 1; z must be 1 or absent."""
    dims = tuple(int(d) for d in dims)
    if not 1 <= len(dims) <= 3 or dims[2:] not in ((), (1,)) or min(dims) < 1:
        raise ValueError(f"the host emulation takes a {what} of one or two positive sizes, "
                         f"got {dims}")
    return (dims + (1,))[:2]


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


# --------------------------------------------------------------------------- #
# ThreadSanitizer
# --------------------------------------------------------------------------- #
_PROBE = """
#include <barrier>
#include <thread>
int shared_value = 0;
extern "C" int probe() {
    std::barrier<> barrier(2);
    std::thread other([&] { shared_value = 1; barrier.arrive_and_wait(); });
    barrier.arrive_and_wait();
    const int seen = shared_value;
    other.join();
    return seen;
}
"""


def _sanitizer_runtime(compiler):
    """The path of the compiler's ThreadSanitizer runtime, or None."""
    result = subprocess.run([compiler, "-print-file-name=libtsan.so"], capture_output=True,
                            text=True)
    path = Path(result.stdout.strip())
    return str(path) if result.returncode == 0 and path.is_absolute() and path.exists() else None


@functools.lru_cache(maxsize=None)
def thread_sanitizer_problem():
    """None when ThreadSanitizer works here, else the reason it does not.

    Works means: the compiler builds a threaded library with -fsanitize=thread, and
    a Python started with the sanitizer's runtime loads it and runs it without a report.
    """
    compiler = host_compiler()
    if compiler is None:
        return "no C++ compiler (g++ or $CXX)"
    runtime = _sanitizer_runtime(compiler)
    if runtime is None:
        return f"{compiler} has no ThreadSanitizer runtime (libtsan.so)"
    with tempfile.TemporaryDirectory() as work:
        source, library = Path(work) / "probe.cpp", Path(work) / "probe.so"
        source.write_text(_PROBE)
        result = subprocess.run(_command(compiler, "thread", source, library),
                                capture_output=True, text=True)
        if result.returncode:
            return f"{compiler} cannot build with -fsanitize=thread: {result.stderr.strip()}"
        result = run_sanitized(f"import ctypes\nassert ctypes.CDLL({str(library)!r}).probe() == 1",
                               runtime=runtime)
        if result.returncode:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            return f"a ThreadSanitizer build does not run here: {last}"
    return None


def run_sanitized(code, timeout=300, runtime=None):
    """Runs the Python ``code`` in a fresh interpreter with ThreadSanitizer's runtime
    preloaded (as a ``build(sanitize="thread")`` library needs) -> CompletedProcess.

    The first race ends the process with exit status RACE_EXIT_STATUS and the
    report on stderr. BLAS and OpenMP stay single-threaded, so that only the
    kernels' own threads run.
    """
    runtime = runtime or _sanitizer_runtime(host_compiler() or "g++")
    if runtime is None:
        raise RuntimeError("no ThreadSanitizer runtime: " + str(thread_sanitizer_problem()))
    env = dict(os.environ, LD_PRELOAD=runtime, TSAN_OPTIONS=TSAN_OPTIONS,
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=timeout)
