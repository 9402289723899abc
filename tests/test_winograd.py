"""Winograd F(2x2, 3x3) and F(4x4, 3x3) against the im2col convolution and the textbook matrices."""
import numpy as np
import pytest

from resnet_np.functional import conv2d_backward, conv2d_forward
from resnet_np.functional.winograd import (use_winograd, winograd_conv3x3_backward,
                                           winograd_conv3x3_forward, winograd_matrices)

# Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural Networks".
LAVIN = {
    2: ([[1, 1, 1, 0], [0, 1, -1, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
    4: ([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
}


@pytest.mark.parametrize("m", [2, 4])
def test_derived_matrices_are_the_textbook_ones_up_to_row_signs(m):
    AT, G, BT = (np.array(a, dtype=np.float64) for a in winograd_matrices(m))
    AT_ref, G_ref, BT_ref = (np.array(a, dtype=np.float64) for a in LAVIN[m])
    np.testing.assert_array_equal(np.abs(BT), np.abs(BT_ref))
    np.testing.assert_allclose(np.abs(G), np.abs(G_ref), rtol=1e-15)
    np.testing.assert_array_equal(np.abs(AT), np.abs(AT_ref))
    # What matters: y = A^T [(G g) * (B^T d)] is the 3-tap correlation, exactly.
    rng = np.random.default_rng(m)
    g, d = rng.standard_normal(3), rng.standard_normal(m + 2)
    np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), np.correlate(d, g, "valid"), rtol=1e-13)


def test_other_points_give_a_correct_algorithm_too():
    AT, G, BT = (np.array(a, dtype=np.float64) for a in winograd_matrices(3, points=(0, 1, -1, 2)))
    rng = np.random.default_rng(1)
    g, d = rng.standard_normal(3), rng.standard_normal(5)
    np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), np.correlate(d, g, "valid"), rtol=1e-13)
    with pytest.raises(ValueError, match="needs 3 distinct finite points"):
        winograd_matrices(2, points=(0, 1, 1))


CASES = [  # N, C, H, W, K, ((top, bottom), (left, right))
    (2, 3, 7, 9, 4, ((1, 1), (1, 1))),       # tiles that overhang the output
    (1, 5, 8, 8, 6, ((0, 0), (2, 1))),       # uneven padding, 'same'-like and 'valid'
    (3, 4, 5, 6, 2, ((2, 2), (0, 1))),
    (2, 8, 12, 12, 8, ((1, 1), (1, 1))),     # whole tiles
    (1, 2, 3, 3, 3, ((0, 0), (0, 0))),       # a single output
]


def reference(x, w, dout, padding):
    """conv2d by im2col on the explicitly padded input: out, dx, dw."""
    (top, bottom), (left, right) = padding
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    with use_winograd(False):
        out, cache = conv2d_forward(padded, w)
        dx, dw, _ = conv2d_backward(dout, cache)
    H, W = x.shape[2:]
    return out, dx[:, :, top:top + H, left:left + W], dw


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])))
def test_winograd_equals_im2col_in_float64(m, case):
    N, C, H, W, K, padding = case
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((N, C, H, W)), rng.standard_normal((K, C, 3, 3))
    out, cache = winograd_conv3x3_forward(x, w, padding, m)
    dout = rng.standard_normal(out.shape)
    out_ref, dx_ref, dw_ref = reference(x, w, dout, padding)
    dx, dw = winograd_conv3x3_backward(dout, cache)
    for name, a, b in (("out", out, out_ref), ("dx", dx, dx_ref), ("dw", dw, dw_ref)):
        assert a.shape == b.shape, name
        assert np.abs(a - b).max() <= 1e-10 * max(1.0, np.abs(b).max()), name
    assert winograd_conv3x3_backward(dout, cache, input_grad=False)[0] is None


@pytest.mark.parametrize("m, bound", [(2, 2e-6), (4, 1e-5)])
def test_float32_error_against_the_float64_truth(m, bound):
    """F(4, 3) rounds more than im2col (entries up to 8 and 1/24), F(2, 3) about as much."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 64, 14, 14)), rng.standard_normal((64, 64, 3, 3)) / 24
    with use_winograd(False):
        truth, _ = conv2d_forward(x, w, padding=1)
        direct, _ = conv2d_forward(x.astype(np.float32), w.astype(np.float32), padding=1)
    ours, _ = winograd_conv3x3_forward(x.astype(np.float32), w.astype(np.float32), m=m)
    error = np.linalg.norm(ours - truth) / np.linalg.norm(truth)
    assert ours.dtype == np.float32 and error < bound
    assert error >= 0.5 * np.linalg.norm(direct - truth) / np.linalg.norm(truth)


def test_conv2d_uses_winograd_where_it_is_picked_and_im2col_elsewhere():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 4, 28, 28)), rng.standard_normal((5, 4, 3, 3)), \
        rng.standard_normal(5)
    out, cache = conv2d_forward(x, w, b, padding=1, winograd="fast")
    assert cache.winograd.m == 4 and cache.cols is None               # 28x28 output: F(4x4)
    assert conv2d_forward(x, w, b, padding=1, winograd="accurate")[1].winograd.m == 2
    assert conv2d_forward(x, w, b, padding=1)[1].winograd is None      # not asked for
    with use_winograd(False):
        ref, ref_cache = conv2d_forward(x, w, b, padding=1, winograd="fast")
    assert ref_cache.winograd is None                                 # switched off
    dout = rng.standard_normal(out.shape)
    for a, b_ in zip((out,) + conv2d_backward(dout, cache), (ref,) + conv2d_backward(dout, ref_cache)):
        assert np.abs(a - b_).max() < 1e-10
    for kwargs in (dict(stride=2, padding=1), dict(padding=2, dilation=2), dict(padding=3)):
        assert conv2d_forward(x, w, winograd="fast", **kwargs)[1].winograd is None, kwargs
    picks = {side: (conv2d_forward(x[:, :, :side, :side], w, padding=1, winograd=mode)[1].winograd
                    or type("", (), {"m": 0})).m
             for mode in ("fast",) for side in (56, 28, 14, 7, 6)}
    assert picks == {56: 4, 28: 4, 14: 2, 7: 2, 6: 0}
    accurate = {side: (conv2d_forward(x[:, :, :side, :side], w, padding=1,
                                      winograd="accurate")[1].winograd
                       or type("", (), {"m": 0})).m for side in (28, 14, 13)}
    assert accurate == {28: 2, 14: 2, 13: 0}
    with pytest.raises(ValueError, match="winograd mode must be 'fast' or 'accurate'"):
        conv2d_forward(x, w, padding=1, winograd="quick")


def test_conv2d_module_uses_f2_in_training_and_f4_in_inference(monkeypatch):
    import resnet_np as rn
    from resnet_np.functional import conv as conv_module
    calls = []
    real = conv_module.winograd_conv3x3_forward
    monkeypatch.setattr(conv_module, "winograd_conv3x3_forward",
                        lambda x, w, padding, m: calls.append(m) or real(x, w, padding, m))
    conv = rn.nn.Conv2d(4, 5, 3, padding=1, dtype="float64")
    x = np.random.default_rng(5).standard_normal((2, 4, 28, 28))
    train_out = conv(x)
    assert conv._pop_cache().winograd.m == 2                 # training: F(2x2) at 28x28
    conv(np.zeros((1, 4, 56, 56)))
    assert conv._pop_cache().winograd is None                # and im2col at 56x56
    with use_winograd("fast"):                               # the inference mode, forced
        conv(x)
        assert conv._pop_cache().winograd.m == 4
    calls.clear()
    with rn.no_grad():
        with use_winograd(False):
            exact = conv(x)
        assert not calls
        fast = conv(x)
    assert len(calls) == 1 and calls[0] == 4 and conv._caches == []
    assert np.abs(fast - exact).max() < 1e-12 and np.abs(train_out - exact).max() < 1e-12
    with pytest.raises(ValueError, match="use_winograd: enabled must be True, False"):
        with use_winograd("quick"):
            pass


def test_the_cache_keeps_the_input_not_its_transformed_tiles():
    """F(2x2)'s tiles are 4x its input (F(4x4)'s 2.25x): the backward transforms them again."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 8, 28, 28)), rng.standard_normal((4, 8, 3, 3))
    for m in (2, 4):
        _, cache = winograd_conv3x3_forward(x, w, ((1, 1), (1, 1)), m)
        kept = [v for v in cache if isinstance(v, np.ndarray)]
        assert cache.x is x and sum(a.nbytes for a in kept) == x.nbytes + w.nbytes
