"""Conv2d, MaxPool2d, AdaptiveAvgPool2d and Flatten against torch.nn, option by option.

Each module is built with torch's own arguments (positional where torch takes them so),
run forward and backward on the same float64 input and output gradient as its torch
twin, and every result (output, max-pool indices, input gradient, weight and bias
gradients) must agree within 1e-10 (norm-wise relative error); the shapes must be equal,
also for unbatched (C, H, W) inputs and empty batches. What torch refuses, we refuse with
one clear error naming the option.
"""
import numpy as np
import pytest

from reference import torch
from resnet_np import functional as F
from resnet_np import nn
from resnet_np.gradcheck import relative_error

TOL = 1e-10
# torch warns that it copies the input for an even kernel with padding="same"
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def assert_close(ours, theirs, what):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert tuple(ours.shape) == tuple(theirs.shape), f"{what}: {ours.shape} vs {theirs.shape}"
    nan = np.isnan(theirs)
    np.testing.assert_array_equal(np.isnan(ours), nan, err_msg=f"{what}: NaN positions")
    if ours.size:
        assert relative_error(np.where(nan, 0, ours), np.where(nan, 0, theirs)) < TOL, what


def run_both(ours, theirs, x, outputs=1):
    """Forward and backward of our module and torch's on x -> (ours, theirs) as lists of
    [out, (indices), dx, parameter grads...]."""
    xt = torch.tensor(x, requires_grad=True)
    out_t = theirs(xt)
    out = ours(x)
    if outputs == 2:
        (out, indices), (out_t, indices_t) = out, out_t
    dout = randn(*out.shape, seed=7)
    out_t.backward(torch.tensor(dout))
    dx = ours.backward(dout)
    mine = [out] + ([indices] if outputs == 2 else []) + [dx]
    ref = [out_t] + ([indices_t] if outputs == 2 else []) + [xt.grad]
    for p, pt in zip(ours.parameters(), theirs.parameters()):
        mine.append(p.grad)
        ref.append(pt.grad)
    return mine, ref


def copy_parameters(ours, theirs):
    for p, pt in zip(ours.parameters(), theirs.parameters()):
        p.data = pt.detach().numpy().copy()


# --------------------------------------------------------------------------- #
# Conv2d
# --------------------------------------------------------------------------- #
# torch's positional arguments (in, out, kernel_size, stride, padding, dilation, groups,
# bias, padding_mode), and the input shape
CONV_OPTIONS = [
    ((3, 4, 3), (2, 3, 7, 6)),
    ((3, 4, 3, 1, "same"), (2, 3, 7, 6)),
    ((3, 4, 4, 1, "same"), (2, 3, 7, 6)),                       # even: the extra pad at the end
    ((3, 4, (2, 4), 1, "same", (3, 1)), (1, 3, 9, 8)),          # even, dilated
    ((2, 4, (4, 3), 1, "same", 2, 2, False), (2, 2, 9, 7)),
    ((3, 2, 3, 2, "valid"), (2, 3, 8, 7)),
    ((3, 4, 3, 2, 1, 1, 1, True, "reflect"), (2, 3, 7, 6)),     # the positional 'reflect'
    ((3, 4, 3, 1, (2, 1), 1, 1, True, "reflect"), (1, 3, 5, 4)),
    ((3, 4, 4, 1, "same", 1, 1, True, "reflect"), (2, 3, 6, 7)),
    ((3, 2, 3, 1, 2, 2, 1, True, "replicate"), (2, 3, 6, 6)),
    ((4, 4, 3, (2, 1), (3, 1), 1, 2, True, "replicate"), (1, 4, 5, 6)),
    ((3, 4, 3, 1, 1, 1, 1, True, "circular"), (2, 3, 6, 5)),
    ((2, 2, 3, 1, (3, 2), 1, 1, False, "circular"), (1, 2, 3, 4)),   # pad = size: once round
    ((3, 4, 5, 1, "same", 1, 1, True, "circular"), (1, 3, 16, 15)),  # transposed-conv dx
    ((3, 4, 3, 1, 1), (3, 7, 6)),                               # unbatched (C, H, W)
    ((3, 4, 3, 1, 1, 1, 1, True, "reflect"), (3, 5, 5)),        # unbatched, reflect
    ((3, 4, 3, 1, 1), (0, 3, 7, 6)),                            # empty batch
    ((3, 4, 4, 1, "same", 1, 1, True, "circular"), (0, 3, 5, 5)),
]


@pytest.mark.parametrize("args, shape", CONV_OPTIONS, ids=lambda v: str(v))
def test_conv2d_options_match_torch(args, shape):
    theirs = torch.nn.Conv2d(*args, dtype=torch.float64)
    ours = nn.Conv2d(*args, dtype="float64")
    copy_parameters(ours, theirs)
    assert [p.shape for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    mine, ref = run_both(ours, theirs, randn(*shape, seed=1))
    for what, a, b in zip(["out", "dx", "weight grad", "bias grad"], mine, ref):
        assert_close(a, b, what)


def test_conv2d_dtype_is_keyword_only_as_in_torch():
    with pytest.raises(TypeError):
        nn.Conv2d(2, 3, 3, 1, 0, 1, 1, True, "zeros", "float64")
    assert nn.Conv2d(2, 3, 3, dtype="float64").weight.dtype == np.float64


@pytest.mark.parametrize("kwargs, match", [
    (dict(stride=2, padding="same"), "padding='same' is not supported for strided convolutions"),
    (dict(padding="full"), "invalid padding string 'full'"),
    (dict(padding_mode="mirror"), "padding_mode must be one of"),
    (dict(groups=0), "groups must be a positive integer"),
    (dict(groups=2), "groups=2 must divide in_channels=3"),
    (dict(padding=-1), "padding must be >= 0"),
])
def test_conv2d_refuses_what_torch_refuses(kwargs, match):
    with pytest.raises(ValueError) as ours:
        nn.Conv2d(3, 4, 3, **kwargs)
    assert match in str(ours.value)
    if kwargs != dict(padding=-1):     # torch accepts -1 here and fails at the forward
        with pytest.raises(ValueError):
            torch.nn.Conv2d(3, 4, 3, **kwargs)


@pytest.mark.parametrize("mode, padding, shape, match", [
    ("reflect", 3, (1, 2, 3, 5), r"padding_mode='reflect' needs padding smaller than the input "
                                 r"height 3, got padding \(3, 3\)"),
    ("reflect", (0, 2), (1, 2, 5, 2), "smaller than the input width 2"),
    ("circular", 4, (1, 2, 3, 6), "padding_mode='circular' needs padding at most the input "
                                  "height 3"),
])
def test_padding_modes_refuse_what_torch_refuses(mode, padding, shape, match):
    x = randn(*shape)
    with pytest.raises(RuntimeError):
        torch.nn.Conv2d(2, 2, 3, padding=padding, padding_mode=mode, dtype=torch.float64)(
            torch.tensor(x))
    with pytest.raises(ValueError, match=match):
        nn.Conv2d(2, 2, 3, padding=padding, padding_mode=mode, dtype="float64")(x)


def test_conv2d_wrong_rank_names_both_layouts():
    with pytest.raises(ValueError, match=r"expected a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) "
                                         r"input, got shape \(3, 8\)"):
        nn.Conv2d(3, 4, 3)(np.zeros((3, 8), np.float32))


def test_repr_names_padding_mode_and_same():
    assert "padding=same" in repr(nn.Conv2d(2, 3, 3, padding="same"))
    assert "padding_mode=reflect" in repr(nn.Conv2d(2, 3, 3, 1, 1, padding_mode="reflect"))


# --------------------------------------------------------------------------- #
# MaxPool2d
# --------------------------------------------------------------------------- #
# torch's (kernel_size, stride, padding, dilation, return_indices, ceil_mode), input shape
MAX_POOL_OPTIONS = [
    ((3, 2, 1), (2, 3, 9, 8)),
    ((3, 2, 1, 1, True), (2, 3, 9, 8)),
    ((2,), (1, 2, 7, 7)),
    ((3, 2, 1, 2), (2, 2, 9, 8)),                               # dilation
    (((2, 3), (1, 2), (1, 1), (3, 2), True), (1, 2, 9, 10)),    # anisotropic everything
    ((3, 2, 1, 1, True, True), (1, 3, 8, 7)),                   # ceil_mode
    ((2, 2, 0, 1, True, True), (2, 2, 5, 5)),
    ((3, 3, 1, 1, True, True), (1, 2, 7, 7)),
    ((2, 2, 1, 1, True, True), (1, 2, 5, 5)),                   # ceil's last window dropped
    ((2, 3, 1, 2, True, True), (1, 2, 10, 9)),
    ((3, 2, 1, 1, True), (3, 7, 6)),                            # unbatched
    ((3, 2, 1, 1, True, True), (2, 6, 5)),
    ((2, 2, 0, 1, True), (0, 2, 6, 6)),                         # empty batch
]


@pytest.mark.parametrize("args, shape", MAX_POOL_OPTIONS, ids=lambda v: str(v))
def test_max_pool_options_match_torch(args, shape):
    outputs = 2 if len(args) > 4 and args[4] else 1
    mine, ref = run_both(nn.MaxPool2d(*args), torch.nn.MaxPool2d(*args), randn(*shape, seed=2),
                         outputs)
    names = ["out", "indices", "dx"] if outputs == 2 else ["out", "dx"]
    for what, a, b in zip(names, mine, ref):
        if what == "indices":
            assert a.dtype == np.int64
            np.testing.assert_array_equal(a, b.numpy())
        else:
            assert_close(a, b, what)


def special(shape, kind, seed=3):
    gen = np.random.default_rng(seed)
    x = gen.integers(0, 3, size=shape).astype(np.float64)      # ties everywhere
    pick = gen.random(shape)
    if kind in ("nan", "nan+inf"):
        x[pick < 0.25] = np.nan
    if kind in ("inf", "nan+inf"):
        x[pick > 0.75] = np.inf
        x[(pick > 0.5) & (pick < 0.6)] = -np.inf
    if kind == "-inf":
        x[:] = -np.inf
        x[..., -1, -1] = 2.0
    return x


@pytest.mark.parametrize("kind", ["ties", "nan", "inf", "nan+inf", "-inf"])
@pytest.mark.parametrize("args", [(3, 2, 1, 1, True), (2, 1, 0, 1, True),
                                  (3, 1, 1, 2, True, True)], ids=str)
def test_max_pool_nan_inf_and_ties_match_torch(kind, args):
    """torch's winner: the first maximum, a NaN over any number (the last NaN), and in a
    window of -inf the first entry inside the input; dx must equal torch's exactly."""
    x = special((2, 3, 7, 6), kind)
    mine, ref = run_both(nn.MaxPool2d(*args), torch.nn.MaxPool2d(*args), x, outputs=2)
    np.testing.assert_array_equal(mine[0], ref[0].detach().numpy())
    np.testing.assert_array_equal(mine[1], ref[1].numpy())
    np.testing.assert_array_equal(mine[2], ref[2].numpy())


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=3, padding=2), "padding 2 must be between 0 and half the kernel's extent"),
    (dict(kernel_size=3, stride=0), "stride must be positive"),
    (dict(kernel_size=5), r"input height 4 \(padding 0\) is smaller than the kernel's extent 5"),
    (dict(kernel_size=2, dilation=4), "smaller than the kernel's extent 5"),
])
def test_max_pool_refuses_what_torch_refuses(kwargs, match):
    x = randn(1, 2, 4, 4)
    with pytest.raises((RuntimeError, ValueError)):
        torch.nn.MaxPool2d(**kwargs)(torch.tensor(x))
    with pytest.raises(ValueError, match=match):
        nn.MaxPool2d(**kwargs)(x)


# --------------------------------------------------------------------------- #
# AdaptiveAvgPool2d and Flatten
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("size, shape", [
    (1, (2, 3, 5, 4)), ((3, 2), (1, 2, 7, 5)), ((None, 3), (2, 2, 5, 7)), ((4, None), (2, 6, 5)),
    ((None, None), (1, 2, 3, 4)), ((5, 7), (1, 2, 3, 4)), (2, (0, 3, 5, 5)),
], ids=str)
def test_adaptive_avg_pool_matches_torch(size, shape):
    mine, ref = run_both(nn.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size),
                         randn(*shape, seed=4))
    for what, a, b in zip(["out", "dx"], mine, ref):
        assert_close(a, b, what)


def test_adaptive_avg_pool_to_an_empty_output():
    """torch returns an empty output (and its backward refuses it; ours gives dx = 0)."""
    x = randn(1, 2, 5, 5)
    pool = nn.AdaptiveAvgPool2d((0, 2))
    out = pool(x)
    assert out.shape == tuple(torch.nn.AdaptiveAvgPool2d((0, 2))(torch.tensor(x)).shape)
    np.testing.assert_array_equal(pool.backward(np.zeros(out.shape)), np.zeros(x.shape))


@pytest.mark.parametrize("size", [(2, -1), None, (1, 2, 3), 1.5])
def test_adaptive_avg_pool_refuses_what_torch_refuses(size):
    x = randn(1, 2, 5, 5)
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        torch.nn.AdaptiveAvgPool2d(size)(torch.tensor(x))
    with pytest.raises(ValueError, match=r"output_size must be an int >= 0 or a pair of them"):
        nn.AdaptiveAvgPool2d(size)(x)


@pytest.mark.parametrize("dims, shape", [
    ((), (2, 3, 4, 5)), ((0, -1), (2, 3, 4, 5)), ((-3, -2), (2, 3, 4, 5)), ((2, 3), (2, 3, 4, 5)),
    ((1, 1), (2, 3, 4)), ((0,), (3,)), ((), (0, 3, 4)), ((1, 2), (4, 0, 2, 3)),
], ids=str)
def test_flatten_matches_torch(dims, shape):
    mine, ref = run_both(nn.Flatten(*dims), torch.nn.Flatten(*dims), randn(*shape, seed=5))
    for what, a, b in zip(["out", "dx"], mine, ref):
        assert_close(a, b, what)


@pytest.mark.parametrize("dims, shape, match", [
    ((2, 1), (2, 3, 4, 5), "start_dim=2 cannot come after end_dim=1"),
    ((5, 6), (2, 3, 4, 5), r"start_dim=5 is out of range for a 4-D input \(expected an int in "
                           r"\[-4, 3\]\)"),
    ((), (3,), "start_dim=1 is out of range for a 1-D input"),
])
def test_flatten_refuses_what_torch_refuses(dims, shape, match):
    x = randn(*shape)
    with pytest.raises((IndexError, RuntimeError)):
        torch.nn.Flatten(*dims)(torch.tensor(x))
    with pytest.raises(ValueError, match=match):
        nn.Flatten(*dims)(x)


# --------------------------------------------------------------------------- #
# Inputs that are not arrays
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("module", [nn.Conv2d(2, 3, 3), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1),
                                    nn.Flatten()], ids=lambda m: type(m).__name__)
def test_non_arrays_are_refused_with_how_to_convert(module):
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(TypeError, match=r"input 0 is a list, not a NumPy or CuPy array; "
                                        r"convert it with np.asarray\(x"):
        module(x.tolist())
    with pytest.raises(TypeError, match=r"is a torch.Tensor, not a NumPy or CuPy array; "
                                        r"convert it with x.detach\(\).cpu\(\).numpy\(\)"):
        module(torch.tensor(x))
    module(x)
    with pytest.raises(TypeError, match="dout is a list, not a NumPy or CuPy array"):
        module.backward([[0.0]])
    # The functional layers say the same, with the argument's name.
    with pytest.raises(TypeError, match=r"input is a list, not a NumPy or CuPy array; "
                                        r"convert it with np.asarray\(input"):
        F.max_pool2d_forward(x.tolist(), 2)


def test_an_empty_batch_runs_through_conv_pools_and_flatten():
    """An eval forward of (0, 3, 16, 16) (it used to fail with a raw reshape error)."""
    layers = [nn.Conv2d(3, 4, 3, 2, 1), nn.MaxPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(1),
              nn.Flatten()]
    x = np.zeros((0, 3, 16, 16), np.float32)
    for layer in layers:
        x = layer(x)
    assert x.shape == (0, 4)
    d = np.zeros((0, 4), np.float32)
    for layer in reversed(layers):
        d = layer.backward(d)
    assert d.shape == (0, 3, 16, 16) and d.dtype == np.float32
