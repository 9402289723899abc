"""Every functional layer: float64 finite differences over the shared table of layer
cases, and the fast convolution and max-pool backward against the naive loops, each on
every backend (the ``xp`` fixture: NumPy, and CuPy where a GPU is usable)."""
import numpy as np
import pytest

import resnet_np as rn
from resnet_np import backend
from resnet_np import functional as F
from resnet_np.gradcheck import check_case, check_layer
from resnet_np.layer_cases import CONV_CASES, LAYER_CASES, MAX_POOL_CASES

TOL = 1e-6  # norm-wise relative error of central differences in float64


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def host(a):
    return None if a is None else backend.to_numpy(a)


@pytest.mark.parametrize("case", [c for c in LAYER_CASES if c.differentiable], ids=lambda c: c.name)
def test_layer_gradients_by_finite_differences(xp, case):
    """Every case of the shared table (resnet_np/layer_cases.py), on every backend."""
    errors = check_case(case, xp, num_samples=24)
    assert set(errors) == set(case.wrt)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("name, x_shape, k_shape, stride, padding, dilation, groups, bias, mode",
                         CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv2d_fast_equals_naive(xp, name, x_shape, k_shape, stride, padding, dilation, groups,
                                  bias, mode):
    K, R, S = k_shape
    x = xp.asarray(randn(*x_shape, seed=1))
    w = xp.asarray(randn(K, x_shape[-3] // groups, R, S, seed=2))
    b = xp.asarray(randn(K, seed=3)) if bias else None
    args = (stride, padding, dilation, groups, mode)
    out, cache = F.conv2d_forward(x, w, b, *args)
    unbatched = x.ndim == 3
    ref, ref_cache = F.conv2d_forward_naive(x[None] if unbatched else x, w, b, *args)
    np.testing.assert_allclose(host(out), host(ref[0] if unbatched else ref),
                               rtol=1e-12, atol=1e-12)
    dout = xp.asarray(randn(*out.shape, seed=4))
    fast = F.conv2d_backward(dout, cache)
    slow = F.conv2d_backward_naive(dout[None] if unbatched else dout, ref_cache)
    assert fast[0].shape == x.shape
    for f, s in zip(fast, (slow[0][0] if unbatched else slow[0],) + slow[1:]):
        if s is None:
            assert f is None
        else:
            np.testing.assert_allclose(host(f), host(s), rtol=1e-12, atol=1e-12)


NAN_INF_CASES = [
    ("nan", (2, 3, 7, 6), 3, 2, 1, 1, False),
    ("nan and inf", (1, 2, 8, 8), 2, 1, 0, 1, False),
    ("-inf windows", (1, 2, 5, 5), 3, 2, 1, 1, True),
    ("+inf ties", (1, 1, 6, 6), 3, 1, 1, 2, False),
]


def special_values(name, shape, seed=0):
    """Inputs full of NaN, +inf and -inf, where torch's winner rule matters."""
    gen = np.random.default_rng(seed)
    x = gen.integers(0, 3, size=shape).astype(np.float64)
    pick = gen.random(shape)
    if "nan" in name:
        x[pick < 0.2] = np.nan
    if "inf" in name:
        x[pick > 0.8] = np.inf if "+" in name or "and" in name else -np.inf
    if name == "-inf windows":
        x[:] = -np.inf
        x[0, 0, 4, 4] = 1.0
    return x


# the 4-D table cases (the naive loops take batches) and the special values
POOL_NAIVE_CASES = [case[:7] for case in MAX_POOL_CASES if len(case[1]) == 4] + NAN_INF_CASES


@pytest.mark.parametrize("name, shape, kernel, stride, padding, dilation, ceil_mode",
                         POOL_NAIVE_CASES, ids=[c[0] for c in POOL_NAIVE_CASES])
def test_max_pool_backward_fast_equals_naive(xp, name, shape, kernel, stride, padding, dilation,
                                             ceil_mode):
    """The vectorised winner search and scatter-add against the loops of torch's rule,
    on every table case and on inputs full of ties, NaN and infinities."""
    if name in [n for n, *_ in NAN_INF_CASES]:
        x = special_values(name, shape)
    else:
        x = np.random.default_rng(1).integers(0, 3, size=shape).astype(np.float64)  # ties
    x = xp.asarray(x)
    _, cache = F.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
    dout = xp.asarray(randn(*cache.output_size, seed=2)[None, None]
                      * randn(*shape[:2], 1, 1, seed=3))
    np.testing.assert_array_equal(host(F.max_pool2d_backward(dout, cache)),
                                  host(F.max_pool2d_backward_naive(dout, cache)))


POOL_LAYOUT_CASES = [  # name, shape, kernel, stride, padding, dilation, ceil_mode
    ("stem 3/2/1", (2, 3, 10, 9), 3, 2, 1, 1, False),
    ("stride 1", (1, 2, 6, 7), 3, 1, 1, 1, False),
    ("ceil_mode", (1, 3, 8, 7), 3, 2, 1, 1, True),
    ("dilation", (2, 2, 9, 8), 3, 2, 1, (2, 3), False),
    ("anisotropic", (1, 2, 5, 7), (3, 2), (1, 2), (1, 0), 1, False),
]


@pytest.mark.parametrize("values", ["ties", "nan and inf", "-inf windows", "normal"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, shape, kernel, stride, padding, dilation, ceil_mode",
                         POOL_LAYOUT_CASES, ids=[c[0] for c in POOL_LAYOUT_CASES])
def test_max_pool_fast_equals_naive_on_layouts_and_dtypes(xp, name, shape, kernel, stride,
                                                          padding, dilation, ceil_mode, dtype,
                                                          layout, values):
    """The plane-by-plane forward and backward against the loops of torch's rule, on
    channels-last memory (as the convolutions leave it) and plain NCHW, float32 and float64,
    the output in the input's memory order."""
    if values == "normal":
        x = randn(*shape, seed=5)
    elif values == "ties":
        x = np.random.default_rng(1).integers(0, 3, size=shape).astype(np.float64)
    else:
        x = special_values(values, shape)
    x = x.astype(dtype)
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    x = xp.asarray(x)
    out, cache = F.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
    _, reference = F.max_pool2d_forward(xp.ascontiguousarray(x), kernel, stride, padding,
                                        dilation, ceil_mode)
    assert out.dtype == x.dtype
    assert (out.transpose(0, 2, 3, 1).flags.c_contiguous) == (layout == "channels_last")
    dout = (randn(*cache.output_size, seed=2)[None, None] * randn(*shape[:2], 1, 1, seed=3))
    dout = xp.asarray(dout.astype(dtype))
    dx = F.max_pool2d_backward(dout, cache)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    np.testing.assert_array_equal(host(dx), host(F.max_pool2d_backward_naive(dout, cache)))
    np.testing.assert_array_equal(host(out), host(F.max_pool2d_forward(x, kernel, stride, padding,
                                                                       dilation, ceil_mode)[0]))


@pytest.mark.parametrize("values", ["ties", "nan", "normal"])
@pytest.mark.parametrize("return_indices", [False, True])
def test_max_pool_batch_in_chunks_equals_naive(monkeypatch, values, return_indices):
    """On NumPy the passes go over groups of images (here 2, then the last 1): each group's
    winners and dx, with the buffers reused from group to group, as for the whole batch."""
    from resnet_np.functional import pooling
    shape = (3, 4, 9, 10)
    x = (special_values(values, shape) if values != "normal" else randn(*shape, seed=9))
    x = np.ascontiguousarray(x.astype(np.float32).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    monkeypatch.setattr(pooling, "CHUNK_BYTES", 2 * x[:1].nbytes)
    assert pooling.image_groups(x) == [(0, 2), (2, 3)]
    out, cache = F.max_pool2d_forward(x, 3, 2, 1)
    if return_indices:
        cache = cache._replace(argmax=F.max_pool2d_winners(cache))
    dout = randn(*out.shape, seed=10).astype(np.float32)
    np.testing.assert_array_equal(out, F.max_pool2d_forward(np.ascontiguousarray(x), 3, 2, 1)[0])
    np.testing.assert_array_equal(F.max_pool2d_backward(dout, cache),
                                  F.max_pool2d_backward_naive(dout, cache))


def test_max_pool_backward_ignores_changes_to_the_returned_output(xp):
    """An in-place ReLU after the pool (or any change to its output) leaves the winners
    alone: the backward uses the forward's own copy of the maxima."""
    x = xp.asarray(randn(2, 3, 9, 8, seed=11))
    out, cache = F.max_pool2d_forward(x, 3, 2, 1)
    dout = xp.asarray(randn(*out.shape, seed=12))
    xp.maximum(out, 0, out=out)                 # as ReLU(inplace=True)
    out[0, 0] = 123.0
    np.testing.assert_array_equal(host(F.max_pool2d_backward(dout, cache)),
                                  host(F.max_pool2d_backward_naive(dout, cache)))


def test_max_pool_backward_sends_non_finite_dout_to_the_winner_only(xp):
    """An inf or NaN in dout reaches its window's winner and no other entry (0 * inf is NaN:
    the routing must not multiply it by a zero mask)."""
    x = xp.asarray(randn(1, 2, 7, 6, seed=4))
    _, cache = F.max_pool2d_forward(x, 3, 2, 1)
    dout = randn(1, 2, *cache.output_size, seed=6)
    dout[0, 0, 1, 1], dout[0, 1, 2, 0] = np.inf, np.nan
    dout = xp.asarray(dout)
    np.testing.assert_array_equal(host(F.max_pool2d_backward(dout, cache)),
                                  host(F.max_pool2d_backward_naive(dout, cache)))
    assert int(np.isnan(host(F.max_pool2d_backward(dout, cache))).sum()) == 1


def test_max_pool_backward_float32_adds_shared_entries_as_torch():
    """An entry won by several overlapping windows sums their douts in float32, window by
    window in row-major order, as torch does (bit for bit)."""
    torch = pytest.importorskip("torch")
    x = np.ascontiguousarray(randn(2, 8, 16, 16, seed=7).astype(np.float32).transpose(0, 2, 3, 1))
    x = x.transpose(0, 3, 1, 2)
    out, cache = F.max_pool2d_forward(x, 3, 2, 1)
    dout = randn(*out.shape, seed=8).astype(np.float32)
    t = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.max_pool2d(t, 3, 2, 1).backward(torch.from_numpy(dout))
    np.testing.assert_array_equal(F.max_pool2d_backward(dout, cache), t.grad.numpy())


def test_conv2d_naive_is_the_definition():
    """A hand-computed 1-channel example pins the naive reference itself."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    out, _ = F.conv2d_forward_naive(x, w, np.array([0.5]), stride=2)
    # out[p, q] = x[2p, 2q] - x[2p+1, 2q+1] + 0.5 = -5 + 0.5 everywhere
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), -4.5))


def test_im2col_col2im_are_adjoint():
    """<im2col(x), y> = <x, col2im(y)>: col2im accumulates overlapping windows."""
    x_nhwc = randn(2, 7, 6, 4, seed=5)
    geometry = dict(R=3, S=3, stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2)
    cols = F.im2col(x_nhwc, **geometry)
    y = randn(*cols.shape, seed=6)
    back = F.col2im(y, x_nhwc.shape, **geometry)
    assert np.isclose((cols * y).sum(), (x_nhwc * back).sum(), rtol=1e-12)


def test_im2col_col2im_are_adjoint_with_per_side_padding(xp):
    x_nhwc = xp.asarray(randn(2, 6, 7, 2, seed=5))
    geometry = dict(R=4, S=2, stride=(1, 2), padding=((1, 2), (0, 1)), dilation=(1, 1))
    cols = F.im2col(x_nhwc, **geometry)
    y = xp.asarray(randn(*cols.shape, seed=6))
    back = F.col2im(y, x_nhwc.shape, **geometry)
    assert np.isclose(float((cols * y).sum()), float((x_nhwc * back).sum()), rtol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad2d_backward_is_the_adjoint_of_pad2d(xp, mode):
    """<pad(x), y> = <x, pad_backward(y)>: every border copy is folded back once."""
    x = xp.asarray(randn(2, 3, 4, 5, seed=7))
    out, cache = F.pad2d_forward(x, ((3, 1), (0, 4)), mode)
    assert out.shape == (2, 3, 8, 9)
    y = xp.asarray(randn(*out.shape, seed=8))
    assert np.isclose(float((out * y).sum()), float((x * F.pad2d_backward(y, cache)).sum()),
                      rtol=1e-12)
    expected = np.pad(host(x), ((0, 0), (0, 0), (3, 1), (0, 4)),
                      mode={"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode])
    np.testing.assert_array_equal(host(out), expected)


@pytest.mark.parametrize("m, k, n", [(3, 50, 7), (7, 50, 3),   # both orientations
                                     (backend.TALL_ROWS + 5, backend.BLOCK_MIN_INNER, 4),
                                     (backend.TALL_ROWS + 5, 9, 4)])   # tall: row blocks
def test_batched_matmul_equals_the_product_of_each_matrix(xp, m, k, n):
    a, b = xp.asarray(randn(4, m, k, seed=1)), xp.asarray(randn(4, k, n, seed=2))
    out = backend.matmul(a, b)
    assert out.shape == (4, m, n)
    for g in range(4):
        # atol: BLAS kernels sum in other orders, so an entry near 0 differs in relative terms
        np.testing.assert_allclose(host(out[g]), host(a[g]) @ host(b[g]), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(host(backend.matmul(a[0], b[0])), host(out[0]), rtol=1e-12,
                               atol=1e-13)


def test_tall_products_run_in_row_blocks_unless_their_inner_dimension_is_short(monkeypatch):
    calls = []
    real = np.matmul
    monkeypatch.setattr(np, "matmul", lambda a, b, **kw: calls.append(len(a)) or real(a, b, **kw))
    m = backend.TALL_ROWS + 5
    for k in (backend.BLOCK_MIN_INNER, backend.BLOCK_MIN_INNER - 1):
        a, b = randn(m, k, seed=1), randn(k, 8, seed=2)
        calls.clear()
        np.testing.assert_allclose(backend.matmul(a, b), a @ b, rtol=1e-12)
        blocks = -(-m // backend.BLOCK_ROWS)
        assert calls == ([backend.BLOCK_ROWS] * (blocks - 1) + [m % backend.BLOCK_ROWS]
                         if k >= backend.BLOCK_MIN_INNER else []), k


def test_conv2d_cache_and_geometry_are_named():
    _, cache = F.conv2d_forward(randn(2, 4, 6, 5), randn(6, 2, 4, 3), None, 1, "same", 1, 2)
    g = cache.geometry
    assert isinstance(g, F.ConvGeometry) and isinstance(cache, F.Conv2dCache)
    assert (g.N, g.C, g.K, g.G, g.P, g.Q) == (2, 4, 6, 2, 6, 5)
    assert g.padding == ((1, 2), (1, 1))           # 'same', even kernel: one more at the end
    assert not cache.has_bias
    # a 4x3 kernel's columns would be 12x the input: the input is kept instead
    assert cache.cols is None and cache.x_nhwc.shape == (2, 6, 5, 4)


def test_conv2d_keeps_the_smaller_of_its_columns_and_its_input():
    x = randn(2, 6, 6, 4).transpose(0, 3, 1, 2)    # channels-last memory, as conv outputs
    _, strided_1x1 = F.conv2d_forward(x, randn(3, 4, 1, 1), None, 2)
    assert strided_1x1.cols.shape == (2 * 3 * 3, 1, 4) and strided_1x1.x_nhwc is None
    _, same_1x1 = F.conv2d_forward(x, randn(3, 4, 1, 1))
    assert np.shares_memory(same_1x1.cols, x)      # a 1x1 stride-1 conv's columns are x
    _, k3 = F.conv2d_forward(x, randn(3, 4, 3, 3), None, 1, 1)
    assert k3.cols is None and np.shares_memory(k3.x_nhwc, x)


def test_max_pool_winners_are_each_windows_argmax():
    x = np.random.default_rng(0).permutation(36).astype(np.float64).reshape(1, 1, 6, 6)
    out, cache = F.max_pool2d_forward(x, 2, 2)
    assert isinstance(cache, F.MaxPool2dCache) and cache.argmax is None
    windows = x.reshape(3, 2, 3, 2).transpose(0, 2, 1, 3).reshape(3, 3, 4)
    np.testing.assert_array_equal(F.max_pool2d_winners(cache)[0, :, :, 0], windows.argmax(-1))
    rows, cols = np.divmod(windows.argmax(-1), 2)
    flat = (2 * np.arange(3)[:, None] + rows) * 6 + 2 * np.arange(3)[None, :] + cols
    np.testing.assert_array_equal(F.max_pool2d_indices(cache)[0, 0], flat)


def test_conv2d_output_is_channels_last_in_memory():
    out, _ = F.conv2d_forward(randn(2, 3, 8, 8), randn(5, 3, 3, 3), padding=1)
    assert out.shape == (2, 5, 8, 8)
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 4, 3, 3), (3, 2, 1, 1), (1, 2, 7, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients(shape, training):
    C = shape[1]
    gamma, beta = np.random.default_rng(7).uniform(0.5, 1.5, C), randn(C, seed=8)
    mean, var = randn(C, seed=9), np.random.default_rng(10).uniform(0.5, 2, C)

    def forward(x, g, b):
        return F.batch_norm2d_forward(x, g, b, mean.copy(), var.copy(), training)

    errs = check_layer(forward, F.batch_norm2d_backward, [randn(*shape), gamma, beta], (0, 1, 2))
    assert max(errs.values()) < TOL


def test_batch_norm_running_statistics_follow_torch_rules():
    x = randn(4, 3, 5, 6)
    running_mean, running_var = np.full(3, 0.5), np.full(3, 2.0)
    F.batch_norm2d_forward(x, np.ones(3), np.zeros(3), running_mean, running_var, True,
                           momentum=0.1)
    per_channel = x.transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(running_mean, 0.9 * 0.5 + 0.1 * per_channel.mean(1))
    np.testing.assert_allclose(running_var, 0.9 * 2.0 + 0.1 * per_channel.var(1, ddof=1))


def test_batch_norm_train_needs_two_values_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm2d_forward(randn(1, 3, 1, 1), np.ones(3), np.zeros(3), np.zeros(3),
                               np.ones(3), True)


def test_relu_gradient_and_zero_at_zero():
    x = randn(2, 3, 4, 5)
    assert check_layer(F.relu_forward, F.relu_backward, [x], (0,))[0] < TOL
    _, cache = F.relu_forward(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(F.relu_backward(np.ones(3), cache), [0.0, 0.0, 1.0])


def test_max_pool_ties_route_to_first_maximum_in_row_major_order():
    x = np.array([[[[1.0, 3.0], [3.0, 3.0]]]])
    out, cache = F.max_pool2d_forward(x, 2, 2)
    assert out.item() == 3.0
    dx = F.max_pool2d_backward(np.ones((1, 1, 1, 1)), cache)
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_max_pool_pads_with_minus_infinity():
    x = -np.ones((1, 1, 2, 2))
    out, _ = F.max_pool2d_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(out, -np.ones((1, 1, 1, 1)))


def test_adaptive_avg_pool_cells_overlap_like_torch():
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    out, _ = F.adaptive_avg_pool2d_forward(x, (1, 3))
    # cells [0, 2), [1, 4), [3, 5): means 0.5, 2, 3.5
    np.testing.assert_allclose(out.ravel(), [0.5, 2.0, 3.5])


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(bias):
    args = [randn(3, 5), randn(4, 5, seed=1)] + ([randn(4, seed=2)] if bias else [])
    forward = (lambda x, w, b: F.linear_forward(x, w, b)) if bias else \
        (lambda x, w: F.linear_forward(x, w))
    backward = F.linear_backward if bias else (lambda d, c: F.linear_backward(d, c)[:2])
    errs = check_layer(forward, backward, args, tuple(range(len(args))))
    assert max(errs.values()) < TOL


def test_flatten_round_trip():
    x = randn(2, 3, 4, 5)
    out, cache = F.flatten_forward(x)
    np.testing.assert_array_equal(out, x.reshape(2, 60))
    np.testing.assert_array_equal(F.flatten_backward(out, cache), x)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_gradient(smoothing):
    labels = np.array([0, 3, 1, 3])
    forward = lambda z: F.softmax_cross_entropy_forward(z, labels, smoothing)
    assert check_layer(forward, F.softmax_cross_entropy_backward, [randn(4, 5)], (0,))[0] < TOL


def test_cross_entropy_value():
    logits = np.log(np.array([[0.5, 0.25, 0.25]]))
    loss, _ = F.softmax_cross_entropy_forward(logits, np.array([0]))
    assert np.isclose(loss, np.log(2))
    smoothed, _ = F.softmax_cross_entropy_forward(logits, np.array([0]), label_smoothing=0.3)
    expected = 0.7 * np.log(2) + 0.3 * np.mean(-np.log([0.5, 0.25, 0.25]))
    assert np.isclose(smoothed, expected)


def test_residual_add():
    a, b = randn(2, 3), randn(2, 3, seed=1)
    out, cache = F.add_forward(a, b)
    np.testing.assert_array_equal(out, a + b)
    da, db = F.add_backward(np.ones((2, 3)), cache)
    np.testing.assert_array_equal(da, np.ones((2, 3)))
    np.testing.assert_array_equal(db, np.ones((2, 3)))
    expected = a + b
    out, _ = F.add_forward(a, b, inplace=True)
    assert out is a and np.array_equal(a, expected)
    with pytest.raises(ValueError, match="dtypes differ, float32 vs float64"):
        F.add_forward(a.astype(np.float32), b)


def test_a_block_overwrites_its_residual_only_when_a_batch_norm_made_it():
    """The block's sum goes over the residual in place when BatchNorm2d made it; a
    norm_layer that keeps its output (here: one returning the array it caches) is left
    intact, so its backward still sees what it returned."""
    class KeepsOutput(rn.nn.Module):
        def __init__(self, channels):
            super().__init__()
        def forward(self, x):
            self.kept = x * 1.0
            return self.kept
        def backward(self, dout):
            return dout
    x = randn(2, 8, 6, 6)
    for norm, overwritten in ((None, True), (KeepsOutput, False)):
        block = rn.models.resnet.BasicBlock(8, 8, norm_layer=norm, dtype="float64")
        seen = []
        original = F.add_forward
        def spy(a, b, inplace=False):
            seen.append(inplace)
            return original(a, b, inplace)
        F.add_forward = spy
        try:
            out = block(x)
        finally:
            F.add_forward = original
        assert seen == [overwritten]
        if norm is KeepsOutput:
            assert not np.shares_memory(out, block.bn2.kept)


def test_layers_keep_float32():
    x = randn(2, 3, 8, 8).astype(np.float32)
    w = randn(4, 3, 3, 3).astype(np.float32)
    out, cache = F.conv2d_forward(x, w, padding=1)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in F.conv2d_backward(out, cache)[:2])
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    bn, cache = F.batch_norm2d_forward(out, ones, zeros, zeros.copy(), ones.copy(), True)
    assert bn.dtype == np.float32
    assert all(g.dtype == np.float32 for g in F.batch_norm2d_backward(bn, cache))
    pooled, cache = F.max_pool2d_forward(bn, 3, 2, 1)
    assert pooled.dtype == F.max_pool2d_backward(pooled, cache).dtype == np.float32


def test_large_elementwise_passes_split_over_threads_give_the_same_bits():
    """Batch norm and ReLU split their large passes into row blocks run on several
    threads; the results equal the one-thread results bit for bit."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 20, 20, 700), dtype=np.float32).transpose(0, 3, 1, 2)
    assert x.size >= backend.PARALLEL_MIN_SIZE
    gamma, beta = rng.standard_normal(700, dtype=np.float32), rng.standard_normal(700, dtype=np.float32)
    dout = rng.standard_normal(x.shape, dtype=np.float32)
    results = []
    try:
        for threads in (1, 3):
            backend.set_elementwise_threads(threads)
            out, cache = F.batch_norm2d_forward(x, gamma, beta, None, None, True)
            dx, dgamma, dbeta = F.batch_norm2d_backward(dout, cache)
            r, rcache = F.relu_forward(out)
            results.append((out, dx, dgamma, dbeta, r, F.relu_backward(dout, rcache)))
    finally:
        backend.set_elementwise_threads(None)
    for one, three in zip(*results):
        assert one.strides == three.strides and np.array_equal(one, three)


def test_row_blocks_cover_every_row_once_in_aligned_blocks():
    seen = []
    try:
        backend.set_elementwise_threads(3)
        results = backend.in_row_blocks(lambda r: seen.append(r) or (r.start, r.stop), 100,
                                        backend.PARALLEL_MIN_SIZE, align=16)
    finally:
        backend.set_elementwise_threads(None)
    assert results == [(0, 48), (48, 96), (96, 100)]
    assert backend.in_row_blocks(lambda r: (r.start, r.stop), 100, 10) == [(0, 100)]   # small
    with pytest.raises(ValueError, match="positive int"):
        backend.set_elementwise_threads(0)
    with pytest.raises(ZeroDivisionError):          # a failing block's error reaches the caller
        backend.set_elementwise_threads(2)
        try:
            backend.in_row_blocks(lambda r: 1 / (r.start - 50), 100, backend.PARALLEL_MIN_SIZE)
        finally:
            backend.set_elementwise_threads(None)


def test_batch_norm_over_two_ranks_by_its_reduce_hook_equals_one_process():
    """The reduce hook (what SyncBatchNorm2d gives it: comm.allreduce) adds each sum over
    the ranks: two ranks of 3 images, run in two threads, equal one process of 6."""
    import threading
    from resnet_np.functional.batchnorm import batch_norm2d_backward, batch_norm2d_forward
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal((6, 4, 5, 3)) * 2 + 1, rng.standard_normal((6, 4, 5, 3))
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    stats = np.zeros(4), np.ones(4)
    out, cache = batch_norm2d_forward(x, gamma, beta, *stats, training=True)
    dx, dgamma, dbeta = batch_norm2d_backward(dout, cache)
    barrier, parts, results = threading.Barrier(2), {}, {}

    def allreduce(rank):
        def reduce(a):
            parts[rank] = a.copy()
            barrier.wait()
            a[...] = parts[0] + parts[1]
            barrier.wait()
            return a
        return reduce

    def rank(r):
        rank_stats = np.zeros(4), np.ones(4)
        rows = slice(3 * r, 3 * r + 3)
        o, c = batch_norm2d_forward(x[rows], gamma, beta, *rank_stats, training=True,
                                    reduce=allreduce(r))
        results[r] = (o, rank_stats, batch_norm2d_backward(dout[rows], c))
    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    close = dict(rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([results[r][0] for r in (0, 1)]), out, **close)
    np.testing.assert_allclose(np.concatenate([results[r][2][0] for r in (0, 1)]), dx, **close)
    for r in (0, 1):
        for mine, whole in zip(results[r][1], stats):
            np.testing.assert_allclose(mine, whole, **close)
    # each rank's parameter gradients are its own part; the gradient allreduce adds them
    np.testing.assert_allclose(results[0][2][1] + results[1][2][1], dgamma, **close)
    np.testing.assert_allclose(results[0][2][2] + results[1][2][2], dbeta, **close)
