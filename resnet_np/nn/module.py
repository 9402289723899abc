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
from collections import OrderedDict

import numpy as np

from .. import backend

_grad_enabled = [True]


@contextlib.contextmanager
def no_grad():
    """Within this context a forward keeps no caches (inference uses less memory)."""
    old = _grad_enabled[0]
    _grad_enabled[0] = False
    try:
        yield
    finally:
        _grad_enabled[0] = old


def is_grad_enabled():
    return _grad_enabled[0]


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
        if self.grad is None:
            self.grad = grad
        else:
            self.grad += grad

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype})"


class Module:
    """Base class of every layer, block and model."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_path", "")
        self.training = True
        self._cache = None

    # ---------------------------------------------------------------- registry
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() first")
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
            value._set_path(name if not self._path else f"{self._path}.{name}")
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A state array that is saved in state_dict() but not trained (running stats)."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def _set_buffer(self, name, array):
        """Replace a buffer's array, keeping the attribute and the registry in step."""
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
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def children(self):
        return list(self._modules.values())

    def named_parameters(self, prefix=""):
        for path, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                yield (f"{path}.{name}" if path else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for path, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                yield (f"{path}.{name}" if path else name), b

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    # ------------------------------------------------------------- modes
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Forget every gradient (set to None, as torch's default does)."""
        for p in self.parameters():
            p.grad = None

    # ------------------------------------------------------------- state
    def state_dict(self):
        """Parameters and buffers by dotted name, as arrays (no copies)."""
        state = OrderedDict()
        for path, module in self.named_modules():
            for name, p in module._parameters.items():
                state[f"{path}.{name}" if path else name] = p.data
            for name, b in module._buffers.items():
                state[f"{path}.{name}" if path else name] = b
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (NumPy, CuPy or torch tensors) into parameters and buffers.

        Values are cast to each parameter's dtype and moved to its device.
        With ``strict`` (the default), missing keys, unexpected keys and shape
        mismatches are all listed in one ``KeyError``-free ``ValueError``;
        shape mismatches are errors even when ``strict=False``.
        Returns ``(missing_keys, unexpected_keys)``.
        """
        slots = {}
        for path, module in self.named_modules():
            for name in list(module._parameters) + list(module._buffers):
                slots[f"{path}.{name}" if path else name] = (module, name)
        missing = [k for k in slots if k not in state_dict]
        unexpected = [k for k in state_dict if k not in slots]
        mismatched = []
        for key, (module, name) in slots.items():
            if key in state_dict:
                current = module._parameters[name].data if name in module._parameters \
                    else module._buffers[name]
                shape = tuple(getattr(state_dict[key], "shape", np.shape(state_dict[key])))
                if shape != tuple(current.shape):
                    mismatched.append(f"{key}: checkpoint {shape} vs model {tuple(current.shape)}")
        problems = []
        if strict and missing:
            problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + " | ".join(problems))
        for key, (module, name) in slots.items():
            if key not in state_dict:
                continue
            if name in module._parameters:
                current = module._parameters[name].data
            else:
                current = module._buffers[name]
            xp = backend.get_array_module(current)
            value = state_dict[key]
            value = value.detach() if hasattr(value, "detach") else value   # a torch tensor
            value = backend.to_numpy(value) if xp is np else value
            value = xp.asarray(value, dtype=current.dtype).reshape(current.shape).copy()
            if name in module._parameters:
                module._parameters[name].data = value
            else:
                module._set_buffer(name, value)
        return missing, unexpected

    # ------------------------------------------------------------- device
    def to(self, device):
        """Move every parameter and buffer to 'cpu' (NumPy) or 'gpu' (CuPy)."""
        for m in self.modules():
            for p in m._parameters.values():
                p.data = backend.to_device(p.data, device)
                if p.grad is not None:
                    p.grad = backend.to_device(p.grad, device)
            for name, b in list(m._buffers.items()):
                m._set_buffer(name, backend.to_device(b, device))
            m._cache = None
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
        if backend.finite_checks_enabled():
            for i, a in enumerate(args):
                if hasattr(a, "dtype") and a.dtype.kind == "f":
                    xp = backend.get_array_module(a)
                    if not bool(xp.isfinite(a).all()):
                        raise ValueError(f"{self.name} ({type(self).__name__}): input {i} "
                                         f"of shape {tuple(a.shape)} contains NaN or inf")
        try:
            return self.forward(*args, **kwargs)
        except (ValueError, RuntimeError) as err:
            raise _located(err, self) from None

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    # Helpers for subclasses -------------------------------------------------
    def _save(self, cache):
        """Keep ``cache`` for backward, unless gradients are off (``no_grad``)."""
        self._cache = cache if is_grad_enabled() else None

    def _pop_cache(self):
        """Return the forward's cache and forget it, so it is used exactly once."""
        cache = self._cache
        if cache is None:
            raise RuntimeError(
                f"{self.name} ({type(self).__name__}): backward called without a forward "
                "to match (backward before forward, backward twice after one forward, "
                "or a forward run under no_grad())")
        self._cache = None
        return cache

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


def _located(err, module):
    """Prefix an error with the innermost module that raised it (only once)."""
    if getattr(err, "_resnet_np_located", False):
        return err
    new = type(err)(f"{module.name} ({type(module).__name__}): {err}")
    new._resnet_np_located = True
    return new


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
