"""Learning-rate schedules with the semantics of ``torch.optim.lr_scheduler``.

Creating a schedule sets the learning rate of epoch 0; call ``step()`` once
per epoch, after that epoch's optimizer steps, to advance ``last_epoch`` and
write the new rate into every ``group["lr"]`` of the optimizer. The first
schedule attached to an optimizer records each group's starting rate as
``group["initial_lr"]``; every rate is derived from it.

Torch updates the previous rate recursively; here each rate is computed in
closed form from ``last_epoch`` (torch's ``_get_closed_form_lr``). The two
agree to rounding, and the closed form cannot drift. The difference is that a
rate changed by hand between steps is overwritten by the next ``step()``.
"""
import bisect
import copy
import math
import numbers

from .optimizer import Optimizer


class LRScheduler:
    """Base class: sets ``group["lr"] = lr_at(group["initial_lr"], last_epoch)`` on each step.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose learning rates the schedule sets.
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: {type(optimizer).__name__} "
                            "is not an Optimizer")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def lr_at(self, base_lr, epoch):
        """The learning rate at ``epoch`` of a group that started at ``base_lr``."""
        raise NotImplementedError(f"{type(self).__name__}.lr_at")

    def get_lr(self):
        """The learning rates of the current epoch, one per parameter group."""
        return [self.lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]

    def step(self):
        """Move to the next epoch and set its learning rates on the optimizer."""
        self.last_epoch += 1
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self):
        """The learning rates set by the last ``step()``, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """Every attribute but the optimizer, as in torch."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore the attributes saved by :meth:`state_dict` (the optimizer keeps its own lr)."""
        self.__dict__.update(copy.deepcopy(state_dict))


def _check_positive_int(scheduler, name, value):
    if not (isinstance(value, numbers.Integral) and value >= 1):
        raise ValueError(f"{type(scheduler).__name__}: {name} must be an integer >= 1, "
                         f"got {value!r}")


class StepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    .. math:: \eta_e = \eta_0 \, \gamma^{\lfloor e / \text{step\_size} \rfloor}
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        _check_positive_int(self, "step_size", step_size)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` at each milestone epoch.

    .. math:: \eta_e = \eta_0 \, \gamma^{\#\{m \in \text{milestones} : m \le e\}}

    A milestone listed twice counts twice, as in torch.
    """

    def __init__(self, optimizer, milestones, gamma=0.1):
        self.milestones = sorted(milestones)
        self.gamma = gamma
        super().__init__(optimizer)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class CosineAnnealingLR(LRScheduler):
    r"""Anneal the learning rate from its initial value to ``eta_min`` along a cosine.

    .. math::

        \eta_e = \eta_{min} + \tfrac12 (\eta_0 - \eta_{min})
                 \left(1 + \cos\frac{\pi e}{T_{max}}\right)

    The rate reaches ``eta_min`` at epoch ``T_max``; past it the cosine rises
    again, as torch's does.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0):
        _check_positive_int(self, "T_max", T_max)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer)

    def lr_at(self, base_lr, epoch):
        cosine = 1 + math.cos(math.pi * epoch / self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * cosine / 2


class LinearLR(LRScheduler):
    r"""Scale the learning rate by a factor that moves linearly: a warm-up.

    .. math::

        \eta_e = \eta_0 \left(s + (f - s)\,\frac{\min(e, T)}{T}\right)

    with ``start_factor`` :math:`s \in (0, 1]`, ``end_factor``
    :math:`f \in [0, 1]` and ``total_iters`` :math:`T \ge 1`.
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        name = type(self).__name__
        if not 0 < start_factor <= 1:
            raise ValueError(f"{name}: start_factor must be in (0, 1], got {start_factor!r}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"{name}: end_factor must be in [0, 1], got {end_factor!r}")
        _check_positive_int(self, "total_iters", total_iters)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer)

    def lr_at(self, base_lr, epoch):
        progress = min(self.total_iters, epoch) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * progress)


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after the other, switching at the ``milestones`` epochs.

    Each schedule counts its epochs from its own start: from ``milestones[i-1]``
    on, ``schedulers[i]`` gives the rate of its epoch ``e - milestones[i-1]``,
    as in torch. Typical use: a :class:`LinearLR` warm-up, then a decay.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer every one of ``schedulers`` was built on.
    schedulers : list of LRScheduler
        One more schedule than milestones.
    milestones : list of int
        Increasing epochs at which the next schedule takes over.
    """

    def __init__(self, optimizer, schedulers, milestones):
        schedulers, milestones = list(schedulers), list(milestones)
        name = type(self).__name__
        if not schedulers:
            raise ValueError(f"{name}: expects at least one scheduler")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{name}: expects one milestone fewer than schedulers, got "
                             f"{len(schedulers)} schedulers and {len(milestones)} milestones")
        if any(getattr(s, "optimizer", None) is not optimizer for s in schedulers):
            raise ValueError(f"{name}: every scheduler must belong to the given optimizer")
        if any(not a < b for a, b in zip([0] + milestones, milestones)):
            raise ValueError(f"{name}: milestones must be increasing epochs > 0, got {milestones}")
        self._schedulers = schedulers
        self._milestones = milestones
        super().__init__(optimizer)

    def lr_at(self, base_lr, epoch):
        index = bisect.bisect_right(self._milestones, epoch)
        start = self._milestones[index - 1] if index else 0
        return self._schedulers[index].lr_at(base_lr, epoch - start)

    def state_dict(self):
        """Own attributes plus each wrapped schedule's state dict, as in torch."""
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                 if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        for scheduler, saved in zip(self._schedulers, state.pop("_schedulers")):
            scheduler.load_state_dict(saved)
        self.__dict__.update(copy.deepcopy(state))


SCHEDULE_NAMES = ("step", "multistep", "cosine", "constant")


def build_schedule(optimizer, name, total_steps=None, lr_decay_rate=0.1, warmup_steps=0,
                   milestones=None, step_size=None, *, epochs=None, warmup_epochs=None):
    """The learning-rate schedule of a training run, by name.

    The schedule counts calls of its ``step()``: steps. The training command
    steps it after every batch (``total_steps`` = epochs x batches per epoch);
    a loop that steps it once per epoch passes epochs.

    Parameters
    ----------
    optimizer : Optimizer
    name : {"step", "multistep", "cosine", "constant"}
        ``step``: multiply by ``lr_decay_rate`` every ``step_size`` steps
        (default: a third of the steps after warm-up); ``multistep``: multiply
        by ``lr_decay_rate`` at each of ``milestones`` (default: at 50% and
        75% of the steps after warm-up); ``cosine``: anneal to 0 over the
        steps after warm-up; ``constant``: keep the initial rate.
    total_steps : int
        Length of the run, in calls of ``scheduler.step()``.
    lr_decay_rate : float, default 0.1
        The factor of ``step`` and ``multistep``.
    warmup_steps : int, default 0
        If > 0, first raise the rate linearly from 0.1x to 1x over this many
        steps; the named schedule then starts at step ``warmup_steps`` and
        counts its steps (``step_size``, ``milestones``) from there.
    milestones : list of int, optional
        Only for ``multistep``.
    step_size : int, optional
        Only for ``step``.
    epochs, warmup_epochs : int, optional
        The former names of ``total_steps`` and ``warmup_steps`` (the same values).

    Returns
    -------
    LRScheduler
    """
    total_steps = _renamed("total_steps", total_steps, "epochs", epochs)
    warmup_steps = _renamed("warmup_steps", warmup_steps, "warmup_epochs", warmup_epochs,
                            default=0)
    if name not in SCHEDULE_NAMES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {SCHEDULE_NAMES}")
    if not (isinstance(total_steps, numbers.Integral) and total_steps >= 1):
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if not (isinstance(warmup_steps, numbers.Integral) and 0 <= warmup_steps < total_steps):
        raise ValueError(f"warmup_steps must be an integer in [0, total_steps={total_steps}), "
                         f"got {warmup_steps!r}")
    if milestones is not None and name != "multistep":
        raise ValueError(f"milestones apply to the 'multistep' schedule, not {name!r}")
    if step_size is not None and name != "step":
        raise ValueError(f"step_size applies to the 'step' schedule, not {name!r}")

    warmup = None
    if warmup_steps > 0:
        warmup = LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warmup_steps)
    main = _main_schedule(optimizer, name, total_steps - warmup_steps, lr_decay_rate,
                          milestones, step_size)
    if warmup is None:
        return main
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def _renamed(name, value, old_name, old_value, default=None):
    """The value of a keyword given under its name or its former name (not both)."""
    if old_value is None:
        if value is None and default is None:
            raise TypeError(f"build_schedule() missing the argument {name!r}")
        return value
    if value not in (None, default):
        raise TypeError(f"build_schedule(): give {name} or its former name {old_name}, not both")
    return old_value


def _main_schedule(optimizer, name, steps, lr_decay_rate, milestones, step_size):
    """The named schedule over ``steps`` steps (those after any warm-up)."""
    if name == "step":
        if step_size is None:
            step_size = max(1, steps // 3)
        return StepLR(optimizer, step_size, gamma=lr_decay_rate)
    if name == "multistep":
        if milestones is None:
            milestones = [steps // 2, steps * 3 // 4]
        return MultiStepLR(optimizer, milestones, gamma=lr_decay_rate)
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=steps)
    # "constant": without milestones the rate never changes.
    return MultiStepLR(optimizer, [], gamma=1.0)
