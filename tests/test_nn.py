"""Modules: parameters, state_dict, modes, gradient accumulation, no_grad, and
every bad-input path giving a clear error that names the layer and the shapes."""
import numpy as np
import pytest

import resnet_np as rn
from resnet_np import nn
from resnet_np.gradcheck import check_model


@pytest.fixture
def model():
    rn.manual_seed(0)
    return rn.resnet18(num_classes=5)


def images(n=2, size=32, dtype=np.float32, channels=3):
    return np.random.default_rng(0).standard_normal((n, channels, size, size)).astype(dtype)


def test_parameters_and_buffers_are_named_like_torchvision(model):
    names = [n for n, _ in model.named_parameters()]
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "layer2.0.downsample.0.weight" in names and names[-1] == "fc.bias"
    buffers = dict(model.named_buffers())
    assert buffers["layer3.1.bn2.num_batches_tracked"].dtype == np.int64
    assert len(model.parameters()) == 62


def test_state_dict_round_trip(model, tmp_path):
    x = images()
    model.train()
    model(x)                     # move the running statistics off their initial values
    np.savez(tmp_path / "w.npz", **model.state_dict())
    rn.manual_seed(1)
    other = rn.resnet18(num_classes=5)
    with np.load(tmp_path / "w.npz") as saved:
        other.load_state_dict(dict(saved))
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    model.eval(), other.eval()
    np.testing.assert_array_equal(model(x), other(x))


def test_load_state_dict_copies_and_casts(model):
    state = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    other = rn.resnet18(num_classes=5)
    other.load_state_dict(state)
    assert other.conv1.weight.data.dtype == np.float32
    state["conv1.weight"][:] = 0          # the model keeps its own copy
    assert np.any(other.conv1.weight.data != 0)


def test_load_state_dict_lists_every_problem(model):
    state = dict(model.state_dict())
    del state["layer1.0.bn1.running_var"]
    state["layer9.weight"] = np.zeros(3)
    state["fc.weight"] = np.zeros((7, 512))
    with pytest.raises(ValueError) as err:
        model.load_state_dict(state)
    message = str(err.value)
    assert "missing keys (1): layer1.0.bn1.running_var" in message
    assert "unexpected keys (1): layer9.weight" in message
    assert "fc.weight: checkpoint (7, 512) vs model (5, 512)" in message


def test_load_state_dict_non_strict_allows_missing_but_not_shapes(model):
    state = dict(model.state_dict())
    del state["fc.bias"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["fc.bias"] and unexpected == []
    state["fc.weight"] = np.zeros((1, 1))
    with pytest.raises(ValueError, match="shape mismatches"):
        model.load_state_dict(state, strict=False)


def test_train_eval_switch_every_module(model):
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_eval_mode_leaves_running_stats_alone(model):
    before = {k: v.copy() for k, v in model.named_buffers()}
    model.eval()
    model(images())
    for k, v in model.named_buffers():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    model.train()
    model(images())
    assert int(model.bn1.num_batches_tracked) == 1
    assert not np.array_equal(model.bn1.running_mean, before["bn1.running_mean"])


def test_gradients_accumulate_until_zero_grad(model):
    x = images()
    out = model(x)
    model.backward(np.ones_like(out))
    first = model.fc.weight.grad.copy()
    model(x)
    model.backward(np.ones_like(out))
    np.testing.assert_allclose(model.fc.weight.grad, 2 * first, rtol=1e-5)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_no_grad_keeps_no_cache(model):
    with rn.no_grad():
        out = model(images())
    assert all(not m._caches for m in model.modules())
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones_like(out))


def test_backward_before_forward_and_twice(model):
    with pytest.raises(RuntimeError, match=r"ResNet \(ResNet\): backward called without a forward"):
        model.backward(np.ones((2, 5), np.float32))
    out = model(images())
    model.backward(np.ones_like(out))
    with pytest.raises(RuntimeError, match="backward twice"):
        model.backward(np.ones_like(out))


def test_wrong_rank_channels_dtype_size_name_the_layer(model):
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, H, W\), got shape \(3, 32, 32\)"):
        model(images()[0])
    with pytest.raises(ValueError, match="expected 3 input channels.*got 1"):
        model(images(channels=1))
    with pytest.raises(ValueError, match="input dtype float64 does not match the model's float32"):
        model(images(dtype=np.float64))
    with pytest.raises(ValueError, match=r"layer2.0.bn1 \(BatchNorm2d\): batch_norm2d: train mode "
                                         r"needs more than 1 value per channel"):
        model(images(n=1, size=8))            # 1x1 maps from layer2 on: nothing to normalise
    with pytest.raises(ValueError, match=r"layer1.0.conv1 \(Conv2d\): conv2d: input has 32 channels"):
        model.layer1[0].conv1(np.zeros((1, 32, 8, 8), np.float32))


def test_integer_images_are_refused():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="floating-point input, got dtype uint8"):
        conv(np.zeros((1, 3, 8, 8), np.uint8))


def test_spatial_size_too_small_for_kernel():
    conv = nn.Conv2d(3, 4, 7)
    with pytest.raises(ValueError, match=r"input height 5 \(padding 0\) is smaller than the kernel's extent 7"):
        conv(np.zeros((1, 3, 5, 9), np.float32))


def test_backward_with_wrong_dout_shape():
    layer = nn.Linear(4, 3)
    layer(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"dout has shape \(2, 4\), expected \(2, 3\)"):
        layer.backward(np.zeros((2, 4), np.float32))


def test_nan_check_is_opt_in(model):
    x = images()
    x[0, 0, 0, 0] = np.nan
    model(x)                                    # off by default: costs nothing
    with rn.backend.check_finite():
        with pytest.raises(ValueError, match=r"input 0 of shape \(2, 3, 32, 32\) contains NaN or inf"):
            model(x)


def test_unknown_model_and_dtype():
    with pytest.raises(ValueError, match="unknown model 'resnet51'"):
        rn.build_model("resnet51")
    with pytest.raises(ValueError, match="unsupported dtype 'float16'"):
        rn.resnet18(dtype="float16")


def test_gpu_without_cupy_is_a_clear_error(model):
    if rn.backend.gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CuPy|CUDA device"):
        model.to("gpu")


def test_float64_model_keeps_float64_everywhere():
    model = rn.resnet18(num_classes=3, dtype="float64")
    out = model(images(dtype=np.float64))
    assert out.dtype == np.float64
    model.backward(np.ones_like(out))
    assert all(p.data.dtype == p.grad.dtype == np.float64 for p in model.parameters())


def test_model_gradcheck_directional():
    """The whole ResNet-18 by finite differences: every tensor along a random direction."""
    rn.manual_seed(0)
    model = rn.resnet18(num_classes=4, dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 48))
    rows = check_model(model, x)
    assert len(rows) == 1 + len(model.parameters())
    worst = max(rows, key=lambda r: r[4])
    assert worst[4] < 1e-6, worst


def test_gradcheck_catches_a_wrong_gradient():
    """A backward that is off by a little is caught: the check can fail."""
    rn.manual_seed(0)
    model = rn.resnet18(num_classes=4, dtype="float64")
    original = model.layer2[0].bn2.backward

    def slightly_wrong(dout):
        dx = original(dout)
        model.layer2[0].bn2.weight.grad *= 1.001
        return dx
    model.layer2[0].bn2.backward = slightly_wrong
    rows = check_model(model, np.random.default_rng(1).standard_normal((2, 3, 64, 48)))
    errors = {name: err for name, _, _, _, err in rows}
    assert errors["layer2.0.bn2.weight"] > 1e-4


def test_conv2d_with_torch_options_keeps_torchs_state_dict():
    """Every padding option leaves the parameters as torch names and shapes them, so a
    torch state_dict loads into the module and the forwards agree."""
    from reference import torch
    args = (4, 6, (3, 2), 1, "same", (2, 1), 2, True, "circular")
    theirs = torch.nn.Conv2d(*args, dtype=torch.float64)
    ours = nn.Conv2d(*args, dtype="float64")
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6))
    np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------- conventions as torch's
def small_net(seed=0, dtype="float64"):
    rn.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, dtype=dtype),
                         nn.BatchNorm2d(4, dtype=dtype), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2, dtype=dtype))


def test_no_grad_is_thread_local():
    """Inference under no_grad in one thread while another trains: no failure in either."""
    import threading
    trained, inferred, errors = [], [], []
    start = threading.Barrier(2)

    def train():
        net, x = small_net(), np.random.default_rng(0).standard_normal((2, 3, 6, 6))
        start.wait()
        try:
            for _ in range(40):
                out = net(x)
                net.backward(np.ones_like(out))
                trained.append(rn.nn.is_grad_enabled())
        except Exception as err:                     # reported below
            errors.append(err)

    def infer():
        net, x = small_net(1), np.random.default_rng(1).standard_normal((2, 3, 6, 6))
        start.wait()
        for _ in range(40):
            with rn.no_grad():
                net(x)
                inferred.append(rn.nn.is_grad_enabled())

    threads = [threading.Thread(target=train), threading.Thread(target=infer)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    assert trained == [True] * 40 and inferred == [False] * 40


class Tied(nn.Module):
    """One Linear used twice in a forward (a tied weight), between two ReLUs."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(3, 3, dtype="float64")
        self.relu = nn.ReLU()
        self.head = nn.Sequential(self.shared, nn.ReLU())   # the same Linear again

    def forward(self, x):
        return self.head(self.relu(self.shared(x)))

    def backward(self, dout):
        return self.shared.backward(self.relu.backward(self.head.backward(dout)))


def test_shared_module_used_twice_matches_torch_and_is_listed_once():
    import torch
    ours = Tied()
    assert [k for k, _ in ours.named_parameters()] == ["shared.weight", "shared.bias"]
    assert len(ours.parameters()) == 2 and len(ours.modules()) == 5
    assert list(ours.state_dict()) == ["shared.weight", "shared.bias", "head.0.weight",
                                       "head.0.bias"]                   # as torch's
    lin = torch.nn.Linear(3, 3).double()
    lin.weight.data, lin.bias.data = (torch.tensor(ours.shared.weight.data),
                                      torch.tensor(ours.shared.bias.data))
    x = np.random.default_rng(0).standard_normal((4, 3))
    x_t = torch.tensor(x, requires_grad=True)
    out_t = torch.relu(lin(torch.relu(lin(x_t))))
    out_t.backward(torch.ones_like(out_t))
    out = ours(x)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.backward(np.ones_like(out)), x_t.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.shared.weight.grad, lin.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.shared.bias.grad, lin.bias.grad.numpy(), rtol=1e-12)
    # an optimizer over the tied model updates the one weight once, with both uses' gradient
    before = ours.shared.weight.data.copy()
    rn.optim.SGD(ours.parameters(), lr=0.1).step()
    np.testing.assert_allclose(ours.shared.weight.data, before - 0.1 * lin.weight.grad.numpy())


def test_a_new_top_level_forward_drops_unused_caches():
    net = small_net()
    x = np.zeros((2, 3, 6, 6))
    for _ in range(3):
        net(x)                                  # forwards without a backward
    assert all(len(m._caches) <= 1 for m in net.modules())
    net.backward(np.ones((2, 2)))
    with pytest.raises(RuntimeError, match="backward called without a forward"):
        net.backward(np.ones((2, 2)))


@pytest.mark.parametrize("bad, error, message", [
    (np.ones((2, 3), np.float32), ValueError, r"dout has shape \(2, 3\), expected \(2, 5\)"),
    (np.ones((2, 5), np.float64), ValueError, "dout has dtype float64 but the forward's output "
                                              "has float32; cast it"),
    ([[1.0] * 5] * 2, TypeError, "dout is a list, not a NumPy or CuPy array"),
])
def test_failed_backward_keeps_the_caches_for_a_retry(model, bad, error, message):
    x = images()
    out = model(x)
    with pytest.raises(error, match=message):
        model.backward(bad)
    assert all(p.grad is None for p in model.parameters())
    dx = model.backward(np.ones_like(out))            # the corrected retry
    fresh = rn.resnet18(num_classes=5)
    fresh.load_state_dict(model.state_dict())
    fresh_out = fresh(x)
    np.testing.assert_array_equal(fresh_out, out)
    np.testing.assert_array_equal(fresh.backward(np.ones_like(out)), dx)


def test_non_array_inputs_say_how_to_convert(model):
    import torch
    with pytest.raises(TypeError, match=r"input 0 is a list, not a NumPy or CuPy array; "
                                        r"convert it with np.asarray"):
        model(images().tolist())
    with pytest.raises(TypeError,
                       match=r"input 0 is a torch.Tensor.*x.detach\(\).cpu\(\).numpy\(\)"):
        model(torch.zeros(2, 3, 32, 32))
    with pytest.raises(TypeError, match="is a float"):
        nn.ReLU()(1.5)


def test_errors_keep_their_traceback():
    import traceback
    with pytest.raises(ValueError) as err:
        small_net()(np.zeros((2, 5, 6, 6)))
    files = [frame.filename for frame in traceback.extract_tb(err.value.__traceback__)]
    assert any(f.endswith("conv.py") for f in files), files     # where it was raised
    assert str(err.value).startswith("0 (Conv2d): conv2d: input has 5 channels")


def test_register_buffer_is_the_one_way_and_assignment_updates_it():
    bn = nn.BatchNorm2d(2)
    assert not hasattr(bn, "_set_buffer")
    bn.running_mean = np.full(2, 3.0, np.float32)           # assigning to a buffer updates it
    assert bn.state_dict()["running_mean"][0] == 3.0


def test_load_state_dict_messages_stay_readable():
    r50 = rn.resnet50(num_classes=10)
    state = rn.resnet18(num_classes=10).state_dict()
    with pytest.raises(ValueError) as err:
        r50.load_state_dict(state)
    message = str(err.value)
    assert "these look like resnet18 weights, not resnet50's: build that model " \
           "(resnet_np.resnet18(num_classes=10))" in message
    assert "and 190 more" in message and len(message) < 2000
    with pytest.raises(ValueError, match="checkpoint has 10 classes and this model 3: build it "
                                         "with num_classes=10"):
        rn.resnet18(num_classes=3).load_state_dict(state)
    bad = dict(state, **{"fc.bias": np.array(["x"] * 10)})
    with pytest.raises(ValueError, match=r"not numeric arrays \(1\): fc.bias \(dtype <U1\)"):
        rn.resnet18(num_classes=10).load_state_dict(bad)
    # a DataParallel checkpoint: every key prefixed with "module."
    other = rn.resnet18(num_classes=10)
    other.load_state_dict({f"module.{k}": v for k, v in state.items()})
    np.testing.assert_array_equal(other.fc.weight.data, state["fc.weight"])


def test_backward_failing_after_taking_its_cache_puts_it_back():
    """Without the output check of __call__ (forward called directly) the layer's own
    dout check raises after the cache was taken: it is put back all the same."""
    layer = nn.Linear(4, 3, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 4))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"dout has shape \(2, 4\), expected \(2, 3\)"):
        layer.backward(np.ones((2, 4)))
    np.testing.assert_allclose(layer.backward(np.ones((2, 3))), np.ones((2, 3)) @ layer.weight.data)


def test_parameter_tied_between_two_layers_is_listed_once():
    net = nn.Sequential(nn.Linear(3, 3, dtype="float64"), nn.ReLU(),
                        nn.Linear(3, 3, dtype="float64"))
    net[2].weight = net[0].weight                       # tied weights, two modules
    assert [k for k, _ in net.named_parameters()] == ["0.weight", "0.bias", "2.bias"]
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = np.random.default_rng(0).standard_normal((2, 3))
    net.backward(np.ones_like(net(x)))
    w = net[0].weight
    h = x @ w.data.T + net[0].bias.data
    expected = (np.ones((2, 3)) @ w.data * (h > 0)).T @ x + np.ones((2, 3)).T @ np.maximum(h, 0)
    np.testing.assert_allclose(w.grad, expected, rtol=1e-12)
