"""Mixed precision (resnet_np.amp) on the CPU with NumPy float16.

    GradScaler       the sequence of scales and of skipped steps over a scripted series of
                     overflows equals torch.amp.GradScaler's; defaults and state_dict keys
                     equal torch's; the state dict round-trips
    MixedPrecision   float16 weights with float32 masters, batch norm in float32; a step
                     updates the masters like a float32 step does (to float16 accuracy),
                     and an overflowing step leaves them as they were
"""
import numpy as np
import pytest

import resnet_np as rn
from resnet_np import amp
from resnet_np.nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, CrossEntropyLoss, Flatten,
                          Linear, MaxPool2d, ReLU, Sequential)
from resnet_np.nn.module import Parameter
from resnet_np.optim import SGD

torch = pytest.importorskip("torch", reason="the GradScaler reference is torch.amp.GradScaler")

# 1 = the step's gradients overflow: backoff, growth after 3 clean steps, growth twice in a row,
# overflow right after a growth, and two overflows in a row
OVERFLOWS = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0]
GRADS = np.linspace(-2, 3, len(OVERFLOWS))


def _torch_run(init_scale, growth_interval):
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
    scales, values = [], []
    for bad, g in zip(OVERFLOWS, GRADS):
        scale = scaler.scale(torch.tensor(1.0)).item()
        p.grad = torch.full((3,), float("inf") if bad else g * scale)
        p.grad[1] = float("nan") if bad else p.grad[1]
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        values.append(p.detach().numpy().copy())
    return scales, values, scaler.state_dict()


def _our_run(init_scale, growth_interval, scaler=None, steps=None):
    p = Parameter(np.ones(3, dtype=np.float32))
    opt = SGD([p], lr=0.1)
    scaler = scaler or amp.GradScaler(init_scale=init_scale, growth_interval=growth_interval)
    scales, values, stepped = [], [], []
    for bad, g in list(zip(OVERFLOWS, GRADS))[:steps]:
        scale = scaler.scale(1.0)
        p.grad = np.full(3, np.inf if bad else g * scale, dtype=np.float32)
        p.grad[1] = np.nan if bad else p.grad[1]
        stepped.append(scaler.step(opt))
        scaler.update()
        scales.append(scaler.get_scale())
        values.append(p.data.copy())
    return scales, values, stepped, scaler


@pytest.mark.parametrize("init_scale,growth_interval", [(2.0 ** 16, 3), (8.0, 1), (1024.0, 2000)])
def test_scales_and_skipped_steps_equal_torch(init_scale, growth_interval):
    t_scales, t_values, t_state = _torch_run(init_scale, growth_interval)
    scales, values, stepped, scaler = _our_run(init_scale, growth_interval)
    assert scales == t_scales
    assert stepped == [not bad for bad in OVERFLOWS]
    np.testing.assert_allclose(values, t_values, rtol=1e-6)
    assert scaler.state_dict() == t_state


def test_defaults_and_state_dict_keys_equal_torch():
    ours = amp.GradScaler().state_dict()
    theirs = torch.amp.GradScaler("cpu").state_dict()
    assert ours == theirs == {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                              "growth_interval": 2000, "_growth_tracker": 0}


def test_state_dict_round_trip_resumes_the_same_sequence():
    full, _, _, _ = _our_run(2.0 ** 16, 3)
    first, _, _, scaler = _our_run(2.0 ** 16, 3, steps=8)
    resumed = amp.GradScaler()
    resumed.load_state_dict(scaler.state_dict())
    assert resumed.state_dict() == scaler.state_dict()
    # the rest of the series from the restored scaler
    p = Parameter(np.ones(3, dtype=np.float32))
    opt = SGD([p], lr=0.1)
    rest = []
    for bad, g in list(zip(OVERFLOWS, GRADS))[8:]:
        p.grad = np.full(3, np.inf if bad else g, dtype=np.float32)
        resumed.step(opt)
        resumed.update()
        rest.append(resumed.get_scale())
    assert first + rest == full
    with pytest.raises(ValueError, match="missing keys"):
        amp.GradScaler().load_state_dict({"scale": 2.0})


def test_disabled_scaler_passes_through():
    scaler = amp.GradScaler(enabled=False)
    p = Parameter(np.ones(2, dtype=np.float32))
    p.grad = np.full(2, np.inf, dtype=np.float32)
    assert scaler.scale(3.0) == 3.0 and scaler.get_scale() == 1.0
    assert scaler.step(SGD([p], lr=1.0)) is True      # no check: torch's disabled scaler
    assert scaler.state_dict() == {}


def test_unscale_twice_and_bad_settings_are_errors():
    scaler = amp.GradScaler()
    p = Parameter(np.ones(2, dtype=np.float32))
    p.grad = np.ones(2, dtype=np.float32)
    opt = SGD([p], lr=1.0)
    scaler.unscale_(opt)
    np.testing.assert_array_equal(p.grad, np.full(2, 2.0 ** -16))
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)                 # uses the unscaled gradients, does not unscale again
    np.testing.assert_allclose(p.data, 1 - 2.0 ** -16)
    for kwargs, message in (({"init_scale": 0}, "init_scale"), ({"growth_factor": 1}, "growth"),
                            ({"backoff_factor": 1.5}, "backoff"),
                            ({"growth_interval": 0}, "growth_interval")):
        with pytest.raises(ValueError, match=message):
            amp.GradScaler(**kwargs)


# --------------------------------------------------------------------------- #
# Master weights and float16 compute
# --------------------------------------------------------------------------- #
class TinyNet(Sequential):
    """conv-bn-relu-maxpool-conv-bn-relu-avgpool-fc: every kind of layer of a ResNet, small."""

    def __init__(self):
        super().__init__(Conv2d(3, 8, 3, padding=1), BatchNorm2d(8), ReLU(), MaxPool2d(2, 2),
                         Conv2d(8, 8, 3, padding=1, bias=False), BatchNorm2d(8), ReLU(),
                         AdaptiveAvgPool2d(1), Flatten(), Linear(8, 5))

    def backward(self, dout, input_grad=True):
        layers = list(self)
        for m in reversed(layers[1:]):
            dout = m.backward(dout)
        return layers[0].backward(dout, input_grad)


def _tiny_model(seed=0):
    rn.manual_seed(seed)
    return TinyNet()


def _batch():
    rng = np.random.default_rng(1)
    return rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.integers(0, 5, 4)


def test_mixed_precision_keeps_float32_masters_and_batch_norm():
    model = _tiny_model()
    weights = {k: v.copy() for k, v in model.state_dict().items()}
    mp = amp.MixedPrecision(model, "float16")
    in_bn = {id(p) for m in model.modules() if isinstance(m, BatchNorm2d) for p in m.parameters()}
    for (name, p), master in zip(model.named_parameters(), mp.master_parameters()):
        assert master.dtype == np.float32, name
        assert p.dtype == (np.float32 if id(p) in in_bn else np.float16), name
        np.testing.assert_array_equal(master.data, weights[name])
    assert all(b.dtype != np.float16 for b in model.buffers())
    x, _ = _batch()
    out = model(mp.cast_input(x))
    assert out.dtype == np.float16
    assert model[1].running_mean.dtype == np.float32 and model[1].running_mean.any()


def test_mixed_precision_step_follows_the_float32_step():
    x, y = _batch()
    reference = _tiny_model()
    opt32 = SGD(reference.parameters(), lr=0.1, momentum=0.9)
    criterion = CrossEntropyLoss()
    loss32 = criterion(reference(x), y)
    reference.backward(criterion.backward(), input_grad=False)
    opt32.step()

    model = _tiny_model()
    mp = amp.MixedPrecision(model, "float16")
    opt = SGD(mp.master_parameters(), lr=0.1, momentum=0.9)
    scaler = amp.GradScaler(init_scale=1024.0)
    before = [m.data.copy() for m in mp.master_parameters()]
    steps, steps32 = [], []
    loss, stepped = mp.train_step(x, y, criterion, opt, scaler)
    assert stepped and scaler.get_scale() == 1024.0
    assert abs(loss - float(loss32)) < 1e-2 * abs(float(loss32))
    for (name, p32), master, old, (_, p16) in zip(reference.named_parameters(),
                                                  mp.master_parameters(), before,
                                                  model.named_parameters()):
        assert master.dtype == np.float32
        step32, step = p32.data - old, master.data - old
        # a conv bias before a batch norm has no true gradient: float16 noise only
        floor = 1e-4 * np.sqrt(step.size)
        assert np.linalg.norm(step - step32) <= 0.05 * np.linalg.norm(step32) + floor, name
        steps.append(step.ravel())
        steps32.append(step32.ravel())
        np.testing.assert_array_equal(p16.data, master.data.astype(p16.dtype))
    steps, steps32 = np.concatenate(steps), np.concatenate(steps32)
    assert np.linalg.norm(steps32) > 1e-2
    assert np.linalg.norm(steps - steps32) < 0.02 * np.linalg.norm(steps32)
    for name, buffer in reference.named_buffers():
        ours = dict(model.named_buffers())[name]
        np.testing.assert_allclose(ours, buffer, rtol=1e-2, atol=1e-3, err_msg=name)
    assert all(p.grad is None for p in model.parameters())


def test_an_overflowing_step_is_skipped_and_the_scale_backs_off():
    x, y = _batch()
    model = _tiny_model()
    mp = amp.MixedPrecision(model, "float16")
    opt = SGD(mp.master_parameters(), lr=0.1)
    scaler = amp.GradScaler(init_scale=2.0 ** 40)      # scaled gradients overflow float16
    before = [m.data.copy() for m in mp.master_parameters()]
    weights16 = [p.data.copy() for p in model.parameters()]
    _, stepped = mp.train_step(x, y, CrossEntropyLoss(), opt, scaler)
    assert not stepped and scaler.get_scale() == 2.0 ** 39
    for old, master in zip(before, mp.master_parameters()):
        np.testing.assert_array_equal(master.data, old)
    for old, p in zip(weights16, model.parameters()):
        np.testing.assert_array_equal(p.data, old)
    assert mp.state_dict()["0.weight"].dtype == np.float32


def test_compute_dtypes():
    assert amp.compute_dtype_for("float16") == np.float16
    assert amp.compute_dtype_for("bfloat16").name == "bfloat16"   # NumPy with ml_dtypes
    with pytest.raises(ValueError, match="CuPy has no bfloat16"):
        amp.compute_dtype_for("bfloat16", xp=object())
    with pytest.raises(ValueError, match="compute dtype must be one of"):
        amp.compute_dtype_for("float8")
    with pytest.raises(ValueError, match="must be float32 to start with"):
        amp.MixedPrecision(Sequential(Linear(2, 2, dtype="float64")))
