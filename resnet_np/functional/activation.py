"""ReLU.

    out = max(x, 0)                 any shape
    dx  = dout * [out > 0]          (the gradient at 0 is taken as 0, as torch does)
"""
from .. import backend
from ._checks import check_dout


def relu_forward(x, inplace=False):
    """x (any shape) -> out (same shape), cache. Keeps the input's memory layout.

    ``inplace=True`` writes the result over ``x`` (torch's ``ReLU(inplace=True)``):
    no new array, for an input that nothing else keeps, such as a batch norm's output.
    """
    xp = backend.get_array_module(x)
    out = xp.maximum(x, 0, out=x if inplace else None)
    return out, out


def relu_backward(dout, cache):
    """dout -> dx, routed through the positive entries only."""
    out = cache
    check_dout("relu", dout, out.shape)
    # A multiply by the boolean mask is 3x faster in NumPy than xp.where.
    return dout * (out > 0)
