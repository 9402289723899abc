"""The CuPy backend on an NVIDIA GPU, checked against the NumPy backend and torchvision.

    functional layers  every case of the shared table (resnet_np/layer_cases.py), forward
                       and backward on CuPy arrays against the same case on NumPy arrays:
                       float64 to 1e-10, float32 to 1e-4 (norm-wise relative error per
                       tensor); in-place updates too
    gradients          central finite differences on the GPU, float64: the same table, by
                       the backend-parametrised tests of tests/test_functional.py
    models             ResNet-50 and ResNet-101 on the GPU against torchvision on CUDA:
                       logits, input gradient, every parameter gradient and the running
                       statistics, train and eval, float64 (1e-8) and float32 (measured
                       against the float64 truth, as tests/test_models.py does)
    optimizers         SGD, Adam and AdamW steps on CuPy parameters against NumPy ones
    training           a few steps of ResNet-18 stay on the GPU and lower the loss, and
                       match the same steps on the CPU
    devices            model.to("gpu") / .to("cpu") round trips, load_state_dict from any
                       device, and the error for an input on the wrong device
    what is asked      on the CuPy stand-in (RESNET_NP_CUPY_STANDIN=1), from its record:
                       convolutions multiply 2-D matrices (float16 ones under --amp), a
                       ResNet train step's host syncs; and `resnet-np train --device gpu`
                       ends at the CPU run's weights

Every test is marked ``gpu``: tests/conftest.py skips them, with the reason, where CuPy or
a CUDA device is missing, and runs them on the CuPy stand-in with RESNET_NP_CUPY_STANDIN=1. CuPy is never imported at module level, so the module imports
(and its tests are collected and skipped) on a machine without it.
Run them with ``PYTHONPATH=. python3 -m pytest -m gpu``.
"""
import importlib

import numpy as np
import pytest

import resnet_np as rn
from resnet_np import backend
from resnet_np import functional as F
from resnet_np.gradcheck import relative_error
from resnet_np.layer_cases import CASES_BY_NAME, run_case
from resnet_np.nn.module import Parameter
from resnet_np.optim import SGD, Adam, AdamW

pytestmark = pytest.mark.gpu

TOL = {"float64": 1e-10, "float32": 1e-4}   # GPU against CPU, norm-wise relative error


# --------------------------------------------------------------------------- #
# Fixtures and helpers
# --------------------------------------------------------------------------- #
# ``cp``: the cupy module, a fixture of conftest.py (skips without a GPU).


@pytest.fixture(scope="module")
def tm():
    """tests/test_models.py, for its torchvision helpers (imports torch and torchvision)."""
    return importlib.import_module("test_models")


@pytest.fixture(scope="module")
def torch_cuda(tm):
    torch = tm.torch
    if not torch.cuda.is_available():
        pytest.skip("PyTorch was built without CUDA or sees no CUDA device")
    return torch


@pytest.fixture
def full_float32(torch_cuda):
    """torch's cuDNN convolutions default to TF32 on an H200: ask for true float32."""
    b = torch_cuda.backends
    if hasattr(getattr(b.cudnn, "conv", None), "fp32_precision"):     # torch >= 2.9
        knobs = [(b.cuda.matmul, "fp32_precision", "ieee"),
                 (b.cudnn.conv, "fp32_precision", "ieee")]
    else:
        knobs = [(b.cuda.matmul, "allow_tf32", False), (b.cudnn, "allow_tf32", False)]
    saved = [getattr(obj, attr) for obj, attr, _ in knobs]
    for obj, attr, value in knobs:
        setattr(obj, attr, value)
    yield
    for (obj, attr, _), value in zip(knobs, saved):
        setattr(obj, attr, value)


def host(array):
    """A NumPy copy of a NumPy or CuPy array (None stays None)."""
    return None if array is None else backend.to_numpy(array)


def assert_close(gpu, cpu, tol, what):
    """``gpu`` (CuPy) against ``cpu`` (NumPy): same shape and dtype, relative error < tol."""
    assert backend.device_of(gpu) == "gpu", f"{what}: expected a CuPy array, got {type(gpu)}"
    assert backend.device_of(cpu) == "cpu", what
    assert tuple(gpu.shape) == tuple(cpu.shape), f"{what}: shape {gpu.shape} vs {cpu.shape}"
    assert gpu.dtype == cpu.dtype, f"{what}: dtype {gpu.dtype} vs {cpu.dtype}"
    err = relative_error(host(gpu), cpu)
    assert err < tol, f"{what}: relative error {err:.2e} (tolerance {tol:.0e})"


# --------------------------------------------------------------------------- #
# (a) Every functional layer: GPU against CPU, forward and backward
# --------------------------------------------------------------------------- #
# The cases are the shared table of resnet_np/layer_cases.py; the same table runs by finite
# differences on every backend in tests/test_functional.py.
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES_BY_NAME))
def test_functional_layer_on_gpu_equals_cpu(cp, name, dtype):
    tol = TOL[dtype]
    out_c, grads_c, args_c = run_case(CASES_BY_NAME[name], np, dtype)
    out_g, grads_g, args_g = run_case(CASES_BY_NAME[name], cp, dtype)
    assert isinstance(out_g, cp.ndarray)
    assert_close(out_g, out_c, tol, f"{name} output")
    assert len(grads_g) == len(grads_c)
    for i, (g, c) in enumerate(zip(grads_g, grads_c)):
        if c is None:
            assert g is None, f"{name} gradient {i}: None on the CPU, {type(g)} on the GPU"
        else:
            assert_close(g, c, tol, f"{name} gradient {i}")
    for i, (a, c) in enumerate(zip(args_g, args_c)):   # in-place updates (running stats)
        if c.dtype.kind == "f":
            assert_close(a, c, tol, f"{name} argument {i} after forward")


def test_im2col_and_col2im_on_gpu_equal_cpu(cp):
    """The strided view (cupy.lib.stride_tricks.as_strided) and its adjoint."""
    x = np.random.default_rng(5).standard_normal((2, 7, 6, 4))
    geometry = dict(R=3, S=3, stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2)
    cols = F.im2col(x, **geometry)
    cols_g = F.im2col(cp.asarray(x), **geometry)
    assert_close(cols_g, cols, 1e-15, "im2col")
    y = np.random.default_rng(6).standard_normal(cols.shape)
    assert_close(F.col2im(cp.asarray(y), x.shape, **geometry),
                 F.col2im(y, x.shape, **geometry), TOL["float64"], "col2im")


def test_max_pool_ties_route_to_the_first_maximum_on_gpu(cp):
    x = cp.asarray([[[[1.0, 3.0], [3.0, 3.0]]]])
    out, cache = F.max_pool2d_forward(x, 2, 2)
    assert float(out.ravel()[0]) == 3.0
    dx = F.max_pool2d_backward(cp.ones((1, 1, 1, 1)), cache)
    np.testing.assert_array_equal(host(dx), [[[[0.0, 1.0], [0.0, 0.0]]]])
    out, _ = F.max_pool2d_forward(-cp.ones((1, 1, 2, 2)), 3, 2, 1)   # padding is -inf
    np.testing.assert_array_equal(host(out), -np.ones((1, 1, 1, 1)))


def test_cross_entropy_rejects_bad_labels_on_gpu(cp):
    """CuPy wraps out-of-range indices around instead of raising: the check must run."""
    logits = cp.zeros((3, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        F.softmax_cross_entropy_forward(logits, cp.asarray([0, 4, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        F.softmax_cross_entropy_forward(logits, cp.asarray([0, -1, 1]))


# --------------------------------------------------------------------------- #
# (b) Finite differences on the GPU, float64: tests/test_functional.py runs every case of
#     the shared table on each backend (its ``xp`` fixture), the GPU included
# --------------------------------------------------------------------------- #
# --------------------------------------------------------------------------- #
# (c) ResNet-50 and ResNet-101 on the GPU against torchvision on CUDA
# --------------------------------------------------------------------------- #
# Each model is built once per dtype (building ResNet-101 costs more than running it) and
# reloaded from its initial weights before every run: a train-mode forward moves the
# running statistics.
_torch_models = {}   # (name, dtype, seed) -> (torchvision model on CUDA, initial state)
_torch_runs = {}     # the float64 torchvision run is the truth of the float32 test too
_our_models = {}     # (name, dtype) -> our model on the GPU


def torchvision_on_cuda(tm, name, dtype, seed=0):
    """tm.torchvision_model on CUDA, with its initial state dict as NumPy arrays."""
    key = (name, dtype, seed)
    if key not in _torch_models:
        model = tm.torchvision_model(name, dtype, seed=seed)
        state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        _torch_models[key] = model.cuda(), state
    return _torch_models[key]


def run_torchvision_cuda(tm, name, dtype, train, x, dlogits, seed=0):
    """tm.run_torchvision on CUDA: logits, input gradient, parameter gradients, buffers."""
    key = (name, dtype, train, x.shape, seed)
    if key not in _torch_runs:
        torch = tm.torch
        model, state = torchvision_on_cuda(tm, name, dtype, seed)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        model.zero_grad(set_to_none=True)
        model.train(train)
        x_t = torch.tensor(x.astype(dtype), device="cuda", requires_grad=True)
        logits = model(x_t)
        logits.backward(torch.tensor(dlogits.astype(dtype), device="cuda"))
        result = {"logits": logits, "input grad": x_t.grad}
        result.update({k: p.grad for k, p in model.named_parameters()})
        result.update(dict(model.named_buffers()))
        _torch_runs[key] = {k: v.detach().cpu().numpy() for k, v in result.items()}
        model.zero_grad(set_to_none=True)
    return _torch_runs[key]


def run_ours_gpu(cp, name, dtype, train, state, x, dlogits):
    """tm.run_ours on the GPU: the model is moved first, then loads the NumPy state dict."""
    if (name, dtype) not in _our_models:
        _our_models[name, dtype] = rn.build_model(name, num_classes=10, dtype=dtype).to("gpu")
    model = _our_models[name, dtype].train(train)
    model.zero_grad()
    model.load_state_dict(state)
    assert all(isinstance(v, cp.ndarray) for v in model.state_dict().values())
    logits = model(cp.asarray(x.astype(dtype)))
    dx = model.backward(cp.asarray(dlogits.astype(dtype)))
    result = {"logits": logits, "input grad": dx}
    result.update({k: p.grad for k, p in model.named_parameters()})
    result.update(dict(model.named_buffers()))
    for key, value in result.items():
        assert isinstance(value, cp.ndarray), f"{key} left the GPU: {type(value)}"
        if value.dtype.kind == "f":
            assert value.dtype == np.dtype(dtype), f"{key}: {value.dtype}"
    result = {k: host(v) for k, v in result.items()}
    model.zero_grad()
    return result


def compare_on_gpu(cp, tm, name, dtype, train, x_shape, seed=0):
    """tm.compare with both models on the GPU -> {tensor: (our error, allowed error)}."""
    gen = np.random.default_rng(seed)
    x = gen.standard_normal(x_shape)
    dlogits = gen.standard_normal((x_shape[0], 10))
    theirs = run_torchvision_cuda(tm, name, dtype, train, x, dlogits, seed)
    _, state = torchvision_on_cuda(tm, name, dtype, seed)
    ours = run_ours_gpu(cp, name, dtype, train, state, x, dlogits)
    assert set(ours) == set(theirs)
    tolerance = tm.TOLERANCE[dtype]
    if dtype == "float64":
        truth, allowed = theirs, {k: tolerance for k in theirs}
    else:
        truth = run_torchvision_cuda(tm, name, "float64", train, x, dlogits, seed)
        allowed = {k: max(tolerance, 2 * tm.rel_err(theirs[k], truth[k])) for k in truth}
    errors = {}
    for key in truth:
        if key.endswith("num_batches_tracked"):
            assert int(ours[key]) == int(theirs[key]), key
        else:
            errors[key] = (tm.rel_err(ours[key], truth[key]), allowed[key])
    return errors


MODEL_GRID = [(name, dtype, train) for name in ("resnet50", "resnet101")
              for dtype in ("float64", "float32") for train in (True, False)]


@pytest.mark.parametrize("name, dtype, train", MODEL_GRID)
def test_resnet_on_gpu_matches_torchvision_on_cuda(cp, tm, full_float32, name, dtype, train):
    tm.assert_close(compare_on_gpu(cp, tm, name, dtype, train, (4, 3, 67, 53)), dtype)


# --------------------------------------------------------------------------- #
# (d) Optimizer steps on CuPy parameters against NumPy ones
# --------------------------------------------------------------------------- #
OPT_SHAPES = [(3, 4), (5,), (2, 3, 2, 2), (64, 32, 3, 3)]

OPTIMIZERS = {
    "sgd": lambda p: SGD(p, lr=0.1),
    "sgd nesterov": lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "sgd dampening": lambda p: SGD(p, lr=0.05, momentum=0.9, dampening=0.5, maximize=True),
    "adam": lambda p: Adam(p, lr=0.01, weight_decay=0.1),
    "adam amsgrad": lambda p: Adam(p, lr=0.01, amsgrad=True, betas=(0.5, 0.9)),
    "adamw": lambda p: AdamW(p, lr=0.01),
}


def optimizer_run(make, xp, dtype, steps=6, seed=0):
    """``steps`` steps on fresh parameters; parameter 1 has no gradient on every third."""
    gen = np.random.default_rng(seed)
    params = [Parameter(xp.asarray(gen.standard_normal(s).astype(dtype))) for s in OPT_SHAPES]
    opt = make(params)
    grad_gen = np.random.default_rng(seed + 1)
    for step in range(steps):
        grads = [grad_gen.standard_normal(s).astype(dtype) for s in OPT_SHAPES]
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if (i == 1 and step % 3 == 1) else xp.asarray(g)
        opt.step()
    return params, opt


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_step_on_gpu_equals_cpu(cp, name, dtype):
    params_c, _ = optimizer_run(OPTIMIZERS[name], np, dtype)
    params_g, opt_g = optimizer_run(OPTIMIZERS[name], cp, dtype)
    for i, (g, c) in enumerate(zip(params_g, params_c)):
        assert_close(g.data, c.data, TOL[dtype], f"{name} parameter {i}")
    for state in opt_g.state.values():
        for key, value in state.items():
            if key != "step":
                assert isinstance(value, cp.ndarray), key
                assert value.dtype == np.dtype(dtype), key


def test_optimizer_state_dict_moves_between_devices(cp):
    """GPU state saved, loaded into a CPU and a GPU optimizer: both continue identically."""
    make = OPTIMIZERS["adam amsgrad"]
    params_g, opt_g = optimizer_run(make, cp, "float64", steps=3)
    saved = opt_g.state_dict()
    assert all(isinstance(v, cp.ndarray) for s in saved["state"].values()
               for k, v in s.items() if k != "step")
    params_c = [Parameter(host(p.data)) for p in params_g]
    params_g2 = [Parameter(p.data.copy()) for p in params_g]
    opt_c, opt_g2 = make(params_c), make(params_g2)
    opt_c.load_state_dict(saved)
    opt_g2.load_state_dict(saved)
    assert all(isinstance(v, np.ndarray) for s in opt_c.state.values()
               for k, v in s.items() if k != "step")
    grads = [np.random.default_rng(9).standard_normal(s) for s in OPT_SHAPES]
    for p_c, p_g, g in zip(params_c, params_g2, grads):
        p_c.grad, p_g.grad = g, cp.asarray(g)
    opt_c.step()
    opt_g2.step()
    for i, (g, c) in enumerate(zip(params_g2, params_c)):
        assert_close(g.data, c.data, TOL["float64"], f"parameter {i} after the resumed step")


# --------------------------------------------------------------------------- #
# (e) Training on the GPU
# --------------------------------------------------------------------------- #
def test_short_training_run_stays_on_gpu_and_lowers_the_loss(cp, monkeypatch):
    """Six SGD steps of ResNet-18 (CIFAR stem) on 16 separable 32x32 images, float32
    (16x16 on the CuPy stand-in, whose kernels run on a CPU emulation)."""
    rn.manual_seed(0)
    model = rn.resnet18(num_classes=4, cifar_stem=True).to("gpu").train()
    gen = np.random.default_rng(0)
    labels = np.arange(16) % 4
    size = 16 if backend.uses_standin() else 32
    patterns = gen.standard_normal((4, 3, size, size))
    x = cp.asarray((patterns[labels] + 0.5 * gen.standard_normal((16, 3, size, size)))
                   .astype(np.float32))
    y = cp.asarray(labels)
    criterion = rn.nn.CrossEntropyLoss()
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def no_host_copy(*args, **kwargs):
        raise AssertionError("an array was copied to the host during training")

    losses = []
    with monkeypatch.context() as patch:      # the library's one route to the host
        patch.setattr(backend, "to_numpy", no_host_copy)
        patch.setattr(cp, "asnumpy", no_host_copy)
        for _ in range(6):
            opt.zero_grad()
            loss = criterion(model(x), y)
            assert isinstance(loss, cp.ndarray)
            losses.append(loss)              # kept on the device: no sync per step
            assert model.backward(criterion.backward(), input_grad=False) is None
            opt.step()
    losses = [float(loss) for loss in losses]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.5 * losses[0], losses
    assert isinstance(model.fc.weight.data, cp.ndarray)
    assert model.device == "gpu"
    for name, p in model.named_parameters():
        assert isinstance(p.data, cp.ndarray) and p.data.dtype == np.float32, name
        assert isinstance(p.grad, cp.ndarray) and p.grad.dtype == np.float32, name
    for name, b in model.named_buffers():
        assert isinstance(b, cp.ndarray), name
    assert int(model.bn1.num_batches_tracked) == 6
    for state in opt.state.values():
        assert isinstance(state["momentum_buffer"], cp.ndarray)


def test_training_steps_on_gpu_equal_cpu(cp):
    """Three SGD steps in float64 from the same weights end at the same weights."""
    def train(device):
        rn.manual_seed(1)
        model = rn.resnet18(num_classes=10, cifar_stem=True, dtype="float64").to(device).train()
        xp = backend.array_module_for(device)
        gen = np.random.default_rng(2)
        x = xp.asarray(gen.standard_normal((4, 3, 16, 16)))
        y = xp.asarray(gen.integers(0, 10, size=4))
        criterion = rn.nn.CrossEntropyLoss(label_smoothing=0.1)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        losses = []
        for _ in range(3):
            opt.zero_grad()
            losses.append(float(criterion(model(x), y)))
            model.backward(criterion.backward(), input_grad=False)
            opt.step()
        return model, losses

    model_g, losses_g = train("gpu")
    model_c, losses_c = train("cpu")
    np.testing.assert_allclose(losses_g, losses_c, rtol=1e-10)
    state_c = model_c.state_dict()
    for key, value in model_g.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert int(value) == int(state_c[key]) == 3
        else:
            assert_close(value, state_c[key], 1e-8, key)


# --------------------------------------------------------------------------- #
# (f) Devices: round trips, loading state, wrong-device inputs
# --------------------------------------------------------------------------- #
def test_to_gpu_and_back_round_trip(cp):
    rn.manual_seed(0)
    model = rn.resnet18(num_classes=10).train()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = model(x)                                  # moves the running statistics
    model.backward(np.ones_like(out))               # and gives every parameter a .grad
    state = {k: v.copy() for k, v in model.state_dict().items()}
    grads = {k: p.grad.copy() for k, p in model.named_parameters()}

    assert model.to("gpu") is model
    assert model.device == "gpu"
    for key, value in model.state_dict().items():
        assert isinstance(value, cp.ndarray), key
        assert value.dtype == state[key].dtype, key
        np.testing.assert_array_equal(host(value), state[key], err_msg=key)
    for key, p in model.named_parameters():
        assert isinstance(p.grad, cp.ndarray), key
        np.testing.assert_array_equal(host(p.grad), grads[key], err_msg=key)
    with pytest.raises(RuntimeError, match="backward called without a forward"):
        model.backward(cp.ones((2, 10), np.float32))   # .to() dropped the CPU caches

    model.eval()
    out_gpu = model(cp.asarray(x))
    model.to("cpu")
    assert model.device == "cpu"
    for key, value in model.state_dict().items():
        assert isinstance(value, np.ndarray), key
        assert value.dtype == state[key].dtype, key
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    assert all(isinstance(p.grad, np.ndarray) for p in model.parameters())
    assert_close(out_gpu, model(x), TOL["float32"], "eval logits, GPU against CPU")

    model.to("cuda:0")                              # the device's other names
    assert model.device == "gpu"
    model.to("numpy")
    assert model.device == "cpu"


def test_input_on_the_wrong_device_is_a_clear_error(cp):
    rn.manual_seed(0)
    model = rn.resnet18(num_classes=10, cifar_stem=True).eval()
    x = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(ValueError, match="input is on the gpu but the model is on the cpu"):
        model(cp.asarray(x))
    model.to("gpu")
    with pytest.raises(ValueError, match="input is on the cpu but the model is on the gpu"):
        model(x)
    assert model(cp.asarray(x)).shape == (2, 10)


def test_finite_checks_on_gpu(cp):
    rn.manual_seed(0)
    model = rn.resnet18(num_classes=10, cifar_stem=True).to("gpu").eval()
    x = cp.zeros((1, 3, 32, 32), np.float32)
    x[0, 1, 2, 3] = cp.nan
    with backend.check_finite():
        with pytest.raises(ValueError, match="contains NaN or inf"):
            model(x)


def test_load_state_dict_on_gpu_from_numpy_cupy_and_torch(cp, tm, torch_cuda):
    """A GPU model loads NumPy, CuPy, torch CPU and torch CUDA tensors to the same weights."""
    reference = tm.torchvision_model("resnet18", "float32", seed=3)
    tensors = reference.state_dict()
    numpy_state = {k: v.numpy() for k, v in tensors.items()}
    sources = {
        "numpy": numpy_state,
        "cupy": {k: cp.asarray(v) for k, v in numpy_state.items()},
        "torch cpu": tensors,
        "torch cuda": {k: v.cuda() for k, v in tensors.items()},
        "numpy float64": {k: v.astype(np.float64) if v.dtype.kind == "f" else v
                          for k, v in numpy_state.items()},   # cast to the model's dtype
    }
    for source, state in sources.items():
        model = rn.resnet18(num_classes=10).to("gpu")
        model.load_state_dict(state)
        for key, value in model.state_dict().items():
            assert isinstance(value, cp.ndarray), (source, key)
            assert value.dtype == numpy_state[key].dtype, (source, key)
            np.testing.assert_array_equal(host(value), numpy_state[key],
                                          err_msg=f"{source}: {key}")
    # a CPU model loads a GPU model's state dict (CuPy arrays) the same way
    cpu_model = rn.resnet18(num_classes=10)
    cpu_model.load_state_dict(model.state_dict())
    for key, value in cpu_model.state_dict().items():
        assert isinstance(value, np.ndarray), key
        np.testing.assert_array_equal(value, numpy_state[key], err_msg=key)


# --------------------------------------------------------------------------- #
# (g) What the GPU is asked to do: the CuPy stand-in's record
# --------------------------------------------------------------------------- #
@pytest.fixture
def standin(cp):
    if not backend.uses_standin():
        pytest.skip("reads the CuPy stand-in's record (RESNET_NP_CUPY_STANDIN=1)")
    cp.record.clear()
    return cp


def _conv_products(cp):
    return [p for p in cp.record.products if "functional/conv.py" in p.where]


@pytest.mark.parametrize("groups", [1, 2])
def test_convolution_products_are_2d_gemms(standin, groups):
    """CuPy honours TF32, and keeps float16 on tensor cores, only in 2-D products: the
    forward and both backward products of a convolution are 2-D, one per group."""
    cp = standin
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((2, 4, 7, 7)).astype(np.float32))
    w = cp.asarray(rng.standard_normal((6, 4 // groups, 3, 3)).astype(np.float32))
    out, cache = F.conv2d_forward(x, w, None, 2, 1, groups=groups)
    F.conv2d_backward(cp.ones(out.shape, np.float32), cache)
    products = _conv_products(cp)
    assert len(products) == 3 * groups, products
    assert all(p.route == "gemm" and all(len(s) == 2 for s in p.shapes) for p in products)
    from resnet_np import kernels as K
    try:
        K.set_tf32(True)
        cp.record.clear()
        F.conv2d_forward(x, w, None, 2, 1, groups=groups)
    finally:
        K.set_tf32(False)
    assert [p.compute for p in _conv_products(cp)] == ["tf32"] * groups


def test_amp_convolutions_multiply_float16_on_2d_gemms(standin):
    """--amp: every convolution product of a ResNet step takes float16 operands on a 2-D
    GEMM; none widens an im2col matrix to float32."""
    from resnet_np.amp import GradScaler, MixedPrecision
    cp = standin
    rn.manual_seed(0)
    model = rn.resnet18(num_classes=4, cifar_stem=True).to("gpu").train()
    amp = MixedPrecision(model, "float16")
    optimizer = SGD(amp.master_parameters(), lr=0.1)
    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    loss, stepped = amp.train_step(x, cp.asarray(np.array([1, 3])), rn.nn.CrossEntropyLoss(),
                                   optimizer, GradScaler(init_scale=8.0))
    products = _conv_products(cp)
    assert len(products) == 3 * 20 - 1, len(products)   # 20 convolutions, the first: no dx
    assert {p.dtypes for p in products} == {("float16", "float16")}
    assert {(p.route, p.compute) for p in products} == {("gemm", "float16 (float32 accumulation)")}
    assert stepped and np.isfinite(loss)


def _resnet_step(cp, labels, amp=False):
    """One ResNet-18 train step (forward, loss, backward, optimizer) on the GPU -> the host
    syncs it made (a list of stand-in Sync records)."""
    from resnet_np.amp import GradScaler, MixedPrecision
    rn.manual_seed(0)
    model = rn.resnet18(num_classes=4).to("gpu").train()
    criterion = rn.nn.CrossEntropyLoss()
    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    if amp:
        mp = MixedPrecision(model, "float16")
        optimizer = SGD(mp.master_parameters(), lr=0.1, momentum=0.9)
        scaler = GradScaler()
        cp.record.clear()
        mp.train_step(x, labels, criterion, optimizer, scaler)
    else:
        optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        cp.record.clear()
        optimizer.zero_grad()
        loss = criterion(model(x), labels)
        model.backward(criterion.backward(), input_grad=False)
        optimizer.step()
        assert isinstance(loss, cp.ndarray)
    return list(cp.record.syncs)


def test_a_resnet_train_step_makes_at_most_one_host_sync(standin):
    """Forward, loss, backward and SGD step of ResNet-18 on the GPU: no host sync with the
    labels given from the host (checked there), one (the labels' check) with labels on the
    device; with --amp's float16 two: the scaler's overflow check and the loss as a float."""
    cp = standin
    assert _resnet_step(cp, np.array([1, 3])) == []
    syncs = _resnet_step(cp, cp.asarray(np.array([1, 3])))
    label_checks = {"resnet_np/functional/loss.py", "resnet_np/kernels/loss.py"}  # whichever runs
    assert len(syncs) == 1 and syncs[0].where.split(":")[0] in label_checks, syncs
    syncs = _resnet_step(cp, np.array([1, 3]), amp=True)
    assert [(s.kind, s.where.split(":")[0]) for s in syncs] == [
        ("bool", "resnet_np/amp.py"), ("float", "resnet_np/amp.py")], syncs


def test_a_train_step_of_the_command_makes_one_host_sync(standin, tmp_path, monkeypatch):
    """`resnet-np train --device gpu`: each step copies the loss and the count of right
    answers to the host together, once; the labels are checked on the host, before they
    move, and the logits never leave the device."""
    from resnet_np.cli import main
    from resnet_np.training import trainer as trainer_module
    cp, per_step, step = standin, [], trainer_module.Trainer._step

    def counted(self, x, y):
        cp.record.clear()
        result = step(self, x, y)
        per_step.append([f"{s.kind} {s.where.split(':')[0]}" for s in cp.record.syncs])
        return result
    monkeypatch.setattr(trainer_module.Trainer, "_step", counted)
    main(["train", "--device", "gpu", "--limit", "32", "--test-limit", "8", "--batch-size", "16",
          "--image-size", "8", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")])
    assert len(per_step) == 2, per_step
    assert all(syncs == ["asnumpy resnet_np/training/trainer.py"] for syncs in per_step), per_step


def test_class_weights_on_the_device_stay_there(standin):
    """CrossEntropyLoss(weight=...) with the weights on the device: no round trip through
    the host, so no sync, each step."""
    cp = standin
    logits = cp.asarray(np.random.default_rng(0).standard_normal((4, 3)))
    criterion = rn.nn.CrossEntropyLoss(weight=cp.asarray(np.array([1.0, 2.0, 0.5])))
    cp.record.clear()
    loss = criterion(logits, np.array([0, 2, 1, 1]))
    criterion.backward()
    assert cp.record.syncs == []
    expected, _ = F.softmax_cross_entropy_forward(logits.get(), np.array([0, 2, 1, 1]),
                                                  weight=np.array([1.0, 2.0, 0.5]))
    np.testing.assert_allclose(loss.get(), expected, rtol=1e-12)


def test_train_command_on_the_gpu_ends_at_the_cpu_weights(cp, tmp_path):
    """`resnet-np train --device gpu --dtype float64` (on the stand-in in CI) against the
    same run on the CPU: a few steps on the built-in digits end at the same weights."""
    import os
    import subprocess
    import sys
    from resnet_np.training import load_checkpoint
    pytest.importorskip("sklearn", reason="the digits come with scikit-learn")
    weights = {}
    for device in ("cpu", "gpu"):
        out = tmp_path / device
        command = [sys.executable, "-m", "resnet_np", "train", "--dataset", "digits",
                   "--limit", "32", "--test-limit", "16", "--batch-size", "16",
                   "--image-size", "8", "--epochs", "1", "--dtype", "float64",
                   "--no-augment", "--no-progress", "--device", device, "--out", str(out)]
        result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
        assert result.returncode == 0, result.stderr
        saved = load_checkpoint(out / "last.npz")
        assert saved.config["device"] == device and saved.config["dtype"] == "float64"
        weights[device] = saved.model_state
    assert weights["gpu"].keys() == weights["cpu"].keys()
    moved = 0
    for key, value in weights["cpu"].items():
        np.testing.assert_allclose(weights["gpu"][key], value, rtol=0, atol=1e-10, err_msg=key)
        moved += key.endswith("running_mean") and bool(np.abs(value).max() > 0)
    assert moved > 0                         # the runs trained: running statistics moved
