"""ReLU.

    out = max(x, 0)                 any shape; NaN stays NaN, as in torch
    dx  = 0 where out <= 0, else dout
          (the gradient at 0 is taken as 0; at a NaN input dout passes; where
          out <= 0 a NaN or inf in dout is blocked: exactly torch's threshold_backward)
"""
import numpy as np

from .. import backend
from ._checks import check_dout
from .reference import relu_backward as relu_backward_naive


def relu_forward(x, inplace=False):
    """x (any shape) -> out (same shape), cache. Keeps the input's memory layout.

    ``inplace=True`` writes the result over ``x`` (torch's ``ReLU(inplace=True)``):
    no new array, for an input that nothing else keeps, such as a batch norm's output.
    The cache is ``out`` itself: its sign is the mask of the backward.
    """
    xp = backend.get_array_module(x)
    if xp is not np or x.ndim == 0:
        out = xp.maximum(x, 0, out=x if inplace else None)
        return out, out
    out = x if inplace else np.empty_like(x)
    backend.in_row_blocks(lambda r: np.maximum(x[r], 0, out=out[r]), len(x), x.size)
    return out, out


def relu_backward(dout, cache):
    """dout -> dx, routed through the entries whose output is not <= 0."""
    out = cache
    check_dout("relu", dout, out.shape)
    xp = backend.get_array_module(dout)
    if xp is not np or dout.ndim == 0:      # one elementwise kernel on the GPU
        return relu_backward_naive(dout, cache)
    # NumPy: a multiply by the mask is ~15x faster than np.where and equal to it
    # unless dout holds NaN or inf (a NaN or inf times a blocked 0 gives NaN):
    # then, and only then, the exact route.
    dx = np.empty_like(dout)

    def pass_(r):
        with np.errstate(invalid="ignore"):
            np.multiply(dout[r], ~(out[r] <= 0), out=dx[r])
        return bool(np.isfinite(dx[r]).all())
    if not all(backend.in_row_blocks(pass_, len(dout), dout.size)):
        dx = relu_backward_naive(dout, cache)
    return dx
