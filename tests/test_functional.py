"""Every functional layer: float64 finite differences over varied shapes, and
the fast convolution against the naive loops."""
import numpy as np
import pytest

from resnet_np import functional as F
from resnet_np.gradcheck import check_layer

TOL = 1e-6  # norm-wise relative error of central differences in float64


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# (N, C, H, W), (K, R, S), stride, padding, dilation, groups, bias
CONV_CASES = [
    ((2, 3, 7, 6), (4, 3, 3), 1, 1, 1, 1, True),
    ((2, 3, 9, 8), (4, 3, 3), 2, 1, 1, 1, False),
    ((1, 2, 11, 9), (3, 7, 7), 2, 3, 1, 1, True),      # the stem: 7x7, stride 2, pad 3, batch 1
    ((2, 4, 5, 5), (6, 1, 1), 1, 0, 1, 1, False),      # 1x1, stride 1: no im2col copy
    ((2, 4, 7, 7), (6, 1, 1), 2, 0, 1, 1, True),       # 1x1, stride 2: the downsample
    ((2, 4, 6, 7), (6, 3, 3), 1, 1, 1, 2, True),       # groups
    ((1, 6, 8, 8), (6, 3, 3), 2, 1, 1, 6, False),      # depthwise
    ((2, 3, 9, 9), (2, 3, 3), 1, 2, 2, 1, True),       # dilation
    ((2, 2, 6, 5), (3, 3, 2), (2, 1), (0, 1), (1, 2), 1, True),  # anisotropic everything
    ((1, 3, 5, 5), (2, 5, 5), 1, 0, 1, 1, False),      # kernel = input: a 1x1 output
    # maps of 14x14 or more: stride-1 input gradients take the transposed-conv path
    ((2, 3, 15, 14), (4, 3, 3), 1, 1, 1, 1, True),
    ((1, 2, 16, 17), (3, 3, 5), 1, (2, 1), (1, 2), 1, False),
    ((1, 2, 14, 14), (3, 3, 3), 1, 0, 1, 1, False),    # pad 0: dout padded by 2
]


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation, groups, bias", CONV_CASES)
def test_conv2d_fast_equals_naive(x_shape, k_shape, stride, padding, dilation, groups, bias):
    K, R, S = k_shape
    x = randn(*x_shape, seed=1)
    w = randn(K, x_shape[1] // groups, R, S, seed=2)
    b = randn(K, seed=3) if bias else None
    out, cache = F.conv2d_forward(x, w, b, stride, padding, dilation, groups)
    ref, ref_cache = F.conv2d_forward_naive(x, w, b, stride, padding, dilation, groups)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    dout = randn(*out.shape, seed=4)
    for fast, slow in zip(F.conv2d_backward(dout, cache), F.conv2d_backward_naive(dout, ref_cache)):
        if slow is None:
            assert fast is None
        else:
            np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape, k_shape, stride, padding, dilation, groups, bias", CONV_CASES)
def test_conv2d_gradients(x_shape, k_shape, stride, padding, dilation, groups, bias):
    K, R, S = k_shape
    x = randn(*x_shape, seed=1)
    w = randn(K, x_shape[1] // groups, R, S, seed=2)
    if bias:
        args, wrt = [x, w, randn(K, seed=3)], (0, 1, 2)
        forward = lambda x, w, b: F.conv2d_forward(x, w, b, stride, padding, dilation, groups)
        backward = F.conv2d_backward
    else:
        args, wrt = [x, w], (0, 1)
        forward = lambda x, w: F.conv2d_forward(x, w, None, stride, padding, dilation, groups)
        backward = lambda d, c: F.conv2d_backward(d, c)[:2]
    for err in check_layer(forward, backward, args, wrt, num_samples=24).values():
        assert err < TOL


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


@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 3, 9, 8), 3, 2, 1),      # the ResNet stem's pool
    ((1, 2, 6, 6), 2, 2, 0),
    ((2, 2, 7, 5), 3, 1, 1),      # overlapping windows
    ((1, 1, 5, 7), (3, 2), (1, 2), (1, 0)),
])
def test_max_pool_gradients(shape, kernel, stride, padding):
    forward = lambda x: F.max_pool2d_forward(x, kernel, stride, padding)
    assert check_layer(forward, F.max_pool2d_backward, [randn(*shape)], (0,))[0] < TOL


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


@pytest.mark.parametrize("shape, size", [((2, 3, 5, 4), 1), ((1, 2, 7, 5), (3, 2)),
                                         ((1, 1, 4, 4), 4)])
def test_adaptive_avg_pool_gradients(shape, size):
    forward = lambda x: F.adaptive_avg_pool2d_forward(x, size)
    assert check_layer(forward, F.adaptive_avg_pool2d_backward, [randn(*shape)], (0,))[0] < TOL


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
