"""Every CUDA kernel run on the CPU, checked for races, and compiled as CuPy compiles it.

    emulation  cuda/host_emulation.h runs a launch as one std::thread per CUDA thread
               of a block (__syncthreads a std::barrier, __shared__ memory per block):
               the kernels with barriers against their NumPy twins, at grids and blocks
               that make every loop go round more than once (skipped without g++)
    races      the kernels built with ThreadSanitizer run without a report, and a
               kernel with one of its barriers taken out is reported (skipped where
               the compiler cannot build or run a ThreadSanitizer program)
    nvcc       every source compiled with CuPy's options for sm_90: each name
               expression resolves to one kernel, and ptxas reports no register
               spill and no stack frame (skipped without nvcc)

The kernels without barriers are checked against NumPy in test_kernels.py.
"""
import inspect
import math
import re
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from resnet_np import functional as F
from resnet_np import kernels as K
from resnet_np.kernels import host
from resnet_np.kernels._sources import (C_TYPES, INDEX_TYPES, KERNELS, WITH_BARRIERS,
                                        instantiations, source_text)
from resnet_np.kernels.loss import SOFTMAX_BLOCK


@pytest.fixture(scope="module")
def library():
    if host.host_compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): the host-emulated kernels cannot be built")
    return host.build()


@pytest.fixture(scope="module", params=INDEX_TYPES)
def launcher(library, request):
    """The host emulation, with 32-bit and with 64-bit index arithmetic."""
    emulation = host.HostLauncher(library)
    emulation.index = request.param
    return emulation


@pytest.fixture(scope="module")
def sanitized_library():
    problem = host.thread_sanitizer_problem()
    if problem is not None:
        pytest.skip(f"no ThreadSanitizer here: {problem}")
    return host.build(sanitize="thread")


def _close(actual, expected, dtype, what):
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)


def _logits(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * 4 + 30).astype(dtype)    # exp would overflow unshifted
    return logits, rng.integers(0, shape[1], shape[0])


def _rows_twin(logits, labels):
    """The per-row results of the softmax kernels, from NumPy in float64 -> p, nll, mean_logp."""
    x = logits.astype("float64")
    lse = np.log(np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1)) + x.max(axis=1)
    p = np.exp(x - lse[:, None])
    return p, lse - x[np.arange(len(x)), labels], x.mean(axis=1) - lse


def _launch_block(launcher, logits, labels, grid, block):
    """softmax_xent_block launched directly -> p, nll, mean_logp."""
    N, M = logits.shape
    p = np.empty_like(logits)
    nll, mean_logp = np.empty(N), np.empty(N)
    launcher.launch("softmax_xent_block", logits.dtype, (grid,), (block,),
                    [logits, labels.astype("int64"), p, nll, mean_logp, N, M],
                    launcher.index or "int")
    return p, nll, mean_logp


def _barriers_per_row(block):
    """Three block reductions a row, each a barrier after the store, one per halving
    step and one after reading the result."""
    return 3 * (2 + math.ceil(math.log2(block)))


# --------------------------------------------------------------------------- #
# The emulation
# --------------------------------------------------------------------------- #
def test_every_kernel_instance_is_in_the_host_build():
    driver = host.driver_source()
    for names in KERNELS.values():
        for kernel in names:
            for c_name in C_TYPES.values():
                for index in INDEX_TYPES:
                    assert f", {kernel}<{c_name}, {index}>)" in driver, (kernel, c_name, index)


# (N, M): one row; rows fewer than the blocks; more rows than the host's 3 blocks (the
# row loop goes round 3 times) and more classes than the 256 threads (the class loops
# go round twice)
BLOCK_SHAPES = [(1, 1), (2, 5), (7, 300)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", BLOCK_SHAPES, ids=str)
def test_block_softmax_cross_entropy_equals_numpy(launcher, shape, dtype):
    logits, labels = _logits(shape, dtype, sum(shape))
    for smoothing in (0.0, 0.1):
        loss, cache = F.softmax_cross_entropy_forward(logits, labels, smoothing)
        launcher.launches.clear()
        k_loss, k_cache = K.softmax_cross_entropy_forward_gpu(logits, labels, smoothing,
                                                              version="block", launcher=launcher)
        (kernel, _, grid, block, _), = launcher.launches
        assert kernel == "softmax_xent_block" and block == (SOFTMAX_BLOCK, 1)
        assert grid == (min(shape[0], launcher.max_blocks), 1)
        assert k_loss.dtype == loss.dtype and k_loss.shape == ()
        _close(k_loss, loss, dtype, "loss")
        _close(k_cache.p, cache.p, dtype, "p")
        _close(K.softmax_cross_entropy_backward_gpu(0.7, k_cache, launcher=launcher),
               F.softmax_cross_entropy_backward(0.7, cache), dtype, "dlogits")


def test_block_softmax_meets_every_barrier_of_its_reductions(launcher):
    """Each thread waits 30 times a row at 256 threads (3 reductions of 8 halvings)."""
    logits, labels = _logits((7, 300), "float64", 1)
    K.softmax_cross_entropy_forward_gpu(logits, labels, version="block", launcher=launcher)
    assert launcher.barriers[-1] == 7 * _barriers_per_row(SOFTMAX_BLOCK) == 7 * 30


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("block", [1, 2, 6, 32, 100])
def test_block_softmax_at_any_block_size(launcher, block, dtype):
    """Up to SOFTMAX_BLOCK threads, a power of two or not, over 1, 2 or 5 blocks."""
    logits, labels = _logits((5, 37), dtype, block)
    expected = _rows_twin(logits, labels)
    for grid in (1, 2, 5):
        got = _launch_block(launcher, logits, labels, grid, block)
        assert launcher.barriers[-1] == 5 * _barriers_per_row(block)
        for name, a, b in zip(("p", "nll", "mean_logp"), got, expected):
            _close(a, b, dtype, f"{name}, grid {grid}, block {block}")


def test_only_the_kernels_listed_with_barriers_meet_barriers(library):
    """Every kernel runs in the emulation; those in WITH_BARRIERS, and only those, wait."""
    emulation = host.HostLauncher(library)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 5))
    cols = K.im2col_gpu(x.transpose(0, 2, 3, 1), 3, 3, (1, 1), (1, 1), (1, 1), launcher=emulation)
    K.col2im_gpu(cols, (2, 5, 5, 3), 3, 3, (1, 1), (1, 1), (1, 1), launcher=emulation)
    out, cache = K.batch_norm2d_forward_gpu(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3),
                                            True, launcher=emulation)
    K.batch_norm2d_backward_gpu(out, cache, relu_out=out, launcher=emulation)
    out, cache = K.max_pool2d_forward_gpu(x, 3, 2, 1, launcher=emulation)
    K.max_pool2d_backward_gpu(out, cache, launcher=emulation)
    logits, labels = _logits((4, 6), "float64", 3)
    for version in ("rows", "block"):
        _, cache = K.softmax_cross_entropy_forward_gpu(logits, labels, version=version,
                                                       launcher=emulation)
    K.softmax_cross_entropy_backward_gpu(1.0, cache, launcher=emulation)
    met = {}
    for (kernel, *_), barriers in zip(emulation.launches, emulation.barriers):
        met[kernel] = met.get(kernel, 0) + barriers
    assert set(met) == {k for names in KERNELS.values() for k in names}
    assert {k for k, n in met.items() if n} == set(WITH_BARRIERS)


@pytest.mark.parametrize("grid, block", [((1,), (0,)), ((0,), (8,)), ((1,), (1025,)),
                                         ((1,), (64, 32)), ((2, 2, 2), (8,)), ((), (8,))])
def test_a_launch_configuration_cuda_refuses_is_a_clear_error(launcher, grid, block):
    logits, labels = _logits((2, 3), "float64", 4)
    with pytest.raises(ValueError, match="positive sizes|at most 1024 threads"):
        launcher.launch("softmax_xent_block", "float64", grid, block,
                        [logits, labels, np.empty_like(logits), np.empty(2), np.empty(2), 2, 3],
                        "int")


def test_unknown_sanitizer_and_missing_compiler_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"sanitize must be one of \[None, 'thread'\]"):
        host.build(sanitize="address")
    monkeypatch.setattr(host, "host_compiler", lambda: None)
    with pytest.raises(RuntimeError, match="no C.. compiler: install g.. or set CXX"):
        host.build()
    assert host.thread_sanitizer_problem.__wrapped__() == "no C++ compiler (g++ or $CXX)"


# --------------------------------------------------------------------------- #
# Races: ThreadSanitizer
# --------------------------------------------------------------------------- #
# Run in a fresh interpreter with the sanitizer's runtime: the block kernel as the
# wrapper launches it and at blocks of other sizes, then every other kernel once,
# each against NumPy. The threads of the kernels without barriers run side by side
# too, so a place two of them write is reported.
_SANITIZED_RUN = """
import numpy as np
from resnet_np import functional as F, kernels as K
from resnet_np.kernels import host
{helpers}
emulation = host.HostLauncher({library!r})
for dtype, shape in (("float64", (4, 300)), ("float32", (3, 5))):
    logits, labels = _logits(shape, dtype, 5)
    loss, cache = K.softmax_cross_entropy_forward_gpu(logits, labels, 0.1, version="block",
                                                      launcher=emulation)
    expected = F.softmax_cross_entropy_forward(logits, labels, 0.1)[0]
    assert abs(loss - expected) <= 1e-5 * abs(expected), (dtype, shape, loss, expected)
logits, labels = _logits((5, 37), "float64", 6)
for grid, block in ((2, 6), (3, 32)):
    for a, b in zip(_launch_block(emulation, logits, labels, grid, block),
                    _rows_twin(logits, labels)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
rng = np.random.default_rng(7)
x = rng.standard_normal((2, 3, 6, 5))
x_nhwc = x.transpose(0, 2, 3, 1)
geometry = (3, 3, (2, 1), (1, 1), (1, 1))
cols = K.im2col_gpu(x_nhwc, *geometry, launcher=emulation)
np.testing.assert_array_equal(cols, F.conv.im2col(x_nhwc, *geometry))
np.testing.assert_allclose(K.col2im_gpu(cols, x_nhwc.shape, *geometry, launcher=emulation),
                           F.conv.col2im(cols, x_nhwc.shape, *geometry), rtol=1e-12)
params = np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)
out, cache = K.batch_norm2d_forward_gpu(x, *params, True, launcher=emulation)
np.testing.assert_allclose(out, F.batch_norm2d_forward(x, *params, True)[0], atol=1e-12)
K.batch_norm2d_backward_gpu(x, cache, relu_out=out, launcher=emulation)
out, cache = K.max_pool2d_forward_gpu(x, 3, 2, 1, launcher=emulation)
np.testing.assert_array_equal(out, F.max_pool2d_forward(x, 3, 2, 1)[0])
K.max_pool2d_backward_gpu(out, cache, launcher=emulation)
_, cache = K.softmax_cross_entropy_forward_gpu(logits, labels, version="rows", launcher=emulation)
K.softmax_cross_entropy_backward_gpu(1.0, cache, launcher=emulation)
assert {{k for k, *_ in emulation.launches}} == {{k for n in host.KERNELS.values() for k in n}}
print("ran", len(emulation.launches), "launches")
"""


def _helpers():
    """The source of this file's helpers, for a script run in another interpreter."""
    return "\n".join(inspect.getsource(f) for f in (_logits, _rows_twin, _launch_block,
                                                      _barriers_per_row))


def _sanitizer_report(result):
    return f"exit status {result.returncode}\n{result.stdout}\n{result.stderr[-6000:]}"


def test_every_kernel_runs_without_a_race_under_thread_sanitizer(sanitized_library):
    result = host.run_sanitized(_SANITIZED_RUN.format(library=str(sanitized_library),
                                                      helpers=_helpers()))
    assert result.returncode == 0 and "ran " in result.stdout, _sanitizer_report(result)
    assert "ThreadSanitizer" not in result.stderr, _sanitizer_report(result)


def _without_barrier(text, which):
    """``text`` with its ``which``-th ``__syncthreads();`` (from 0) taken out."""
    spots = [m.start() for m in re.finditer(r"__syncthreads\(\);", text)]
    start = spots[which]
    return text[:start] + ";" + text[start + len("__syncthreads();"):]


# A kernel of the tests' own: each thread writes its block's number to its slot of
# shared memory and, after a barrier, reads its neighbour's slot, with no barrier after
# the read. Right only when no thread starts the next block (and writes its slot again)
# while a neighbour still reads the slot: the emulation's barrier at a block's end.
_NEIGHBOUR = """
template <typename T>
__global__ void neighbour(T* out) {
    __shared__ double slot[64];
    slot[threadIdx.x] = blockIdx.x;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}
HOST_ENTRY_WITH_BARRIERS(neighbour_double_i32, neighbour<double>)
HOST_ENTRY(neighbour_unlisted_double_i32, neighbour<double>)
"""


@pytest.fixture(scope="module")
def variants_library(sanitized_library):
    """A ThreadSanitizer build of the block kernel with each of its barriers taken out in
    turn (each variant in a namespace of its own, 'block_without_<i>'), and of _NEIGHBOUR
    (as 'neighbour', and as 'neighbour_unlisted', built as a kernel without barriers)."""
    text = source_text("softmax_xent.cu")
    lines = ['#include "host_emulation.h"']
    for which in range(text.count("__syncthreads();")):
        lines += [f"namespace without_{which} {{", _without_barrier(text, which), "}",
                  f"HOST_ENTRY_WITH_BARRIERS(block_without_{which}_double_i32, "
                  f"without_{which}::softmax_xent_block<double, int>)"]
    lines.append(_NEIGHBOUR)
    return host.build(sanitize="thread", driver="\n".join(lines) + "\n", name="variants")


def test_thread_sanitizer_reports_each_barrier_taken_out(variants_library):
    """The block kernel with one of its barriers missing, for each barrier in turn: a race."""
    count = source_text("softmax_xent.cu").count("__syncthreads();")
    assert count >= 1
    for which in range(count):
        code = textwrap.dedent(f"""
            import numpy as np
            from resnet_np.kernels import host
            {{helpers}}
            emulation = host.HostLauncher({str(variants_library)!r})
            logits, labels = _logits((3, 40), "float64", 8)
            emulation.launch("block_without_{which}", "float64", (2,), (32,),
                             [logits, labels, np.empty_like(logits), np.empty(3),
                              np.empty(3), 3, 40], "int")
            """).replace("{helpers}", _helpers())
        result = host.run_sanitized(code)
        assert result.returncode == host.RACE_EXIT_STATUS, _sanitizer_report(result)
        assert "WARNING: ThreadSanitizer: data race" in result.stderr, _sanitizer_report(result)


def test_each_block_has_the_shared_memory_to_itself(variants_library):
    """threadIdx and blockIdx are each thread's own, and a block's shared memory is not
    overwritten by the next block while it is still read (no race, every value right).
    A kernel that waits at a barrier but is not listed as one is a clear error."""
    code = textwrap.dedent(f"""
        import numpy as np
        from resnet_np.kernels import host
        emulation = host.HostLauncher({str(variants_library)!r})
        for grid, block in ((6, 64), (9, 7)):
            out = np.full(grid * block, -1.0)
            emulation.launch("neighbour", "float64", (grid,), (block,), [out], "int")
            np.testing.assert_array_equal(out, np.repeat(np.arange(grid), block))
            assert emulation.barriers[-1] == grid
        try:
            emulation.launch("neighbour_unlisted", "float64", (2,), (4,), [out], "int")
        except RuntimeError as error:
            assert "waits at a barrier (__syncthreads): list it in WITH_BARRIERS" in str(error)
            print("ok")
        """)
    result = host.run_sanitized(code)
    assert result.returncode == 0 and "ok" in result.stdout, _sanitizer_report(result)


# --------------------------------------------------------------------------- #
# Compiled as CuPy compiles them
# --------------------------------------------------------------------------- #
# CuPy's RawModule (cupy/_core/core.pyx, cupy/cuda/compiler.py) compiles with NVRTC,
# adding --std=c++17 (when no standard is given), -ftz=true, -arch=sm_90 (a cubin for
# an sm_90 GPU) and --device-as-default-execution-space. nvcc has no option for the
# last one (it makes unannotated functions device functions); every function the
# kernels call is marked __device__, so nvcc compiling them proves NVRTC would.
CUPY_NVCC_OPTIONS = ["--std=c++17", "-ftz=true", "-arch=sm_90", "--cubin"]
_PROPERTIES = re.compile(r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, "
                         r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_ENTRY = re.compile(r"Compiling entry function '(\S+)' for 'sm_90'")


def _demangle(names):
    result = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                            check=True)
    return dict(zip(names, result.stdout.splitlines()))


@pytest.mark.parametrize("filename", list(KERNELS))
def test_source_compiles_as_cupy_compiles_it_without_spills(filename, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no CUDA compiler: nvcc is not on PATH (and NVRTC comes only with CuPy)")
    if shutil.which("c++filt") is None:
        pytest.skip("c++filt (binutils) is not on PATH: the kernel names cannot be read back")
    names = instantiations(filename)
    # Taking each instance's address makes nvcc emit it, as NVRTC's name expressions do.
    text = source_text(filename) + "\nvoid* resnet_np_instances[] = {" + ", ".join(
        f"(void*)&{name}" for name in names) + "};\n"
    source = tmp_path / filename
    source.write_text(text)
    command = [nvcc, *CUPY_NVCC_OPTIONS, "-Werror", "all-warnings", "-Xptxas", "-v",
               "-o", str(tmp_path / "kernels.cubin"), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)}\n{log}"
    entries = _ENTRY.findall(log)
    demangled = _demangle(entries)
    for name in names:                          # each name expression resolves to one kernel
        found = [e for e in entries if demangled[e].startswith(f"void {name}(")]
        assert len(found) == 1, f"{name}: {found or 'no kernel'} in {sorted(demangled.values())}"
    assert len(entries) == len(names), sorted(demangled.values())
    properties = {m[0]: tuple(map(int, m[1:])) for m in _PROPERTIES.findall(log)}
    assert set(entries) <= set(properties), log
    for function, (stack, spill_stores, spill_loads) in properties.items():
        assert (stack, spill_stores, spill_loads) == (0, 0, 0), (
            f"{_demangle([function])[function]}: {stack} bytes stack frame, "
            f"{spill_stores} bytes spill stores, {spill_loads} bytes spill loads")
