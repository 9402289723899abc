"""``Optimizer``: the bookkeeping every optimizer shares.

An optimizer keeps its parameters in ``param_groups``, a list of dicts that
pair a list of Parameters with the hyper-parameters used to update them, and
a per-parameter ``state`` dict (momentum buffers, moment estimates) created on
the first step at which the parameter has a gradient. Both follow
``torch.optim``'s layout, so ``group["lr"]`` is what a schedule changes and a
state dict refers to parameters by their index.

A subclass supplies its defaults and two methods: ``_check_group`` validates
one group's hyper-parameters and ``_update`` applies one step to one
parameter. Hyper-parameters are Python floats and every update is written
with array operations on the parameter's own array module, so a step on CuPy
arrays stays on the GPU.
"""
import math
import numbers

import numpy as np

from .. import backend
from ..nn.module import Parameter, weights_changed


class Optimizer:
    """Base class: parameter groups, per-parameter state, step and state dicts.

    Parameters
    ----------
    params : iterable of Parameter, or iterable of dict
        The parameters to optimise, or torch-style groups
        ``{"params": [...], "lr": ...}`` whose missing keys take the defaults.
    defaults : dict
        The hyper-parameters of a group that does not set them.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        for group in self._as_groups(params):
            self.add_param_group(group)

    def _as_groups(self, params):
        if isinstance(params, Parameter):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of "
                            "Parameters or of dicts, got a single Parameter (wrap it in a list)")
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if all(isinstance(p, dict) for p in params):
            return params
        return [{"params": params}]

    def add_param_group(self, group):
        """Add a group ``{"params": [...], **hyper_parameters}``; missing keys take defaults."""
        group = dict(group)
        params = group.get("params")
        params = [params] if isinstance(params, Parameter) else list(params or [])
        if not params:
            raise ValueError(f"{type(self).__name__}: a parameter group has "
                             "an empty parameter list")
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: expected Parameters, "
                                f"got {type(p).__name__}")
        seen = {p for g in self.param_groups for p in g["params"]}
        if len(set(params)) != len(params) or seen.intersection(params):
            raise ValueError(f"{type(self).__name__}: a parameter appears more than once "
                             "in the parameter groups")
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        """Raise a ValueError for an invalid hyper-parameter of ``group`` (subclasses extend)."""
        lr = group["lr"]
        if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"{type(self).__name__}: invalid learning rate {lr!r}: "
                             "lr must be a finite number >= 0")

    def _check_non_negative(self, group, name):
        if not group[name] >= 0:  # also rejects NaN
            raise ValueError(f"{type(self).__name__}: invalid {name} {group[name]!r}: "
                             f"{name} must be >= 0")

    # ------------------------------------------------------------------ step
    def zero_grad(self):
        """Forget every gradient (set to None, as torch's default does)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        """Update every parameter that has a gradient; one without (None) is left alone."""
        weights_changed()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.shape != p.data.shape:
                    raise ValueError(f"{type(self).__name__}: gradient of shape "
                                     f"{tuple(p.grad.shape)} for a parameter of shape "
                                     f"{tuple(p.data.shape)}")
                self._update(p, p.grad, self.state.setdefault(p, {}), group)

    def _update(self, param, grad, state, group):
        """Apply one step to ``param.data`` in place (subclasses implement)."""
        raise NotImplementedError(f"{type(self).__name__}._update")

    # ------------------------------------------------------------------ state
    def _indexed_params(self):
        """Every parameter with its index: the numbering of torch's state dicts."""
        params = [p for group in self.param_groups for p in group["params"]]
        return {p: i for i, p in enumerate(params)}

    def state_dict(self):
        """A snapshot of the state: ``{"state": {index: {...}}, "param_groups": [...]}``.

        Parameters are referred to by their index across the groups, as in
        torch. State arrays are copied (later steps update the live ones in
        place) and stay NumPy or CuPy arrays, like the parameters they belong to.
        """
        index = self._indexed_params()
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index[p] for p in group["params"]]
            groups.append(packed)
        state = {index[p]: {k: _copy(v) for k, v in s.items()} for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by :meth:`state_dict`.

        Arrays are copied into the dtype and onto the device of the parameter
        they belong to. Nothing changes unless the whole state dict fits.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state dict has "
                             f"{len(saved_groups)} parameter groups, the optimizer "
                             f"{len(self.param_groups)}")
        by_index = {}
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{type(self).__name__}.load_state_dict: parameter group {i} "
                                 f"has {len(saved['params'])} parameters in the state dict, "
                                 f"{len(group['params'])} in the optimizer")
            by_index.update(zip(saved["params"], group["params"]))

        state = {}
        for index, saved_state in state_dict["state"].items():
            if index not in by_index:
                raise ValueError(f"{type(self).__name__}.load_state_dict: state for "
                                 f"parameter {index}, which no group holds")
            param = by_index[index]
            state[param] = {key: _load_value(value, param, f"parameter {index} {key!r}")
                            for key, value in saved_state.items()}

        new_groups = [{**saved, "params": group["params"]}
                      for saved, group in zip(saved_groups, self.param_groups)]
        for group in new_groups:
            self._check_group(group)
        # Update the group dicts in place: a schedule may hold them.
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self.state = state

    def __repr__(self):
        lines = [f"{type(self).__name__}("]
        for i, group in enumerate(self.param_groups):
            settings = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} parameters, {settings}")
        return "\n".join(lines) + "\n)"


def _copy(value):
    """A copy of a state array; numbers (the step count) are immutable already."""
    return value if isinstance(value, numbers.Number) else value.copy()


def _load_value(value, param, where):
    """``value`` as state for ``param``: a number as is, an array as a copy on its device."""
    if isinstance(value, numbers.Number):
        return value
    if tuple(value.shape) != tuple(param.data.shape):
        raise ValueError(f"load_state_dict: {where} has shape {tuple(value.shape)}, "
                         f"the parameter {tuple(param.data.shape)}")
    xp = backend.get_array_module(param.data)
    if xp is np or backend.get_array_module(value) is np:
        value = backend.to_numpy(value)  # from CuPy or torch to the host first
    return xp.array(value, dtype=param.data.dtype)
