"""torch.nn's options for BatchNorm2d, CrossEntropyLoss, Linear and ReLU, each against
torch in float64: the forward, every gradient and the buffers within 1e-10, or one
clear error naming the option."""
import functools
import subprocess
import sys

import numpy as np
import pytest

import resnet_np as rn
from reference import import_torchvision, torch
from resnet_np import nn
from resnet_np.functional import activation, batchnorm

TOL = 1e-10


def close(ours, theirs, tol=TOL):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    both_nan = np.isnan(ours) & np.isnan(theirs)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)), (ours, theirs)
    ours, theirs = np.where(both_nan, 0, ours), np.where(both_nan, 0, theirs)
    assert np.allclose(ours, theirs, rtol=tol, atol=tol), np.abs(ours - theirs).max()


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------- BatchNorm2d
BN_OPTIONS = [dict(affine=a, track_running_stats=t, momentum=m)
              for a in (True, False) for t in (True, False) for m in (0.1, None)] + \
             [dict(bias=False), dict(momentum=0.3, eps=1e-3)]


def bn_pair(options):
    ours = nn.BatchNorm2d(3, **options, dtype="float64")
    theirs = torch.nn.BatchNorm2d(3, **options).double()
    if ours.weight is not None:                       # not the initial 1 and 0
        ours.weight.data = randn(3, seed=5) + 1.5
        theirs.weight.data = torch.tensor(ours.weight.data)
    if ours.bias is not None:
        ours.bias.data = randn(3, seed=6)
        theirs.bias.data = torch.tensor(ours.bias.data)
    return ours, theirs


@pytest.mark.parametrize("options", BN_OPTIONS, ids=str)
def test_batch_norm_options_match_torch(options):
    """Three train steps (the cumulative average needs more than one), then eval."""
    ours, theirs = bn_pair(options)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for step, train in enumerate([True, True, True, False, False]):
        ours.train(train), theirs.train(train)
        x = randn(4, 3, 5, 6, seed=step) * (step + 1) + step
        dout = randn(4, 3, 5, 6, seed=10 + step)
        x_t = torch.tensor(x, requires_grad=True)
        out_t = theirs(x_t)
        out_t.backward(torch.tensor(dout))
        ours.zero_grad()
        close(ours(x), out_t)
        close(ours.backward(dout), x_t.grad)
        for name, p in theirs.named_parameters():
            close(getattr(ours, name).grad, p.grad)
            p.grad = None
        state = ours.state_dict()
        for key, value in theirs.state_dict().items():
            close(state[key], value)


def test_batch_norm_positional_signature_as_torch():
    bn = nn.BatchNorm2d(3, 0.001, None)
    assert (bn.eps, bn.momentum) == (0.001, None)
    bn = nn.BatchNorm2d(3, 1e-5, 0.1, False, False)
    assert bn.weight is None and bn.running_mean is None and list(bn.state_dict()) == []
    with pytest.raises(TypeError):
        nn.BatchNorm2d(3, 1e-5, 0.1, True, True, "float64")      # dtype is keyword-only
    with pytest.raises(ValueError, match="momentum must be a number in \\[0, 1\\] or None"):
        nn.BatchNorm2d(3, momentum="0.1")
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        nn.BatchNorm2d(0)


def test_batch_norm_needs_4d_input_as_torch():
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4D input \(N, C, H, W\), got "
                                         r"3D input of shape \(3, 4, 4\)"):
        nn.BatchNorm2d(3, dtype="float64")(randn(3, 4, 4))
    with pytest.raises(ValueError):
        torch.nn.BatchNorm2d(3)(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_empty_batch_as_torch(train):
    ours, theirs = bn_pair({})
    ours.train(train), theirs.train(train)
    x_t = torch.zeros(0, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    out_t = theirs(x_t)
    out_t.sum().backward()
    out = ours(np.zeros((0, 3, 4, 4)))
    assert out.shape == (0, 3, 4, 4)
    assert ours.backward(np.zeros((0, 3, 4, 4))).shape == (0, 3, 4, 4)
    close(ours.weight.grad, theirs.weight.grad)
    close(ours.bias.grad, theirs.bias.grad)
    for key, value in theirs.state_dict().items():
        close(ours.state_dict()[key], value)


@pytest.mark.parametrize("track", [True, False])
def test_batch_norm_one_value_per_channel_as_torch(track):
    """Train mode, and eval mode without running statistics, need 2 values per channel."""
    for train in (True, False):
        ours = nn.BatchNorm2d(3, track_running_stats=track, dtype="float64").train(train)
        theirs = torch.nn.BatchNorm2d(3, track_running_stats=track).double().train(train)
        x = randn(1, 3, 1, 1)
        if train or not track:
            with pytest.raises(ValueError, match="more than 1 value per channel"):
                ours(x)
            with pytest.raises(ValueError):
                theirs(torch.tensor(x))
        else:
            close(ours(x), theirs(torch.tensor(x)))


def test_batch_norm_cache_is_named():
    _, cache = rn.functional.batch_norm2d_forward(randn(2, 3, 2, 2), np.ones(3), np.zeros(3),
                                                  np.zeros(3), np.ones(3), True)
    assert isinstance(cache, batchnorm.BatchNormCache)
    assert cache.shape == (2, 3, 2, 2) and cache.training and cache.x_mat is None


def test_float32_batch_norm_sums_as_accurate_as_torch():
    """Per-channel sums over 2**15 values with a large mean: a float32 sum row after row
    loses about 3 digits here; blocked sums with float64 totals do not."""
    exact = lambda a: a.astype(np.float32).astype(np.float64)   # the same in both dtypes
    x = exact(randn(8, 4, 64, 64) * 0.1 + 5)
    dout = exact(randn(8, 4, 64, 64, seed=1) + 2)
    gamma = np.array([0.5, 1.0, 1.5, 2.0])
    errors = {}
    for dtype in ("float64", "float32"):
        x_t = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
        w_t = torch.tensor(gamma, dtype=getattr(torch, dtype), requires_grad=True)
        b_t = torch.zeros(4, dtype=getattr(torch, dtype), requires_grad=True)
        out_t = torch.nn.functional.batch_norm(x_t, None, None, w_t, b_t, True)
        out_t.backward(torch.tensor(dout, dtype=getattr(torch, dtype)))
        out, cache = rn.functional.batch_norm2d_forward(
            x.astype(dtype), gamma.astype(dtype), np.zeros(4, dtype), None, None, True)
        ours = (out,) + rn.functional.batch_norm2d_backward(dout.astype(dtype), cache)
        theirs = (out_t, x_t.grad, w_t.grad, b_t.grad)
        errors[dtype] = (ours, [t.detach().numpy() for t in theirs])
    truth = errors["float64"][1]
    for name, ours, theirs, exact in zip(["out", "dx", "dgamma", "dbeta"], *errors["float32"],
                                         truth):
        ours_err = np.abs(ours - exact).max() / np.abs(exact).max()
        torch_err = np.abs(theirs - exact).max() / np.abs(exact).max()
        assert ours_err <= max(torch_err, 1e-6), (name, ours_err, torch_err)


def test_channel_sum_equals_the_plain_sum():
    a, b = randn(300, 5), randn(300, 5, seed=1)      # 2 blocks of 128 rows and 44 more
    np.testing.assert_allclose(batchnorm.channel_sum(a), a.sum(axis=0), rtol=1e-13)
    np.testing.assert_allclose(batchnorm.channel_sum(a, b), (a * b).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(batchnorm.channel_sum(a[:7], b[:7]), (a[:7] * b[:7]).sum(0))


# --------------------------------------------------------------------------- CrossEntropyLoss
SHAPES = {"batch": (5, 4), "unbatched": (4,), "spatial": (3, 4, 2, 3)}


def targets(kind, shape, ignore):
    gen = np.random.default_rng(3)
    if kind == "probabilities":
        p = gen.uniform(size=shape)
        return p / p.sum(axis=0 if len(shape) == 1 else 1, keepdims=True)
    labels_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    labels = gen.integers(0, shape[0 if len(shape) == 1 else 1], size=labels_shape)
    if ignore is not None and labels.ndim:
        labels.flat[::3] = ignore
    return labels


CE_CASES = [(shape, kind, weighted, ignore, reduction, smoothing)
            for shape in SHAPES for kind in ("indices", "probabilities")
            for weighted in (False, True) for ignore in (None, 2)
            for reduction in ("mean", "sum", "none") for smoothing in (0.0, 0.2)
            if not (kind == "probabilities" and ignore is not None)]


@pytest.mark.parametrize("shape, kind, weighted, ignore, reduction, smoothing", CE_CASES)
def test_cross_entropy_options_match_torch(shape, kind, weighted, ignore, reduction, smoothing):
    dims = SHAPES[shape]
    C = dims[0 if len(dims) == 1 else 1]
    logits = randn(*dims) * 2
    target = targets(kind, dims, ignore)
    weight = np.linspace(0.5, 2.0, C) if weighted else None
    options = dict(reduction=reduction, label_smoothing=smoothing,
                   ignore_index=-100 if ignore is None else ignore)
    ours = nn.CrossEntropyLoss(weight, **options)
    theirs = torch.nn.CrossEntropyLoss(None if weight is None else torch.tensor(weight),
                                       **options)
    z_t = torch.tensor(logits, requires_grad=True)
    loss_t = theirs(z_t, torch.tensor(target))
    dloss = randn(*loss_t.shape, seed=7) if reduction == "none" else 0.7
    loss_t.backward(torch.tensor(dloss, dtype=torch.float64))
    close(ours(logits, target), loss_t)
    close(ours.backward(dloss), z_t.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_empty_batch_and_all_ignored_as_torch(reduction):
    for logits, labels in [(np.zeros((0, 4)), np.zeros(0, np.int64)),
                           (randn(3, 4), np.full(3, -100))]:
        z_t = torch.tensor(logits, requires_grad=True)
        loss_t = torch.nn.functional.cross_entropy(z_t, torch.tensor(labels),
                                                   reduction=reduction)
        criterion = nn.CrossEntropyLoss(reduction=reduction)
        close(criterion(logits, labels), loss_t)
        dloss = np.ones(loss_t.shape) if reduction == "none" else 1.0
        loss_t.backward(torch.tensor(dloss, dtype=torch.float64))
        close(criterion.backward(dloss), z_t.grad)


def test_cross_entropy_errors_name_the_option():
    with pytest.raises(TypeError, match="weight must be an array.*label_smoothing="):
        nn.CrossEntropyLoss(0.1)                      # torch's first argument is weight
    with pytest.raises(ValueError, match="size_average and reduce are deprecated"):
        nn.CrossEntropyLoss(size_average=False)
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight must hold one number per class, shape \(4,\)"):
        nn.CrossEntropyLoss(np.ones(3))(randn(2, 4), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*got 7"):
        nn.CrossEntropyLoss()(randn(2, 4), np.array([0, 7]))
    with pytest.raises(ValueError, match="ignore_index is not supported for probability"):
        nn.CrossEntropyLoss(ignore_index=1)(randn(2, 4), np.full((2, 4), 0.25))
    with pytest.raises(ValueError, match=r"class-index labels must have shape \(2,\)"):
        nn.CrossEntropyLoss()(randn(2, 4), np.array([[0, 1]]))
    criterion = nn.CrossEntropyLoss(reduction="none")
    criterion(randn(2, 4), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"dloss must have the loss's shape \(2,\)"):
        criterion.backward(1.0)


# --------------------------------------------------------------------------- Linear, ReLU
@pytest.mark.parametrize("shape", [(4,), (0, 4), (2, 3, 4), (5, 4)])
def test_linear_input_shapes_match_torch(shape):
    ours = nn.Linear(4, 3, dtype="float64")
    theirs = torch.nn.Linear(4, 3).double()
    theirs.weight.data, theirs.bias.data = (torch.tensor(ours.weight.data),
                                            torch.tensor(ours.bias.data))
    x = randn(*shape)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = theirs(x_t)
    dout = randn(*out_t.shape, seed=1)
    out_t.backward(torch.tensor(dout))
    close(ours(x), out_t)
    close(ours.backward(dout), x_t.grad)
    close(ours.weight.grad, theirs.weight.grad)
    close(ours.bias.grad, theirs.bias.grad)


def test_relu_nan_and_inf_as_torch():
    special = [np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 2.0, -0.0]
    x = np.array(special * len(special))
    dout = np.repeat(special, len(special))          # every input with every dout
    x_t = torch.tensor(x, requires_grad=True)
    torch.relu(x_t).backward(torch.tensor(dout))
    relu = nn.ReLU()
    close(relu(x), torch.relu(torch.tensor(x)))
    close(relu.backward(dout), x_t.grad)
    _, cache = rn.functional.relu_forward(x)
    close(activation.relu_backward_naive(dout, cache), x_t.grad)


def test_relu_fast_path_equals_naive_twin():
    x = randn(2, 3, 4, 5).transpose(0, 2, 3, 1)
    out, cache = rn.functional.relu_forward(x)
    dout = randn(*out.shape, seed=1)
    np.testing.assert_array_equal(rn.functional.relu_backward(dout, cache),
                                  activation.relu_backward_naive(dout, cache))


def test_relu_empty_batch():
    relu = nn.ReLU()
    assert relu(np.zeros((0, 3, 2, 2))).shape == (0, 3, 2, 2)
    assert relu.backward(np.zeros((0, 3, 2, 2))).shape == (0, 3, 2, 2)


# --------------------------------------------------------------------------- ResNet options
NORM_CASES = {
    "eps and cumulative momentum": (dict(eps=1e-3, momentum=None), True),
    "no running statistics": (dict(track_running_stats=False), False),
}                                  # (torchvision's own initialisation needs affine=True)


@pytest.mark.parametrize("case", NORM_CASES)
def test_resnet_norm_layer_matches_torchvision(case):
    options, train = NORM_CASES[case]
    torchvision = import_torchvision()
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(
        num_classes=5, norm_layer=functools.partial(torch.nn.BatchNorm2d, **options)).double()
    ours = rn.resnet18(num_classes=5, dtype="float64",
                       norm_layer=functools.partial(nn.BatchNorm2d, **options))
    norms = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in theirs.modules())
    assert all(m.weight.dtype == np.float64 for m in norms)
    assert all(getattr(m, k) == v for m in norms for k, v in options.items())
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.train(train), theirs.train(train)
    x = randn(2, 3, 35, 33)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = theirs(x_t)
    dout = randn(2, 5, seed=1)
    out_t.backward(torch.tensor(dout))
    close(ours(x), out_t, 1e-8)
    close(ours.backward(dout), x_t.grad, 1e-8)
    for key, p in theirs.named_parameters():
        close(dict(ours.named_parameters())[key].grad, p.grad, 1e-8)
    for key, value in theirs.state_dict().items():
        close(ours.state_dict()[key], value, 1e-8)


def test_resnet_num_classes_and_norm_layer_errors():
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        rn.resnet18(num_classes=0)
    with pytest.raises(TypeError, match="not a resnet_np Module"):
        rn.resnet18(norm_layer=torch.nn.BatchNorm2d)


def test_optim_after_import_resnet_np():
    code = ("import sys, resnet_np as rn; rn.optim.SGD; rn.optim.build_schedule; "
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_relu_passes_dout_at_a_nan_input_as_torch():
    x = np.array([np.nan, -1.0, 2.0, 0.0])
    x_t = torch.tensor(x, requires_grad=True)
    torch.relu(x_t).backward(torch.ones(4, dtype=torch.float64))
    relu = nn.ReLU()
    relu(x)
    close(relu.backward(np.ones(4)), x_t.grad)             # [1, 0, 1, 0]


def test_relu_backward_finds_a_nan_or_inf_in_any_row_block():
    """The fast route (dout times the mask, in row blocks on several threads) checks each
    block's result; a NaN or inf in any block takes the exact route, so the result is
    the naive twin's."""
    x = randn(4, 64, 64, 64, seed=2).astype(np.float32).transpose(0, 3, 1, 2)
    assert x.size >= rn.backend.PARALLEL_MIN_SIZE
    out, cache = rn.functional.relu_forward(x)
    blocked = np.argwhere(out[3] == 0)[-1]          # in the last image: the last block
    passing = np.argwhere(out[3] > 0)[-1]
    for value, where in ((np.inf, blocked), (-np.inf, blocked), (np.nan, blocked),
                         (np.nan, passing)):
        dout = randn(*x.shape, seed=3).astype(np.float32)
        dout[(3,) + tuple(where)] = value
        np.testing.assert_array_equal(rn.functional.relu_backward(dout, cache),
                                      activation.relu_backward_naive(dout, cache))
