"""Optimizers and learning-rate schedules against ``torch.optim``.

The optimizers run ten steps on float64 parameters of several shapes, fed the
same random gradients as torch's single-tensor implementations; one parameter
has no gradient on some steps. The schedules are compared epoch by epoch.
"""
import itertools
import math

import numpy as np
import pytest
from reference import torch

import resnet_np.optim
from resnet_np import backend
from resnet_np.nn.module import Parameter
from resnet_np.optim import (SGD, Adam, AdamW, CosineAnnealingLR, LinearLR, MultiStepLR,
                             Optimizer, SequentialLR, StepLR, build_schedule)

SHAPES = [(3, 4), (5,), (2, 3, 2, 2)]
STEPS = 10
RTOL = 1e-10


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def initial_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for shape in SHAPES]


def gradients(rng, step):
    """Random gradients; parameter 1 has none on every third step (skipped, as in torch)."""
    grads = [rng.standard_normal(shape) for shape in SHAPES]
    if step % 3 == 1:
        grads[1] = None
    return grads


def set_grads(params, grads, to_array=np.array):
    for p, g in zip(params, grads):
        p.grad = None if g is None else to_array(g)


def set_torch_grads(tensors, grads):
    for t, g in zip(tensors, grads):
        t.grad = None if g is None else torch.from_numpy(g.copy())


def assert_params_equal(ours, theirs, step):
    for i, (p, t) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(backend.to_numpy(p.data), t.detach().numpy(), rtol=RTOL,
                                   atol=0, err_msg=f"parameter {i} after step {step}")


def compare_with_torch(make_ours, make_torch, xp=np):
    """Run ours and torch's optimizer side by side; parameters must agree after every step."""
    arrays = initial_arrays()
    ours = [Parameter(xp.asarray(a.copy())) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt, topt = make_ours(ours), make_torch(theirs)
    rng = np.random.default_rng(1)
    for step in range(STEPS):
        grads = gradients(rng, step)
        set_grads(ours, grads, to_array=xp.asarray)
        set_torch_grads(theirs, grads)
        opt.step()
        topt.step()
        assert_params_equal(ours, theirs, step)
    return opt


def valid_sgd(momentum, dampening, nesterov):
    return not nesterov or (momentum > 0 and dampening == 0)


SGD_GRID = [dict(lr=lr, momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
            for lr, m, d, n, wd, mx in itertools.product(
                (0.1, 0.01), (0.0, 0.9), (0.0, 0.5), (False, True), (0.0, 1e-2), (False, True))
            if valid_sgd(m, d, n)]

ADAM_GRID = [dict(lr=lr, betas=b, weight_decay=wd, amsgrad=a, maximize=mx)
             for lr, b, wd, a, mx in itertools.product(
                 (1e-3, 0.1), ((0.9, 0.999), (0.5, 0.9)), (0.0, 0.1), (False, True),
                 (False, True))]


def ids(grid):
    return ["-".join(f"{k}={v}" for k, v in kwargs.items()) for kwargs in grid]


# --------------------------------------------------------------------------- #
# Updates equal torch's
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kwargs", SGD_GRID, ids=ids(SGD_GRID))
def test_sgd_matches_torch(kwargs):
    compare_with_torch(lambda p: SGD(p, **kwargs),
                       lambda t: torch.optim.SGD(t, foreach=False, **kwargs))


@pytest.mark.parametrize("kwargs", ADAM_GRID, ids=ids(ADAM_GRID))
def test_adam_matches_torch(kwargs):
    compare_with_torch(lambda p: Adam(p, **kwargs),
                       lambda t: torch.optim.Adam(t, foreach=False, **kwargs))


@pytest.mark.parametrize("kwargs", ADAM_GRID, ids=ids(ADAM_GRID))
def test_adamw_matches_torch(kwargs):
    compare_with_torch(lambda p: AdamW(p, **kwargs),
                       lambda t: torch.optim.AdamW(t, foreach=False, **kwargs))


def test_adamw_default_weight_decay_matches_torch():
    compare_with_torch(lambda p: AdamW(p, lr=0.1),
                       lambda t: torch.optim.AdamW(t, lr=0.1, foreach=False))


def test_param_groups_with_own_hyper_parameters_match_torch():
    def groups(params):
        return [{"params": params[:2], "lr": 0.05, "momentum": 0.5},
                {"params": params[2:], "weight_decay": 0.1}]

    compare_with_torch(lambda p: SGD(groups(p), lr=0.1, momentum=0.9),
                       lambda t: torch.optim.SGD(groups(t), lr=0.1, momentum=0.9, foreach=False))
    def adam_groups(params):
        return [{"params": params[:2], "amsgrad": True}, {"params": params[2:], "lr": 0.1}]

    compare_with_torch(lambda p: Adam(adam_groups(p), weight_decay=0.1),
                       lambda t: torch.optim.Adam(adam_groups(t), weight_decay=0.1, foreach=False))


@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("make_ours, make_torch", [
    (lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
     lambda t: torch.optim.SGD(t, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2,
                               foreach=False)),
    (lambda p: Adam(p, lr=0.1, amsgrad=True, weight_decay=0.1),
     lambda t: torch.optim.Adam(t, lr=0.1, amsgrad=True, weight_decay=0.1, foreach=False)),
    (lambda p: AdamW(p, lr=0.1), lambda t: torch.optim.AdamW(t, lr=0.1, foreach=False)),
], ids=["sgd", "adam", "adamw"])
def test_cupy_parameters_match_torch_and_state_stays_on_gpu(make_ours, make_torch):
    cp = backend.require_gpu()
    opt = compare_with_torch(make_ours, make_torch, xp=cp)
    for state in opt.state.values():
        for key, value in state.items():
            if key != "step":
                assert isinstance(value, cp.ndarray), key


@pytest.mark.parametrize("make", [
    lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda p: Adam(p, lr=0.1, weight_decay=0.1, amsgrad=True),
    lambda p: AdamW(p, lr=0.1),
], ids=["sgd", "adam", "adamw"])
def test_float32_parameters_stay_float32(make):
    params = [Parameter(a.astype(np.float32)) for a in initial_arrays()]
    opt = make(params)
    set_grads(params, [np.ones(s, np.float32) for s in SHAPES])
    opt.step()
    opt.step()
    assert all(p.data.dtype == np.float32 for p in params)
    assert all(v.dtype == np.float32 for s in opt.state.values() for k, v in s.items()
               if k != "step")


# --------------------------------------------------------------------------- #
# Bookkeeping
# --------------------------------------------------------------------------- #
def test_parameter_without_gradient_is_untouched_and_has_no_state():
    params = [Parameter(a) for a in initial_arrays()]
    before = params[1].data.copy()
    opt = Adam(params, lr=0.1, weight_decay=0.1)
    set_grads(params, [np.ones(SHAPES[0]), None, np.ones(SHAPES[2])])
    opt.step()
    np.testing.assert_array_equal(params[1].data, before)
    assert params[1] not in opt.state and params[0] in opt.state


def test_step_does_not_modify_gradients():
    # The momentum buffer must not alias the gradient, nor the update change it.
    params = [Parameter(a) for a in initial_arrays()]
    opt = SGD(params, lr=0.1, momentum=0.9)
    set_grads(params, [np.ones(s) for s in SHAPES])
    opt.step()
    opt.step()
    assert all(np.array_equal(p.grad, np.ones(p.shape)) for p in params)
    params[0].grad += 1.0  # accumulating in place into the gradient...
    np.testing.assert_allclose(opt.state[params[0]]["momentum_buffer"], 1.9)  # ...keeps the buffer


def test_zero_grad_sets_gradients_to_none():
    params = [Parameter(a) for a in initial_arrays()]
    opt = SGD(params, lr=0.1)
    set_grads(params, [np.ones(s) for s in SHAPES])
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_param_groups_take_defaults_like_torch():
    params = [Parameter(a) for a in initial_arrays()]
    opt = SGD([{"params": params[:1], "lr": 0.5}, {"params": params[1:]}], lr=0.1, momentum=0.9)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[1]["lr"] == 0.1
    assert opt.param_groups[0]["momentum"] == 0.9
    assert [len(g["params"]) for g in opt.param_groups] == [1, 2]


def test_state_dict_layout_matches_torch():
    arrays = initial_arrays()
    params = [Parameter(a.copy()) for a in arrays]
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = Adam([{"params": params[:1]}, {"params": params[1:]}], amsgrad=True)
    topt = torch.optim.Adam([{"params": tensors[:1]}, {"params": tensors[1:]}], amsgrad=True)
    set_grads(params, [np.ones(s) for s in SHAPES])
    set_torch_grads(tensors, [np.ones(s) for s in SHAPES])
    opt.step()
    topt.step()
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert ([g["params"] for g in ours["param_groups"]]
            == [g["params"] for g in theirs["param_groups"]])
    assert ours["state"].keys() == theirs["state"].keys()
    for index in ours["state"]:
        assert ours["state"][index].keys() == theirs["state"][index].keys()


def run_steps(opt, params, rng, steps, first_step=0):
    for step in range(first_step, first_step + steps):
        set_grads(params, gradients(rng, step))
        opt.step()


@pytest.mark.parametrize("make", [
    lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.3),
    lambda p: Adam(p, lr=0.1, weight_decay=0.1, amsgrad=True),
    lambda p: AdamW(p, lr=0.1, betas=(0.5, 0.9)),
], ids=["sgd-nesterov", "sgd-dampening", "adam-amsgrad", "adamw"])
def test_state_dict_round_trip_equals_uninterrupted_run(make):
    uninterrupted = [Parameter(a) for a in initial_arrays()]
    run_steps(make(uninterrupted), uninterrupted, np.random.default_rng(1), 10)

    params = [Parameter(a) for a in initial_arrays()]
    rng = np.random.default_rng(1)
    first = make(params)
    run_steps(first, params, rng, 5)
    saved = first.state_dict()
    resumed_params = [Parameter(p.data.copy()) for p in params]
    resumed = make(resumed_params)
    for group in resumed.param_groups:
        group["lr"] = 123.0  # the loaded hyper-parameters must replace this
    resumed.load_state_dict(saved)
    run_steps(resumed, resumed_params, rng, 5, first_step=5)
    for p, q in zip(resumed_params, uninterrupted):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_is_a_snapshot_and_loading_copies():
    params = [Parameter(a) for a in initial_arrays()]
    opt = SGD(params, lr=0.1, momentum=0.9)
    set_grads(params, [np.ones(s) for s in SHAPES])
    opt.step()
    saved = opt.state_dict()
    opt.step()
    np.testing.assert_array_equal(saved["state"][0]["momentum_buffer"], np.ones(SHAPES[0]))
    opt.load_state_dict(saved)
    opt.step()
    np.testing.assert_array_equal(saved["state"][0]["momentum_buffer"], np.ones(SHAPES[0]))


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #
def one_param():
    return [Parameter(np.zeros(3))]


INVALID_HYPER_PARAMETERS = [
    (lambda: SGD([], lr=0.1), "empty parameter list"),
    (lambda: Adam(iter([])), "empty parameter list"),
    (lambda: SGD([{"params": []}], lr=0.1), "empty parameter list"),
    (lambda: SGD(one_param(), lr=-0.1), "invalid learning rate"),
    (lambda: SGD(one_param(), lr=float("nan")), "invalid learning rate"),
    (lambda: Adam(one_param(), lr=float("inf")), "invalid learning rate"),
    (lambda: SGD(one_param(), lr=0.1, momentum=-0.9), "invalid momentum"),
    (lambda: SGD(one_param(), lr=0.1, weight_decay=-1e-4), "invalid weight_decay"),
    (lambda: SGD(one_param(), lr=0.1, nesterov=True), "Nesterov momentum needs"),
    (lambda: SGD(one_param(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "Nesterov momentum needs"),
    (lambda: Adam(one_param(), betas=(-0.1, 0.999)), "invalid beta 0"),
    (lambda: Adam(one_param(), betas=(1.0, 0.999)), "invalid beta 0"),
    (lambda: AdamW(one_param(), betas=(0.9, 1.0)), "invalid beta 1"),
    (lambda: Adam(one_param(), betas=(0.9,)), "betas must be a pair"),
    (lambda: Adam(one_param(), eps=0.0), "invalid eps"),
    (lambda: Adam(one_param(), eps=-1e-8), "invalid eps"),
    (lambda: Adam(one_param(), weight_decay=-0.1), "invalid weight_decay"),
    (lambda: AdamW([{"params": one_param(), "lr": -1.0}]), "invalid learning rate"),
    (lambda: SGD([{"params": one_param(), "nesterov": True}], lr=0.1), "Nesterov"),
]


@pytest.mark.parametrize("make, match", INVALID_HYPER_PARAMETERS,
                         ids=[match for _, match in INVALID_HYPER_PARAMETERS])
def test_invalid_hyper_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_invalid_parameter_arguments_raise():
    p = Parameter(np.zeros(3))
    with pytest.raises(TypeError, match="got a single Parameter"):
        SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="expected Parameters, got ndarray"):
        SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="appears more than once"):
        SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="appears more than once"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def test_gradient_of_wrong_shape_raises():
    params = one_param()
    opt = SGD(params, lr=0.1)
    params[0].grad = np.zeros(4)
    with pytest.raises(ValueError, match=r"gradient of shape \(4,\) for a parameter of shape"):
        opt.step()


def test_load_state_dict_that_does_not_fit_raises():
    params = [Parameter(a) for a in initial_arrays()]
    opt = SGD(params, lr=0.1, momentum=0.9)
    set_grads(params, [np.ones(s) for s in SHAPES])
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="has 1 parameter groups, the optimizer 2"):
        SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="group 0 has 3 parameters in the state dict, 2"):
        SGD(params[:2], lr=0.1).load_state_dict(saved)
    swapped = [Parameter(a) for a in reversed(initial_arrays())]
    fresh = SGD(swapped, lr=0.5, momentum=0.9)
    with pytest.raises(ValueError, match=r"parameter 0 'momentum_buffer' has shape \(3, 4\)"):
        fresh.load_state_dict(saved)
    assert fresh.state == {} and fresh.param_groups[0]["lr"] == 0.5  # left unchanged
    bad = opt.state_dict()
    bad["param_groups"][0]["momentum"] = -1.0
    with pytest.raises(ValueError, match="invalid momentum"):
        opt.load_state_dict(bad)


# --------------------------------------------------------------------------- #
# Learning-rate schedules
# --------------------------------------------------------------------------- #
EPOCHS = 30
BASE_LRS = (0.1, 0.05)


def lrs_per_epoch(optimizer, scheduler, epochs=EPOCHS):
    """The learning rates of each epoch, checking the optimizer's groups carry them."""
    history = []
    for _ in range(epochs):
        lrs = scheduler.get_last_lr()
        assert lrs == [group["lr"] for group in optimizer.param_groups]
        history.append(lrs)
        optimizer.step()
        scheduler.step()
    return np.array(history)


def our_optimizer():
    return SGD([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in BASE_LRS], lr=1.0)


def torch_optimizer():
    return torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": lr}
                            for lr in BASE_LRS], lr=1.0)


def assert_schedules_agree(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-16)


# Each entry builds a schedule from ``s``: resnet_np.optim or torch.optim.lr_scheduler.
SCHEDULES = {
    "step": lambda o, s: s.StepLR(o, step_size=7, gamma=0.3),
    "step-1": lambda o, s: s.StepLR(o, step_size=1, gamma=0.8),
    "multistep": lambda o, s: s.MultiStepLR(o, milestones=[20, 5, 12, 12], gamma=0.5),
    "cosine": lambda o, s: s.CosineAnnealingLR(o, T_max=EPOCHS),
    "cosine-restart": lambda o, s: s.CosineAnnealingLR(o, T_max=7, eta_min=0.001),
    "linear": lambda o, s: s.LinearLR(o),
    "linear-decay": lambda o, s: s.LinearLR(o, start_factor=0.9, end_factor=0.2, total_iters=12),
    "warmup-cosine": lambda o, s: s.SequentialLR(
        o, [s.LinearLR(o, start_factor=0.1, total_iters=5), s.CosineAnnealingLR(o, T_max=25)],
        milestones=[5]),
    "warmup-step-cosine": lambda o, s: s.SequentialLR(
        o, [s.LinearLR(o, start_factor=0.2, total_iters=4), s.StepLR(o, step_size=3, gamma=0.5),
            s.CosineAnnealingLR(o, T_max=10, eta_min=0.01)], milestones=[4, 13]),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_matches_torch(name):
    opt, topt = our_optimizer(), torch_optimizer()
    ours = lrs_per_epoch(opt, SCHEDULES[name](opt, resnet_np.optim))
    theirs = lrs_per_epoch(topt, SCHEDULES[name](topt, torch.optim.lr_scheduler))
    assert_schedules_agree(ours, theirs)


def test_schedule_last_epoch_counts_steps():
    opt = our_optimizer()
    scheduler = StepLR(opt, step_size=2)
    assert scheduler.last_epoch == 0
    scheduler.step()
    scheduler.step()
    assert scheduler.last_epoch == 2
    assert scheduler.get_last_lr() == pytest.approx([0.01, 0.005])
    assert [g["initial_lr"] for g in opt.param_groups] == list(BASE_LRS)


def torch_equivalent_of_build_schedule(name, epochs, rate, warmup, milestones, step_size):
    """The schedule ``build_schedule`` documents, built from torch's classes."""
    opt = torch_optimizer()
    s = torch.optim.lr_scheduler
    main_epochs = epochs - warmup
    main = {
        "step": lambda: s.StepLR(opt, step_size or main_epochs // 3, gamma=rate),
        "multistep": lambda: s.MultiStepLR(
            opt, milestones or [main_epochs // 2, main_epochs * 3 // 4], gamma=rate),
        "cosine": lambda: s.CosineAnnealingLR(opt, T_max=main_epochs),
        "constant": lambda: s.LambdaLR(opt, lambda epoch: 1.0),
    }[name]
    if warmup == 0:
        return opt, main()
    warm = s.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=warmup)
    return opt, s.SequentialLR(opt, [warm, main()], milestones=[warmup])


BUILD_CASES = [(name, warmup, extra) for name in ("step", "multistep", "cosine", "constant")
               for warmup in (0, 3) for extra in (None, "explicit")
               if extra is None or name in ("step", "multistep")]


@pytest.mark.parametrize("name, warmup, extra", BUILD_CASES)
def test_build_schedule_matches_torch(name, warmup, extra):
    milestones = [4, 11] if extra and name == "multistep" else None
    step_size = 5 if extra and name == "step" else None
    opt = our_optimizer()
    ours = lrs_per_epoch(opt, build_schedule(opt, name, EPOCHS, lr_decay_rate=0.2,
                                             warmup_epochs=warmup, milestones=milestones,
                                             step_size=step_size))
    topt, tsched = torch_equivalent_of_build_schedule(name, EPOCHS, 0.2, warmup, milestones,
                                                      step_size)
    assert_schedules_agree(ours, lrs_per_epoch(topt, tsched))


def test_build_schedule_defaults_by_hand():
    def lrs(name, epochs, **kwargs):
        opt = SGD([Parameter(np.zeros(1))], lr=1.0)
        return lrs_per_epoch(opt, build_schedule(opt, name, epochs, **kwargs), epochs)[:, 0]

    np.testing.assert_allclose(lrs("step", 9), [1, 1, 1, .1, .1, .1, .01, .01, .01])
    np.testing.assert_allclose(lrs("multistep", 8), [1, 1, 1, 1, .1, .1, .01, .01])
    np.testing.assert_allclose(lrs("constant", 4), [1, 1, 1, 1])
    np.testing.assert_allclose(lrs("cosine", 4), [1, (1 + math.cos(math.pi / 4)) / 2, 0.5,
                                                  (1 + math.cos(3 * math.pi / 4)) / 2])
    np.testing.assert_allclose(lrs("constant", 5, warmup_epochs=2), [0.1, 0.55, 1, 1, 1])


SCHEDULE_ROUND_TRIPS = {
    "step": lambda o: StepLR(o, step_size=3, gamma=0.5),
    "multistep": lambda o: MultiStepLR(o, milestones=[2, 7]),
    "cosine": lambda o: CosineAnnealingLR(o, T_max=9, eta_min=0.001),
    "linear": lambda o: LinearLR(o, start_factor=0.25, total_iters=8),
    "warmup-cosine": lambda o: build_schedule(o, "cosine", 10, warmup_epochs=3),
}


@pytest.mark.parametrize("name", SCHEDULE_ROUND_TRIPS)
def test_schedule_state_dict_round_trip(name):
    make = SCHEDULE_ROUND_TRIPS[name]
    opt = our_optimizer()
    uninterrupted = lrs_per_epoch(opt, make(opt), 10)

    opt = our_optimizer()
    scheduler = make(opt)
    first = lrs_per_epoch(opt, scheduler, 5)
    saved_opt, saved_scheduler = opt.state_dict(), scheduler.state_dict()
    # As in torch: build the schedule, then load the optimizer's state, then the schedule's.
    fresh_opt = our_optimizer()
    fresh = make(fresh_opt)
    fresh_opt.load_state_dict(saved_opt)
    fresh.load_state_dict(saved_scheduler)
    assert fresh.last_epoch == 5
    second = lrs_per_epoch(fresh_opt, fresh, 5)
    np.testing.assert_array_equal(np.concatenate([first, second]), uninterrupted)


INVALID_SCHEDULES = [
    (lambda o: StepLR(object(), step_size=3), TypeError, "object is not an Optimizer"),
    (lambda o: StepLR(o, step_size=0), ValueError, "step_size must be an integer >= 1"),
    (lambda o: StepLR(o, step_size=2.5), ValueError, "step_size must be an integer >= 1"),
    (lambda o: CosineAnnealingLR(o, T_max=0), ValueError, "T_max must be an integer >= 1"),
    (lambda o: LinearLR(o, start_factor=0.0), ValueError, r"start_factor must be in \(0, 1\]"),
    (lambda o: LinearLR(o, start_factor=1.5), ValueError, r"start_factor must be in \(0, 1\]"),
    (lambda o: LinearLR(o, end_factor=1.5), ValueError, r"end_factor must be in \[0, 1\]"),
    (lambda o: LinearLR(o, end_factor=-0.1), ValueError, r"end_factor must be in \[0, 1\]"),
    (lambda o: LinearLR(o, total_iters=0), ValueError, "total_iters must be an integer >= 1"),
    (lambda o: SequentialLR(o, [], []), ValueError, "at least one scheduler"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3)], []), ValueError,
     "one milestone fewer than schedulers"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(our_optimizer(), 3)], [4]), ValueError,
     "must belong to the given optimizer"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3), StepLR(o, 4)], [5, 5]), ValueError,
     "milestones must be increasing"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3)], [0]), ValueError,
     "milestones must be increasing"),
    (lambda o: build_schedule(o, "exponential", 10), ValueError, "unknown schedule 'exponential'"),
    (lambda o: build_schedule(o, "cosine", 0), ValueError, "total_steps must be an integer >= 1"),
    (lambda o: build_schedule(o, "cosine", 10, warmup_epochs=10), ValueError,
     r"warmup_steps must be an integer in \[0, total_steps=10\)"),
    (lambda o: build_schedule(o, "cosine", 10, warmup_epochs=-1), ValueError, "warmup_steps"),
    (lambda o: build_schedule(o, "step", 10, milestones=[5]), ValueError,
     "milestones apply to the 'multistep' schedule"),
    (lambda o: build_schedule(o, "cosine", 10, step_size=2), ValueError,
     "step_size applies to the 'step' schedule"),
]


@pytest.mark.parametrize("make, error, match", INVALID_SCHEDULES,
                         ids=[match for _, _, match in INVALID_SCHEDULES])
def test_invalid_schedules_raise(make, error, match):
    with pytest.raises(error, match=match):
        make(our_optimizer())


def test_optimizer_base_needs_an_update_rule():
    opt = Optimizer([Parameter(np.zeros(2))], dict(lr=0.1))
    opt.param_groups[0]["params"][0].grad = np.zeros(2)
    with pytest.raises(NotImplementedError, match="Optimizer._update"):
        opt.step()


def test_build_schedule_counts_steps_and_keeps_its_former_names():
    def lrs(**kwargs):
        opt = SGD([Parameter(np.zeros(1))], lr=1.0)
        return lrs_per_epoch(opt, build_schedule(opt, "cosine", **kwargs), 12)[:, 0]

    np.testing.assert_array_equal(lrs(total_steps=12, warmup_steps=3),
                                  lrs(epochs=12, warmup_epochs=3))
    with pytest.raises(TypeError, match="give total_steps or its former name epochs, not both"):
        lrs(total_steps=12, epochs=12)
    with pytest.raises(TypeError, match="missing the argument 'total_steps'"):
        lrs()
    with pytest.raises(ValueError,
                       match=r"warmup_steps must be an integer in \[0, total_steps=12\)"):
        lrs(total_steps=12, warmup_steps=12)
