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
