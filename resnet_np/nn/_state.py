"""What ``Module.load_state_dict`` needs to read a checkpoint and to say what is wrong with it."""
from collections import OrderedDict


def member(module, name):
    """The array of parameter or buffer ``name`` of ``module``."""
    return module._parameters[name].data if name in module._parameters \
        else module._buffers[name]


def is_numeric(value):
    """True for a NumPy/CuPy array or torch tensor of bools, integers or floats."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or not hasattr(value, "shape"):
        return False
    kind = getattr(dtype, "kind", None)
    if kind is None:                                   # a torch dtype
        return not getattr(dtype, "is_complex", False) and str(dtype) != "torch.bool"
    return kind in "biuf"


def is_floating(value):
    """True for a NumPy/CuPy array or torch tensor of floating-point numbers."""
    dtype = value.dtype
    kind = getattr(dtype, "kind", None)
    return dtype.is_floating_point if kind is None else kind == "f"


def has_negative(value):
    """True if an array or tensor holds a value below 0."""
    return bool((value < 0).any())


def kind_of(value):
    """'dtype <U1' for an array, the type's name for anything else."""
    dtype = getattr(value, "dtype", None)
    return f"dtype {dtype}" if dtype is not None else type(value).__name__


def capped(items, count=8, sep=", "):
    """The first ``count`` items, then 'and N more'."""
    shown = sep.join(items[:count])
    return shown + (f"{sep}and {len(items) - count} more" if len(items) > count else "")


def strip_data_parallel_prefix(state_dict, slots):
    """Keys 'module.conv1.weight' of a DataParallel checkpoint -> 'conv1.weight'."""
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys) and \
            not any(k.startswith("module.") for k in slots):
        return OrderedDict((k[len("module."):], v) for k, v in state_dict.items())
    return state_dict
