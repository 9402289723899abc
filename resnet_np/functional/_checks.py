"""Input validation shared by the functional layers.

Each check raises a ``ValueError`` that names the layer and the shapes, so a
bad input never surfaces as a broadcasting error from deep inside NumPy.
"""
from ..backend import device_of, get_array_module
from .sizes import extent, output_length, pair  # noqa: F401 (pair: imported from here too)


def check_rank(layer, x, rank, layout):
    if getattr(x, "ndim", None) != rank:
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError(f"{layer}: expected a {rank}-D input {layout}, got shape {shape}")


def check_float(layer, x):
    if x.dtype.kind != "f":
        raise ValueError(f"{layer}: expected a floating-point input, got dtype {x.dtype} "
                         f"(convert images with x.astype('float32'))")


def check_same_dtype(layer, x, other, other_name):
    """Same device (NumPy/CuPy) and same dtype, or a clear error."""
    if device_of(x) != device_of(other):
        raise ValueError(f"{layer}: input is on the {device_of(x)} but {other_name} is on the "
                         f"{device_of(other)}; move the model or the input (model.to(...))")
    if x.dtype != other.dtype:
        raise ValueError(f"{layer}: input dtype {x.dtype} does not match {other_name} dtype "
                         f"{other.dtype}; cast the input (x.astype({str(other.dtype)!r}))")


def output_size(layer, size, kernel, stride, pad, dilation, axis, ceil_mode=False):
    """:func:`.sizes.output_length` of one axis, or a clear error when the padded input is
    shorter than the window; ``pad`` is one amount for both sides or a pair (before, after)."""
    before, after = (pad, pad) if isinstance(pad, int) else pad
    out = output_length(size, kernel, stride, (before, after), dilation, ceil_mode)
    if out < 1:
        span = extent(kernel, dilation)
        shown = before if before == after else (before, after)
        raise ValueError(f"{layer}: input {axis} {size} (padding {shown}) is smaller than the "
                         f"kernel's extent {span} (kernel {kernel}, dilation {dilation})")
    return out


def check_positive(layer, **values):
    for name, pair_value in values.items():
        if min(pair_value) <= 0:
            raise ValueError(f"{layer}: {name} must be positive, got {pair_value}")


def check_dout(layer, dout, expected_shape):
    if tuple(dout.shape) != tuple(expected_shape):
        raise ValueError(f"{layer} backward: dout has shape {tuple(dout.shape)}, "
                         f"expected {tuple(expected_shape)} (the forward's output shape)")


def check_image_dout(layer, dout, expected_shape, unbatched):
    """The dout of a layer on (N, C, H, W) images -> dout as 4-D. ``expected_shape`` is the
    batched output shape; an unbatched forward's dout lacks the N axis, as its output did."""
    check_array(f"{layer} backward", dout, "dout")
    if unbatched:
        check_dout(layer, dout, expected_shape[1:])
        dout = dout[None]
    check_dout(layer, dout, expected_shape)
    return dout


def is_array(x):
    """True for a NumPy or CuPy array."""
    return isinstance(x, get_array_module(x).ndarray)


def describe_non_array(x, name="x"):
    """'a list, not a NumPy or CuPy array; convert it with np.asarray(x, ...)' and the like:
    what ``x`` is and how to make it an array."""
    kind = f"{type(x).__module__}.{type(x).__qualname__}".replace("builtins.", "")
    if hasattr(x, "detach") and hasattr(x, "numpy"):   # a torch tensor
        how = f"convert it with {name}.detach().cpu().numpy()"
    else:
        how = f"convert it with np.asarray({name}, dtype='float32')"
    return f"a {kind}, not a NumPy or CuPy array; {how}"


def check_array(layer, x, name="input"):
    """A NumPy or CuPy array, or a ``TypeError`` that names the type and how to convert it."""
    if not is_array(x):
        raise TypeError(f"{layer}: {name} is {describe_non_array(x, name)}")


def check_image_rank(layer, x):
    """(C, H, W) or (N, C, H, W), as torch accepts -> (x as 4-D, unbatched)."""
    if getattr(x, "ndim", None) == 3:
        return x[None], True
    if getattr(x, "ndim", None) != 4:
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError(f"{layer}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
                         f"got shape {shape}")
    return x, False
