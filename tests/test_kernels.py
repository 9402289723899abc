"""The CUDA kernels of resnet_np.kernels, checked three ways (and in test_kernel_emulation.py
compiled with nvcc as CuPy compiles them, and run under ThreadSanitizer).

    host       the kernels compiled for the CPU (cuda/host_emulation.h) and run through
               the same Python wrappers, against the NumPy layers of resnet_np.functional
               on varied shapes (skipped without a C++ compiler)
    dispatch   the switch, RESNET_NP_KERNELS, the fallback for NumPy arrays, the
               routing of each cache to its backward, set_tf32
    gpu        each kernel on CuPy arrays against the generic CuPy code (marked gpu)
"""
import numpy as np
import pytest

from resnet_np import backend
from resnet_np import functional as F
from resnet_np import kernels as K
from resnet_np.functional import conv
from resnet_np.kernels import host
from resnet_np.kernels._sources import KERNELS, WITH_BARRIERS

# (N, H, W, C, R, S, stride, padding, dilation, groups): overlaps, gaps (stride > kernel),
# asymmetric geometry, dilation, groups, padding wider than the kernel's reach
CONV_GEOMETRIES = [
    (2, 5, 5, 3, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (2, 7, 6, 4, 3, 3, (2, 1), (1, 1), (1, 2), 2),
    (1, 9, 8, 6, 2, 3, (3, 2), (0, 2), (2, 1), 3),
    (3, 4, 5, 2, 1, 1, (2, 2), (0, 0), (1, 1), 1),
    (1, 6, 7, 4, 7, 5, (2, 3), (3, 2), (1, 1), 1),
    (2, 5, 4, 8, 1, 2, (1, 1), (1, 0), (1, 1), 4),
]


@pytest.fixture(scope="module")
def library():
    if host.host_compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): the host-emulated kernels cannot be built")
    return host.build()


@pytest.fixture(scope="module", params=["int", "long long"])
def launcher(library, request):
    """The host emulation, with 32-bit and with 64-bit index arithmetic."""
    emulation = host.HostLauncher(library)
    emulation.index = request.param
    return emulation


def _rng(seed):
    return np.random.default_rng(seed)


def _nchw(rng, shape, dtype, channels_last):
    """Random (N, C, H, W) in NCHW or channels-last memory."""
    N, C, H, W = shape
    if channels_last:
        return rng.standard_normal((N, H, W, C)).astype(dtype).transpose(0, 3, 1, 2)
    return rng.standard_normal(shape).astype(dtype)


def _close(actual, expected, dtype, what):
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)


# --------------------------------------------------------------------------- #
# im2col and col2im on the host emulation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: "x".join(map(str, g[:6])))
def test_im2col_kernel_equals_numpy(launcher, geometry, dtype):
    N, H, W, C, R, S, stride, padding, dilation, groups = geometry
    rng = _rng(hash(geometry) % 1000)
    for channels_last in (True, False):       # a contiguous NHWC array, and a strided view
        x = _nchw(rng, (N, C, H, W), dtype, channels_last).transpose(0, 2, 3, 1)
        expected = conv.im2col(x, R, S, stride, padding, dilation, groups)
        cols = K.im2col_gpu(x, R, S, stride, padding, dilation, groups, launcher=launcher)
        assert cols.shape == expected.shape and cols.dtype == expected.dtype
        np.testing.assert_array_equal(cols, expected)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: "x".join(map(str, g[:6])))
def test_col2im_kernel_equals_numpy(launcher, geometry, dtype):
    N, H, W, C, R, S, stride, padding, dilation, groups = geometry
    x_shape = (N, H, W, C)
    probe = conv.im2col(np.zeros(x_shape, dtype), R, S, stride, padding, dilation, groups)
    cols = _rng(7).standard_normal(probe.shape).astype(dtype)
    expected = conv.col2im(cols, x_shape, R, S, stride, padding, dilation, groups)
    dx = K.col2im_gpu(cols, x_shape, R, S, stride, padding, dilation, groups, launcher=launcher)
    assert dx.shape == x_shape and dx.dtype == cols.dtype
    _close(dx, expected, dtype, "col2im")


def test_col2im_is_the_adjoint_of_im2col(launcher):
    """<im2col(x), y> = <x, col2im(y)> for the kernel pair itself."""
    rng = _rng(3)
    geometry = (2, 1), (1, 2), (2, 1)
    x = rng.standard_normal((2, 6, 7, 4))
    cols = K.im2col_gpu(x, 3, 2, *geometry, 2, launcher=launcher)
    y = rng.standard_normal(cols.shape)
    dx = K.col2im_gpu(y, x.shape, 3, 2, *geometry, 2, launcher=launcher)
    assert abs(np.vdot(cols, y) - np.vdot(x, dx)) < 1e-10 * abs(np.vdot(cols, y))


def test_kernels_loop_past_their_grid(launcher):
    """The host grids are tiny: every grid-stride loop goes round many times."""
    launcher.launches.clear()
    K.im2col_gpu(np.ones((1, 4, 4, 2)), 3, 3, (1, 1), (1, 1), (1, 1), launcher=launcher)
    (kernel, _, grid, block, index), = launcher.launches
    assert kernel == "im2col" and grid[0] * block[0] < 4 * 4 * 2 * 9
    assert index == launcher.index


def test_index_type_follows_the_largest_offset(library):
    from resnet_np.kernels._launch import choose_index
    from resnet_np.kernels._sources import INT_LIMIT, extent, index_type
    x = np.zeros((2, 3, 4, 5)).transpose(0, 2, 3, 1)
    assert extent(x) == x.size and extent(x[:, ::2]) == 1 + 60 + 10 + 4 + 40
    assert extent(None) == 0 and extent(np.zeros((0, 3))) == 0
    assert index_type(INT_LIMIT - 1, 5) == "int" and index_type(5, INT_LIMIT) == "long long"
    automatic = host.HostLauncher(library)
    assert choose_index(automatic, x, 7) == "int"
    assert choose_index(automatic, x, INT_LIMIT) == "long long"
    automatic.launches.clear()
    K.im2col_gpu(np.ones((1, 4, 4, 2)), 3, 3, (1, 1), (1, 1), (1, 1), launcher=automatic)
    assert automatic.launches[0][-1] == "int"


def test_col2im_rejects_columns_of_the_wrong_shape(launcher):
    with pytest.raises(ValueError, match="col2im: cols has shape"):
        K.col2im_gpu(np.zeros((10, 1, 9)), (1, 4, 4, 1), 3, 3, (1, 1), (1, 1), (1, 1),
                     launcher=launcher)


def test_unsupported_dtype_is_a_clear_error(launcher):
    with pytest.raises(TypeError, match="take float32 or float64 arrays, got float16"):
        K.im2col_gpu(np.ones((1, 3, 3, 1), np.float16), 3, 3, (1, 1), (1, 1), (1, 1),
                     launcher=launcher)


# --------------------------------------------------------------------------- #
# Batch norm on the host emulation
# --------------------------------------------------------------------------- #
BN_SHAPES = [(2, 5, 3, 3), (3, 9, 2, 5), (1, 3, 1, 7)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_kernels_equal_numpy(launcher, shape, training, dtype):
    rng = _rng(11)
    C = shape[1]
    gamma, beta = (rng.standard_normal(C).astype(dtype) for _ in range(2))
    stats = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    for channels_last in (True, False):
        x = _nchw(rng, shape, dtype, channels_last) * 3 + 5     # a mean far from 0
        dout = _nchw(rng, shape, dtype, not channels_last)
        rm, rv = (s.copy() for s in stats)
        km, kv = (s.copy() for s in stats)
        out, cache = F.batch_norm2d_forward(x, gamma, beta, rm, rv, training)
        k_out, k_cache = K.batch_norm2d_forward_gpu(x, gamma, beta, km, kv, training,
                                                    launcher=launcher)
        assert isinstance(k_cache, K.BatchNormKernelCache)
        assert k_out.shape == out.shape and k_out.dtype == out.dtype
        _close(k_out, out, dtype, "output")
        _close(km, rm, dtype, "running_mean")
        _close(kv, rv, dtype, "running_var")
        for name, a, b in zip(("dx", "dgamma", "dbeta"), K.batch_norm2d_backward_gpu(
                dout, k_cache, launcher=launcher), F.batch_norm2d_backward(dout, cache)):
            assert a.dtype == b.dtype, name
            _close(a, b, dtype, name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batch_norm_backward_with_the_relu_mask_fused(launcher, dtype):
    """backward(dout, relu_out) = batch_norm2d_backward(relu_backward(dout, relu_out))."""
    rng = _rng(12)
    shape = (2, 6, 3, 4)
    x = _nchw(rng, shape, dtype, True)
    gamma, beta = rng.standard_normal(6).astype(dtype), rng.standard_normal(6).astype(dtype)
    rm, rv = np.zeros(6, dtype), np.ones(6, dtype)
    out, cache = F.batch_norm2d_forward(x, gamma, beta, rm.copy(), rv.copy(), True)
    relu_out, _ = F.relu_forward(out)
    assert 0 < (relu_out > 0).mean() < 1
    dout = _nchw(rng, shape, dtype, True)
    expected = F.batch_norm2d_backward(F.relu_backward(dout, relu_out), cache)
    k_out, k_cache = K.batch_norm2d_forward_gpu(x, gamma, beta, rm, rv, True, launcher=launcher)
    k_relu, _ = F.relu_forward(k_out)
    for name, a, b in zip(("dx", "dgamma", "dbeta"), K.batch_norm2d_backward_gpu(
            dout, k_cache, relu_out=k_relu, launcher=launcher), expected):
        _close(a, b, dtype, name)


def test_batch_norm_sums_split_rows_over_many_threads(launcher):
    """The partial sums: more than one row block, and channels over several blocks."""
    launcher.launches.clear()
    x = _nchw(_rng(1), (3, 9, 5, 5), "float64", True)
    K.batch_norm2d_forward_gpu(x, np.ones(9), np.zeros(9), np.zeros(9), np.ones(9), True,
                               launcher=launcher)
    kernel, _, grid, block, _ = launcher.launches[0]
    assert kernel == "bn_forward_sums"
    assert grid[0] * block[0] >= 9 and grid[0] > 1 and grid[1] * block[1] > 1


# --------------------------------------------------------------------------- #
# Max pooling and cross-entropy on the host emulation
# --------------------------------------------------------------------------- #
POOL_CASES = [((2, 3, 7, 7), 3, 2, 1), ((1, 2, 6, 5), 2, 2, 0),
              ((2, 4, 5, 6), (3, 2), (1, 2), (1, 1)),
              ((1, 3, 9, 8), 3, 3, 0)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool_kernels_equal_numpy(launcher, case, dtype):
    shape, kernel, stride, padding = case
    rng = _rng(13)
    for channels_last, ties in ((True, False), (False, True)):
        x = _nchw(rng, shape, dtype, channels_last)
        if ties:                                    # few distinct values: many ties
            x = np.round(x).astype(dtype)
        out, cache = F.max_pool2d_forward(x, kernel, stride, padding)
        k_out, k_cache = K.max_pool2d_forward_gpu(x, kernel, stride, padding, launcher=launcher)
        np.testing.assert_array_equal(k_out, out)
        dout = _nchw(rng, out.shape, dtype, not channels_last)
        _close(K.max_pool2d_backward_gpu(dout, k_cache, launcher=launcher),
               F.max_pool2d_backward(dout, cache), dtype, "dx")


def test_max_pool_ties_go_to_the_first_maximum(launcher):
    x = np.array([[[[1.0, 3.0], [3.0, 3.0]]]])
    out, cache = K.max_pool2d_forward_gpu(x, 2, 2, launcher=launcher)
    assert out.ravel()[0] == 3.0 and cache.argmax.ravel()[0] == 1
    dx = K.max_pool2d_backward_gpu(np.ones((1, 1, 1, 1)), cache, launcher=launcher)
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_max_pool_rejects_padding_wider_than_half_the_kernel(launcher):
    with pytest.raises(ValueError, match="padding 2 must be between 0 and half"):
        K.max_pool2d_forward_gpu(np.zeros((1, 1, 5, 5)), 3, 1, 2, launcher=launcher)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("version", ["rows", "block"])
def test_softmax_cross_entropy_kernels_equal_numpy(launcher, version, smoothing, dtype):
    rng = _rng(14)
    logits = (rng.standard_normal((11, 7)) * 4 + 30).astype(dtype)   # exp would overflow unshifted
    labels = rng.integers(0, 7, 11)
    loss, cache = F.softmax_cross_entropy_forward(logits, labels, smoothing)
    k_loss, k_cache = K.softmax_cross_entropy_forward_gpu(logits, labels, smoothing, version,
                                                          launcher=launcher)
    assert k_loss.dtype == loss.dtype and k_loss.shape == ()
    _close(k_loss, loss, dtype, "loss")
    _close(K.softmax_cross_entropy_backward_gpu(0.7, k_cache, launcher=launcher),
           F.softmax_cross_entropy_backward(0.7, cache), dtype, "dlogits")


def test_softmax_cross_entropy_rejects_bad_labels(launcher):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        K.softmax_cross_entropy_forward_gpu(np.zeros((3, 4)), np.array([0, 4, 1]), version="rows",
                                            launcher=launcher)
    with pytest.raises(ValueError, match="version must be 'rows' or 'block'"):
        K.softmax_cross_entropy_forward_gpu(np.zeros((3, 4)), np.array([0, 1, 1]), version="x",
                                            launcher=launcher)


# --------------------------------------------------------------------------- #
# Dispatch, the switch and the environment variable (NumPy only)
# --------------------------------------------------------------------------- #
@pytest.fixture
def clean_switch(monkeypatch):
    monkeypatch.delenv(K.ENV_VAR, raising=False)
    with K.use_kernels(None):
        yield


def test_the_environment_variable_decides_without_a_switch(clean_switch, monkeypatch):
    assert K.kernels_enabled()                       # unset: on
    for value, expected in (("0", False), ("off", False), ("FALSE", False), ("1", True),
                            ("true", True), (" on ", True)):
        monkeypatch.setenv(K.ENV_VAR, value)
        assert K.kernels_enabled() is expected, value
    monkeypatch.setenv(K.ENV_VAR, "maybe")
    with pytest.raises(ValueError, match="RESNET_NP_KERNELS='maybe': expected 1"):
        K.kernels_enabled()


def test_the_switch_overrides_the_environment_and_restores_it(clean_switch, monkeypatch):
    monkeypatch.setenv(K.ENV_VAR, "1")
    with K.use_kernels(False):
        assert not K.kernels_enabled()
        with K.use_kernels(True):
            assert K.kernels_enabled()
        assert not K.kernels_enabled()
    assert K.kernels_enabled()
    K.use_kernels(False)                             # as a plain call: stays set
    assert not K.kernels_enabled()
    K.use_kernels(None)
    assert K.kernels_enabled()
    with pytest.raises(TypeError, match="expected True, False or None"):
        K.use_kernels("no")


def test_numpy_arrays_always_take_the_generic_path(clean_switch):
    rng = _rng(2)
    x = rng.standard_normal((2, 5, 5, 3))
    assert not K.uses_kernel(x)
    cols = K.im2col(x, 3, 3, (1, 1), (1, 1), (1, 1))
    np.testing.assert_array_equal(cols, conv.im2col(x, 3, 3, (1, 1), (1, 1), (1, 1)))
    np.testing.assert_array_equal(K.col2im(cols, x.shape, 3, 3, (1, 1), (1, 1), (1, 1)),
                                  conv.col2im(cols, x.shape, 3, 3, (1, 1), (1, 1), (1, 1)))
    x = x.transpose(0, 3, 1, 2)
    out, cache = K.batch_norm2d_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), True)
    assert not isinstance(cache, K.BatchNormKernelCache)
    relu_out, _ = F.relu_forward(out)
    dout = rng.standard_normal(out.shape)
    fused = K.batch_norm2d_backward(dout, cache, relu_out=relu_out)
    _, cache = F.batch_norm2d_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), True)
    for a, b in zip(fused, F.batch_norm2d_backward(dout * (relu_out > 0), cache)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    out, cache = K.max_pool2d_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(out, F.max_pool2d_forward(x, 3, 2, 1)[0])
    assert K.max_pool2d_backward(out, cache).shape == x.shape
    loss, cache = K.softmax_cross_entropy_forward(rng.standard_normal((4, 3)), np.arange(4) % 3)
    assert K.softmax_cross_entropy_backward(1.0, cache).shape == (4, 3)


@pytest.fixture
def standin(monkeypatch, library):
    """The CuPy stand-in as this process's CuPy (its kernels run on the g++ emulation)."""
    from resnet_np import cupy_standin
    monkeypatch.setattr(backend, "_cupy", cupy_standin)
    cupy_standin.record.clear()
    return cupy_standin


def test_cupy_arrays_go_to_the_kernels_only_while_enabled(clean_switch, standin):
    x = standin.asarray(_rng(4).standard_normal((1, 5, 5, 2)))
    geometry = (3, 3, (1, 1), (1, 1), (1, 1))

    def launched():
        names = [name.split("<")[0] for name, *_ in standin.record.launches]
        standin.record.launches.clear()
        return names

    cols = K.im2col(x, *geometry)
    assert launched() == ["im2col"]
    K.col2im(cols, x.shape, *geometry)
    assert launched() == ["col2im"]
    K.im2col(standin.ascontiguousarray(x), 1, 1, (1, 1), (0, 0), (1, 1))
    assert launched() == []                  # a 1x1 stride-1 conv stays a view: no kernel
    K.im2col(x.astype(np.float16), *geometry)
    assert launched() == []                  # float16: no kernel
    with K.use_kernels(False):
        K.im2col(x, *geometry)
    assert launched() == []
    out, cache = K.max_pool2d_forward(x.transpose(0, 3, 1, 2), 3, 2, 1)
    assert launched() == ["maxpool_forward"] and isinstance(cache, K.MaxPoolKernelCache)
    dx = K.max_pool2d_backward(standin.ones(out.shape), cache)     # routed by the cache's type
    assert launched() == ["maxpool_backward"]
    np.testing.assert_array_equal(dx.get(), F.max_pool2d_backward(
        np.ones(out.shape), F.max_pool2d_forward(x.get().transpose(0, 3, 1, 2), 3, 2, 1)[1]))


def test_the_dispatch_table_says_what_runs_and_why(clean_switch, standin, capsys):
    import resnet_np as rn
    rows = {r.op: r for r in rn.implementations("gpu", "float32")}
    assert rows["batch_norm2d_forward"].implementation == "kernel"
    assert rows["conv2d 3x3 on 28x28"].implementation == "im2col"
    with K.use_kernels(False):
        rows = {r.op: r for r in rn.implementations("gpu", "float32")}
    assert rows["max_pool2d_forward"] == ("max_pool2d_forward", "generic",
                                          "kernels off (use_kernels(False))", None, 0)
    rows = {r.op: r for r in rn.implementations("cpu", "float32", training=False)}
    assert rows["conv2d 3x3 on 56x56"].implementation == "Winograd F(4x4)"
    assert rows["im2col"].reason == "NumPy arrays: the NumPy code"
    from resnet_np.functional.winograd import use_winograd
    with use_winograd(False):
        rows = {r.op: r for r in rn.implementations("cpu", "float32", training=False)}
    assert rows["conv2d 3x3 on 56x56"].implementation == "im2col"
    assert "cpu float32 (inference):" in capsys.readouterr().out


def test_the_table_gives_each_training_convolution_its_input_gradient():
    """In training each conv2d row is followed by how its input gradient is computed: by
    the same Winograd tiles after a Winograd forward, else as conv_input_grad decides."""
    import resnet_np as rn
    rows = rn.implementations("cpu", "float32", training=True)
    pairs = {a.op: b for a, b in zip(rows, rows[1:]) if b.op.strip() == "its input gradient"}
    assert pairs["conv2d 3x3 on 28x28"].implementation == "Winograd F(2x2)"
    assert pairs["conv2d 3x3 on 56x56"].implementation == "transposed convolution"
    assert pairs["conv2d 1x1 on 14x14"].implementation == "GEMM + col2im"


def test_cross_entropy_with_ignored_labels_leaves_the_kernel(clean_switch, library):
    """Labels equal to ignore_index: found by the kernel's one label check, sent to the
    generic code, which gives torch's result; other labels stay on the kernel."""
    logits = _rng(3).standard_normal((4, 5))
    with K.emulated_on_host(host.HostLauncher(library)):
        loss, cache = K.softmax_cross_entropy_forward(logits, np.array([1, 4, 3, 0]))
        assert isinstance(cache, K.SoftmaxXentKernelCache)
        labels = np.array([1, -100, 3, 0])
        loss, cache = K.softmax_cross_entropy_forward(logits, labels)
        assert not isinstance(cache, K.SoftmaxXentKernelCache)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
            K.softmax_cross_entropy_forward(logits, np.array([1, 5, 3, 0]))
    expected, _ = F.softmax_cross_entropy_forward(logits, labels)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)


def test_set_tf32_sets_cupys_float32_compute_type(monkeypatch):
    calls = []
    fake = type("FakeCupy", (), {})()
    fake._core = type("Core", (), {"set_compute_type": staticmethod(
        lambda dtype, kind: calls.append((np.dtype(dtype).name, kind)))})()
    monkeypatch.setattr(backend, "_cupy", fake)
    try:
        assert not K.tf32_enabled()
        K.set_tf32(True)
        assert K.tf32_enabled() and calls == [("float32", 7)]
        K.set_tf32(False)
        assert not K.tf32_enabled() and calls[-1] == ("float32", 1)
    finally:
        K.set_tf32(False)
    monkeypatch.setattr(backend, "_cupy", None)
    with pytest.raises(RuntimeError, match="set_tf32\\(True\\) needs CuPy"):
        K.set_tf32(True)
    K.set_tf32(False)                        # off without CuPy: nothing to do


# --------------------------------------------------------------------------- #
# On the GPU: each kernel against the generic CuPy code (run with -m gpu)
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def cp(cp):
    """conftest.py's ``cp``; on the CuPy stand-in the kernels need the g++ emulation."""
    if backend.uses_standin() and host.host_compiler() is None:
        pytest.skip("no C++ compiler: the CuPy stand-in runs the kernels on the g++ emulation")
    return cp


def _gpu_close(actual, expected, dtype, what):
    _close(backend.to_numpy(actual), backend.to_numpy(expected), dtype, what)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: "x".join(map(str, g[:6])))
def test_im2col_and_col2im_kernels_on_gpu(cp, geometry, dtype):
    N, H, W, C, R, S, stride, padding, dilation, groups = geometry
    args = (R, S, stride, padding, dilation, groups)
    x = cp.asarray(_nchw(_rng(5), (N, C, H, W), dtype, True).transpose(0, 2, 3, 1))
    cols = K.im2col_gpu(x, *args)
    assert isinstance(cols, cp.ndarray)
    np.testing.assert_array_equal(backend.to_numpy(cols), backend.to_numpy(conv.im2col(x, *args)))
    y = cp.asarray(_rng(6).standard_normal(cols.shape).astype(dtype))
    _gpu_close(K.col2im_gpu(y, x.shape, *args), conv.col2im(y, x.shape, *args), dtype, "col2im")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_kernels_on_gpu(cp, training, dtype):
    rng = _rng(7)
    shape = (4, 64, 14, 14)
    x = cp.asarray(_nchw(rng, shape, dtype, True) * 2 + 3)
    dout = cp.asarray(_nchw(rng, shape, dtype, True))
    gamma, beta = (cp.asarray(rng.standard_normal(64).astype(dtype)) for _ in range(2))
    rm, rv = cp.zeros(64, dtype), cp.ones(64, dtype)
    km, kv = rm.copy(), rv.copy()
    out, cache = F.batch_norm2d_forward(x, gamma, beta, rm, rv, training)
    k_out, k_cache = K.batch_norm2d_forward_gpu(x, gamma, beta, km, kv, training)
    _gpu_close(k_out, out, dtype, "output")
    _gpu_close(km, rm, dtype, "running_mean")
    _gpu_close(kv, rv, dtype, "running_var")
    relu_out, _ = F.relu_forward(out)
    expected = F.batch_norm2d_backward(F.relu_backward(dout, relu_out), cache)
    got = K.batch_norm2d_backward_gpu(dout, k_cache, relu_out=F.relu_forward(k_out)[0])
    for name, a, b in zip(("dx", "dgamma", "dbeta"), got, expected):
        _gpu_close(a, b, dtype, name)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_max_pool_kernels_on_gpu(cp, dtype):
    x = cp.asarray(np.round(_nchw(_rng(8), (4, 16, 17, 17), dtype, True) * 2))   # with ties
    out, cache = F.max_pool2d_forward(x, 3, 2, 1)
    k_out, k_cache = K.max_pool2d_forward_gpu(x, 3, 2, 1)
    np.testing.assert_array_equal(backend.to_numpy(k_out), backend.to_numpy(out))
    dout = cp.asarray(_rng(9).standard_normal(out.shape).astype(dtype))
    _gpu_close(K.max_pool2d_backward_gpu(dout, k_cache), F.max_pool2d_backward(dout, cache),
               dtype, "dx")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("version", ["block", "rows"])
def test_softmax_cross_entropy_kernels_on_gpu(cp, version, dtype):
    if backend.uses_standin() and not cp.emulates(f"softmax_xent_{version}"):
        pytest.skip(f"softmax_xent_{version} has barriers, which the host emulation lacks")
    rng = _rng(10)
    logits = cp.asarray((rng.standard_normal((37, 1000)) * 5).astype(dtype))
    labels = cp.asarray(rng.integers(0, 1000, 37))
    for smoothing in (0.0, 0.1):
        loss, cache = F.softmax_cross_entropy_forward(logits, labels, smoothing)
        k_loss, k_cache = K.softmax_cross_entropy_forward_gpu(logits, labels, smoothing, version)
        _gpu_close(k_loss, loss, dtype, "loss")
        _gpu_close(K.softmax_cross_entropy_backward_gpu(1.0, k_cache),
                   F.softmax_cross_entropy_backward(1.0, cache), dtype, "dlogits")


@pytest.mark.gpu
def test_dispatch_sends_cupy_arrays_to_the_kernels(cp, clean_switch):
    x = cp.asarray(_rng(11).standard_normal((2, 8, 9, 9)).astype("float32"))
    _, cache = K.max_pool2d_forward(x, 3, 2, 1)
    assert isinstance(cache, K.MaxPoolKernelCache)
    with K.use_kernels(False):
        _, cache = K.max_pool2d_forward(x, 3, 2, 1)
    assert not isinstance(cache, K.MaxPoolKernelCache)


@pytest.mark.gpu
def test_tf32_switch_changes_cupy_matmul(cp):
    from conftest import needs_real_cuda
    needs_real_cuda("cuBLAS's TF32 numerics")
    a = cp.asarray(_rng(12).standard_normal((512, 512)).astype("float32"))
    exact = a.astype("float64") @ a.astype("float64")
    try:
        K.set_tf32(False)
        err_fp32 = float(cp.abs(a @ a - exact).max())
        K.set_tf32(True)
        err_tf32 = float(cp.abs(a @ a - exact).max())
    finally:
        K.set_tf32(False)
    assert err_fp32 < 1e-3 < err_tf32, (err_fp32, err_tf32)


@pytest.mark.gpu
def test_resnet_with_kernels_equals_generic_on_gpu(cp, clean_switch):
    import resnet_np as rn
    rn.manual_seed(0)
    model = rn.build_model("resnet18", num_classes=10, cifar_stem=True, dtype="float64").to("gpu")
    x = cp.asarray(_rng(13).standard_normal((4, 3, 16, 16)))
    labels = cp.asarray(np.arange(4) % 10)
    criterion = rn.nn.CrossEntropyLoss()
    results = {}
    for enabled in (False, True):
        with K.use_kernels(enabled):
            model.zero_grad()
            loss = criterion(model(x), labels)
            model.backward(criterion.backward())
            results[enabled] = [float(loss)] + [backend.to_numpy(p.grad) for p in
                                                model.parameters()]
    assert abs(results[True][0] - results[False][0]) < 1e-12
    for a, b in zip(results[True][1:], results[False][1:]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_a_resnet_through_every_emulated_kernel_equals_generic(library, clean_switch):
    """The whole dispatch on the CPU: a ResNet-18 train step (float64) with NumPy arrays sent
    to the kernels (host emulation) against the same step on the generic code.

    (In float32 this tiny network, whose last batch norms see 2 values per channel, is too
    ill-conditioned for a tight comparison: both paths are ~1e-4 from the float64 loss.)
    """
    import resnet_np as rn
    rn.manual_seed(0)
    model = rn.build_model("resnet18", num_classes=7, dtype="float64")     # with the max-pool
    x = _rng(21).standard_normal((2, 3, 32, 32))
    labels = np.array([3, 5])
    criterion = rn.nn.CrossEntropyLoss(label_smoothing=0.1)
    start = {k: v.copy() for k, v in model.state_dict().items()}

    def step():
        model.load_state_dict(start)              # the same running statistics before each
        model.zero_grad()
        loss = criterion(model(x), labels)
        model.backward(criterion.backward())
        return [float(loss)] + [p.grad.copy() for p in model.parameters()] + [
            b.copy() for b in model.buffers()]

    generic = step()
    emulation = host.HostLauncher(library)
    with K.emulated_on_host(emulation):
        emulated = step()
    launched = {name for name, *_ in emulation.launches}
    assert launched == {k for names in KERNELS.values() for k in names} - set(WITH_BARRIERS)
    assert abs(emulated[0] - generic[0]) <= 1e-10 * abs(generic[0])
    for a, b in zip(emulated[1:], generic[1:]):
        assert float(np.abs(a - b).max()) <= 1e-9 * max(float(np.abs(b).max()), 1e-30)
    assert not K.uses_kernel(x)                # the emulation ends with its context
