"""``Module`` and ``Parameter``: the thin object layer over the functional maths.

A module's ``forward`` calls a pure ``*_forward`` function and keeps its cache;
its ``backward(dout)`` hands that cache to the matching ``*_backward`` function,
adds the parameter gradients into ``Parameter.grad`` (accumulating, as torch
does) and returns the gradient of its input. A cache is used once: a second
``backward`` without a new ``forward`` is an error, as is a ``backward`` after
a forward run under :func:`no_grad`.

Parameters, buffers and children are registered by attribute assignment, in
order, exactly like ``torch.nn.Module``, so ``state_dict()`` keys equal
torchvision's (``layer3.4.bn2.running_var``).
"""
import contextlib
import functools
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .. import backend
from ..functional._checks import describe_non_array, is_array
from ._state import (capped, has_negative, is_floating, is_numeric, kind_of, member,
                     strip_data_parallel_prefix)

_state = threading.local()      # per thread, as torch's grad mode: enabled, depth
_weights = {"version": 0}       # bumped wherever weights may change: see weights_changed()


def weights_changed():
    """Say that parameters or buffers may have changed (an optimizer step, load_state_dict,
    train()/eval(), to()): anything derived from them, such as batch norms folded into
    convolutions for inference, is computed afresh. Call it after changing ``p.data`` in
    place by hand in eval mode."""
    _weights["version"] += 1


def weights_version():
    """A number that changes whenever :func:`weights_changed` is called."""
    return _weights["version"]


@contextlib.contextmanager
def no_grad():
    """Within this context a forward keeps no caches (inference uses less memory).

    Thread-local, as torch's: inference under ``no_grad`` in one thread leaves a
    model training in another thread untouched.
    """
    old = is_grad_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = old


def is_grad_enabled():
    return getattr(_state, "enabled", True)


def check_module_input(module, x, index=0):
    """Refuse lists, tuples, numbers and torch tensors with a message that says what to do."""
    if isinstance(x, (list, tuple, int, float, complex, np.generic)) or \
            type(x).__module__.startswith("torch"):
        raise TypeError(f"{module.name} ({type(module).__name__}): input {index} is "
                        f"{describe_non_array(x)}")


class SavedForward(NamedTuple):
    """One forward's cache and the output it made (shape, dtype, device) for dout checks."""
    cache: object
    output: tuple = None


class Parameter:
    """A trainable array ``data`` and its gradient ``grad`` (None until a backward)."""

    def __init__(self, data):
        self.data = data
        self.grad = None

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def accumulate_grad(self, grad):
        """``grad`` is added to ``self.grad``: gradients accumulate until zero_grad()."""
        if grad.dtype != self.data.dtype or tuple(grad.shape) != tuple(self.data.shape):
            raise ValueError(f"gradient of dtype {grad.dtype} and shape {tuple(grad.shape)} "
                             f"for a parameter of dtype {self.data.dtype} and shape "
                             f"{tuple(self.data.shape)}")
        if self.grad is None:
            self.grad = grad
        else:
            self.grad += grad

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype})"


class Module:
    """Base class of every layer, block and model.

    Caches: each forward run with gradients on pushes its cache; each backward
    pops the latest, so a module used twice in one forward is run backward twice,
    in reverse order, its parameter gradients adding up. A forward called at the
    top level (not from inside another module's forward) starts a new pass and
    drops any cache a previous pass left unused, as torch frees an unused graph.
    A backward that raises (a dout of the wrong shape, dtype or type) puts back
    every cache it took, so a corrected retry works.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_path", "")
        object.__setattr__(self, "_caches", [])
        self.training = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "backward" in cls.__dict__:
            cls.backward = _guarded_backward(cls.__dict__["backward"])

    # ---------------------------------------------------------------- registry
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() first")
        if name in self._buffers and (value is None or hasattr(value, "dtype")):
            self.register_buffer(name, value)       # assigning to a buffer updates it, as torch
            return
        # A new value of the same kind keeps its place in the registry (as torch's).
        keep = self._parameters if isinstance(value, Parameter) else \
            self._modules if isinstance(value, Module) else None
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
            value._set_path(name if not self._path else f"{self._path}.{name}")
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A state array saved in state_dict() but not trained (running stats).

        Registering again replaces the array. ``None`` (as torch allows) keeps the
        attribute but leaves the buffer out of state_dict() and buffers().
        """
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def _set_path(self, path):
        object.__setattr__(self, "_path", path)
        for name, child in self._modules.items():
            child._set_path(f"{path}.{name}")

    @property
    def name(self):
        """Dotted path of this module inside its model, or its class name at the root."""
        return self._path or type(self).__name__

    # ------------------------------------------------------------- traversal
    def named_modules(self, prefix="", remove_duplicate=True, _seen=None):
        """(dotted name, module) of this module and every descendant.

        A module reachable by two paths is listed once (the first), as torch's
        ``remove_duplicate=True``; ``remove_duplicate=False`` lists every path.
        """
        seen = set() if _seen is None else _seen
        if remove_duplicate:
            if id(self) in seen:
                return
            seen.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name,
                                               remove_duplicate, seen)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def children(self):
        return list(self._modules.values())

    def _named_members(self, registry, prefix, remove_duplicate):
        seen = set()
        for path, module in self.named_modules(prefix, remove_duplicate):
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{path}.{name}" if path else name), value

    def named_parameters(self, prefix="", remove_duplicate=True):
        """(dotted name, Parameter); a Parameter shared by two layers is listed once."""
        return self._named_members("_parameters", prefix, remove_duplicate)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix="", remove_duplicate=True):
        return self._named_members("_buffers", prefix, remove_duplicate)

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    # ------------------------------------------------------------- modes
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        weights_changed()
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Forget every gradient (set to None, as torch's default does)."""
        for p in self.parameters():
            p.grad = None

    # ------------------------------------------------------------- state
    def _slots(self):
        """Every state_dict key -> (module, name); shared members under each of their keys."""
        slots = OrderedDict()
        for path, module in self.named_modules(remove_duplicate=False):
            for registry in (module._parameters, module._buffers):
                for name, value in registry.items():
                    if value is not None:
                        slots[f"{path}.{name}" if path else name] = (module, name)
        return slots

    def state_dict(self):
        """Parameters and buffers by dotted name, as arrays (no copies).

        As torch's: a parameter shared by two layers appears under both keys.
        """
        state = OrderedDict()
        for key, (module, name) in self._slots().items():
            value = module._parameters.get(name)
            state[key] = module._buffers[name] if value is None else value.data
        return state

    def describe_state_dict(self, state_dict):
        """A hint on what ``state_dict`` holds, for load errors (models override it)."""
        return None

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (NumPy, CuPy or torch tensors) into parameters and buffers.

        Values are cast to each parameter's dtype and moved to its device.
        With ``strict`` (the default), missing keys, unexpected keys and shape
        mismatches are all listed in one ``KeyError``-free ``ValueError`` (the
        first few of each and how many more); shape mismatches and non-numeric
        values are errors even when ``strict=False``, as are integer or boolean
        values for a floating-point parameter or buffer and a negative
        ``running_var``. A checkpoint saved from a ``DataParallel`` wrapper
        (every key starts with ``module.``) loads with that prefix stripped.
        Returns ``(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{type(self).__name__}.load_state_dict: expected a state_dict "
                            "(a mapping of parameter names to arrays), got "
                            f"{type(state_dict).__name__}")
        weights_changed()
        slots = self._slots()
        state_dict = strip_data_parallel_prefix(state_dict, slots)
        missing = [k for k in slots if k not in state_dict]
        unexpected = [k for k in state_dict if k not in slots]
        mismatched, non_numeric, not_float, negative = [], [], [], []
        transposed = 0
        for key, (module, name) in slots.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if not is_numeric(value):
                non_numeric.append(f"{key} ({kind_of(value)})")
                continue
            current = member(module, name)
            shape = tuple(getattr(value, "shape", np.shape(value)))
            if shape != tuple(current.shape):
                # A transposed matrix (fc.weight as (in, out)) is named as such: a reading of
                # its first axis as the class count would mislead.
                flipped = len(shape) == 2 and shape == tuple(current.shape)[::-1]
                transposed += flipped
                mismatched.append(f"{key}: checkpoint {shape} vs model {tuple(current.shape)}"
                                  + (" (transposed?)" if flipped else ""))
            elif current.dtype.kind == "f" and not is_floating(value):
                not_float.append(f"{key} ({kind_of(value)})")
            elif name == "running_var" and has_negative(value):
                negative.append(key)
        problems = []
        if strict and missing:
            problems.append(f"missing keys ({len(missing)}): {capped(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {capped(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): "
                            f"{capped(mismatched, sep='; ')}")
        if non_numeric:
            problems.append(f"values that are not numeric arrays ({len(non_numeric)}): "
                            f"{capped(non_numeric)}")
        if not_float:
            problems.append(f"integer or boolean values for floating-point weights "
                            f"({len(not_float)}): {capped(not_float)}")
        if negative:
            problems.append(f"negative variances in running_var ({len(negative)}): "
                            f"{capped(negative)}")
        if problems:
            hint = self.describe_state_dict(state_dict) \
                if (missing or unexpected or mismatched) and not transposed else None
            raise ValueError(f"{type(self).__name__}.load_state_dict: "
                             + " | ".join(([hint] if hint else []) + problems))
        for key, (module, name) in slots.items():
            if key not in state_dict:
                continue
            current = member(module, name)
            xp = backend.get_array_module(current)
            value = state_dict[key]
            value = value.detach() if hasattr(value, "detach") else value   # a torch tensor
            value = backend.to_numpy(value) if xp is np else value
            value = xp.asarray(value, dtype=current.dtype).reshape(current.shape).copy()
            if name in module._parameters:
                module._parameters[name].data = value
            else:
                module.register_buffer(name, value)
        return missing, unexpected

    # ------------------------------------------------------------- device
    def to(self, device):
        """Move every parameter and buffer to 'cpu' (NumPy) or 'gpu' (CuPy)."""
        weights_changed()
        for m in self.modules():
            for p in m._parameters.values():
                if p is None:
                    continue
                p.data = backend.to_device(p.data, device)
                if p.grad is not None:
                    p.grad = backend.to_device(p.grad, device)
            for name, b in list(m._buffers.items()):
                if b is not None:
                    m.register_buffer(name, backend.to_device(b, device))
            m._caches.clear()
        return self

    @property
    def device(self):
        for p in self.parameters():
            return backend.device_of(p.data)
        return "cpu"

    @property
    def dtype(self):
        for p in self.parameters():
            return p.data.dtype
        return None

    # ------------------------------------------------------------- calling
    def __call__(self, *args, **kwargs):
        for i, a in enumerate(args):
            check_module_input(self, a, i)
        if backend.finite_checks_enabled():
            for i, a in enumerate(args):
                if hasattr(a, "dtype") and a.dtype.kind == "f":
                    xp = backend.get_array_module(a)
                    if not bool(xp.isfinite(a).all()):
                        raise ValueError(f"{self.name} ({type(self).__name__}): input {i} "
                                         f"of shape {tuple(a.shape)} contains NaN or inf")
        depth = getattr(_state, "depth", 0)
        grad = is_grad_enabled()
        if depth == 0 and grad:                  # a new pass: drop what the last one left
            for m in self.modules():
                m._caches.clear()
        saved = len(self._caches)
        _state.depth = depth + 1
        try:
            out = self.forward(*args, **kwargs)
        except (ValueError, RuntimeError, TypeError) as err:
            _relocate(err, self)
            raise
        finally:
            _state.depth = depth
        if grad and len(self._caches) == saved + 1 and is_array(out):
            self._caches[-1] = self._caches[-1]._replace(
                output=(tuple(out.shape), out.dtype, backend.device_of(out)))
        return out

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    # Helpers for subclasses -------------------------------------------------
    def _save(self, cache):
        """Keep ``cache`` for backward, unless gradients are off (``no_grad``)."""
        if is_grad_enabled():
            self._caches.append(SavedForward(cache))

    def _pop_cache(self):
        """Return the latest forward's cache and forget it, so it is used exactly once."""
        if not self._caches:
            err = RuntimeError("backward called without a forward to match (backward before "
                               "forward, backward twice after one forward, or a forward run "
                               "under no_grad())")
            _relocate(err, self)          # named once, here: the caller's backward adds nothing
            raise err
        return self._caches.pop().cache

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            for name, child in self._modules.items():
                child_repr = repr(child).replace("\n", "\n  ")
                lines.append(f"  ({name}): {child_repr}")
            return "\n".join(lines) + "\n)"
        return lines[0] + ")"


def _guarded_backward(backward):
    """Wrap a module's backward: check dout against the forward's output, put the
    caches back if it raises, and name the module in the error."""

    @functools.wraps(backward)
    def guarded(self, dout, *args, **kwargs):
        saved = list(self._caches)
        try:
            if saved and saved[-1].output is not None:
                _check_dout(dout, *saved[-1].output)
            return backward(self, dout, *args, **kwargs)
        except BaseException as err:
            self._caches[:] = saved
            _relocate(err, self)
            raise
    return guarded


def _check_dout(dout, shape, dtype, device):
    if not is_array(dout):
        raise TypeError(f"backward: dout is {describe_non_array(dout, 'dout')}")
    if backend.device_of(dout) != device:
        raise ValueError(f"backward: dout is on the {backend.device_of(dout)} but the forward's "
                         f"output is on the {device}")
    if dout.dtype != dtype:
        raise ValueError(f"backward: dout has dtype {dout.dtype} but the forward's output has "
                         f"{dtype}; cast it (dout.astype({str(dtype)!r}))")
    if tuple(dout.shape) != shape:
        raise ValueError(f"backward: dout has shape {tuple(dout.shape)}, expected {shape} "
                         "(the forward's output shape)")


def _relocate(err, module):
    """Prefix an error's message with the innermost module that raised it (only once).

    The exception itself is re-raised, so its traceback and chain are kept whole.
    """
    if getattr(err, "_resnet_np_located", False) or \
            not isinstance(err, (ValueError, RuntimeError, TypeError)) or len(err.args) != 1:
        return
    err.args = (f"{module.name} ({type(module).__name__}): {err.args[0]}",)
    err._resnet_np_located = True


class Sequential(Module):
    """Children called in order; backward runs them in reverse."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, dout):
        for m in reversed(self._modules.values()):
            dout = m.backward(dout)
        return dout
