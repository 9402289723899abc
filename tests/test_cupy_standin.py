"""The CuPy stand-in (resnet_np.cupy_standin) enforces CuPy's rules and records what a GPU
would be asked to do; these tests run with or without RESNET_NP_CUPY_STANDIN."""
import numpy as np
import pytest

from resnet_np import cupy_standin as cs
from resnet_np.kernels import host
from resnet_np.kernels._sources import name_expression, source_text


@pytest.fixture(autouse=True)
def clean_record():
    cs.record.clear()
    yield
    cs.record.clear()


def test_an_array_is_not_a_numpy_array_and_never_converts_implicitly():
    a = cs.asarray(np.arange(6.0).reshape(2, 3))
    assert not isinstance(a, np.ndarray) and isinstance(a, cs.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        np.ones(3) * a                       # NumPy's operator hands over to the stand-in
    with pytest.raises(TypeError, match="Unsupported type"):
        cs.maximum(a, np.zeros(3))
    with pytest.raises(TypeError, match="no implementation found for 'numpy.apply_along_axis'"):
        np.apply_along_axis(lambda row: row, 0, a)
    b = np.sum(a * np.float32(2) + 1, axis=0)  # CuPy implements np.sum: it stays on the device
    assert isinstance(b, cs.ndarray)
    np.testing.assert_array_equal(b.get(), [8.0, 12.0, 16.0])
    assert isinstance(a.sum(), cs.ndarray) and a.sum().shape == ()     # 0-d, not a float
    assert isinstance(a[0, 1], cs.ndarray)


def test_every_host_sync_is_counted_with_its_line():
    a = cs.asarray(np.array([1.0, -2.0, 3.0]))
    assert cs.host_syncs() == 0
    float(a.sum())
    bool((a > 0).any())
    int(a.argmax())
    a[0].item()
    a.get()
    cs.asnumpy(a)
    a[a > 0]                                 # a boolean mask: its size is read back
    cs.cuda.Device().synchronize()
    kinds = [sync.kind for sync in cs.record.syncs]
    assert kinds == ["float", "bool", "int", "item", "get", "asnumpy", "boolean index",
                     "device synchronize"], kinds
    assert all(sync.where.endswith(".py:" + sync.where.split(":")[-1]) and
               "test_cupy_standin.py" in sync.where for sync in cs.record.syncs)
    a * 2, a.sum(), cs.where(a > 0, a, 0), a.astype("float32")   # none of these syncs
    assert cs.host_syncs() == 8
    cs.record.clear()
    assert cs.host_syncs() == 0


def test_products_record_their_route_and_tf32_reaches_only_2d_products():
    rng = np.random.default_rng(0)
    a = cs.asarray(rng.standard_normal((64, 64)).astype(np.float32))
    exact = a.get().astype(np.float64) @ a.get().astype(np.float64)
    plain = (a @ a).get()
    batched = cs.matmul(a[None], a[None])
    try:
        cs._core.set_compute_type(np.float32, cs._core._routines_linalg.COMPUTE_TYPE_TF32)
        tf32 = (a @ a).get()
        tf32_batched = cs.matmul(a[None], a[None]).get()[0]
    finally:
        cs._core.set_compute_type(np.float32, 1)
    routes = [(p.route, p.compute, p.shapes[0]) for p in cs.record.products]
    assert routes == [("gemm", "float32", (64, 64)), ("batched", "float32", (1, 64, 64)),
                      ("gemm", "tf32", (64, 64)), ("batched", "float32", (1, 64, 64))]
    assert np.abs(plain - exact).max() < 1e-4 < np.abs(tf32 - exact).max()
    np.testing.assert_array_equal(tf32_batched, plain)       # batched ignores TF32
    assert cs.record.compute_types == [("float32", "tf32"), ("float32", "float32")]
    half = cs.asarray(rng.standard_normal((8, 8)).astype(np.float16))
    assert (half @ half).dtype == np.float16
    assert cs.record.products[-1].compute == "float16 (float32 accumulation)"
    cs.matmul(half[None], half[None])
    assert cs.record.products[-1].compute == "float32 (float16 widened by a copy)"
    assert isinstance(batched, cs.ndarray)


@pytest.fixture(scope="module")
def module():
    if host.host_compiler() is None:
        pytest.skip("no C++ compiler: the stand-in's kernels run on the g++ emulation")
    names = [name_expression("im2col", "float64", "int")]
    return cs.RawModule(code=source_text("im2col.cu"), name_expressions=names)


def test_raw_kernels_run_on_the_emulation_and_check_each_argument_width(module):
    from resnet_np.functional.conv import im2col
    x = np.random.default_rng(1).standard_normal((1, 4, 4, 2))
    cols = cs.zeros((16, 1, 18))
    kernel = module.get_function("im2col<double, int>")
    sizes = [1, 4, 4, 2, 32, 8, 2, 1, 4, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1]
    args = [cs.asarray(x), cols] + [np.int32(v) for v in sizes]
    kernel((2,), (8,), args)
    np.testing.assert_array_equal(cols.get(), im2col(x, 3, 3, (1, 1), (1, 1), (1, 1)))
    assert cs.record.launches[-1][:3] == ("im2col<double, int>", (2,), (8,))
    wide = list(args)
    wide[3] = np.int64(4)                    # an 8-byte value for an int parameter
    with pytest.raises(TypeError, match=r"argument 3 \(int\): passed int64, the kernel reads "
                                        r"int32"):
        kernel((2,), (8,), wide)
    with pytest.raises(TypeError, match="the array is float32, the kernel reads float64"):
        kernel((2,), (8,), [cs.asarray(x.astype(np.float32))] + args[1:])
    with pytest.raises(TypeError, match="expected a device array, got ndarray"):
        kernel((2,), (8,), [x] + args[1:])
    with pytest.raises(KeyError, match="not among the module's name_expressions"):
        module.get_function("im2col<float, int>")
    with pytest.raises(ValueError, match="runs only resnet_np's own kernels"):
        cs.RawModule(code="__global__ void f() {}", name_expressions=["f"])


def test_streams_events_and_the_memory_pool():
    pool = cs.get_default_memory_pool()
    before = pool.used_bytes()
    a = cs.zeros((1000,), dtype=np.float64)
    assert pool.used_bytes() == before + 8000
    del a
    assert pool.used_bytes() == before
    start, end = cs.cuda.Event(), cs.cuda.Event()
    with cs.cuda.Stream() as stream:
        assert cs.cuda.get_current_stream() is stream
        start.record()
        end.record()
    assert cs.cuda.get_elapsed_time(start, end) >= 0
    end.synchronize()
    assert [s.kind for s in cs.record.syncs] == ["event synchronize"]
    assert cs.cuda.runtime.getDeviceCount() == 1


def test_the_environment_variable(monkeypatch):
    for value, expected in (("1", True), ("on", True), ("0", False), ("", False)):
        monkeypatch.setenv(cs.ENV_VAR, value)
        assert cs.requested() is expected
    monkeypatch.setenv(cs.ENV_VAR, "perhaps")
    with pytest.raises(ValueError, match="RESNET_NP_CUPY_STANDIN='perhaps'"):
        cs.requested()
