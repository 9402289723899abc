"""Fully connected layer and flatten.

    linear:   x (N, D), w (F, D), b (F,)  ->  out (N, F) = x @ w.T + b
              dx = dout @ w,  dw = dout.T @ x,  db = sum_n dout
              as torch, x may be (*, D): any leading dimensions, (D,) alone, or none
              at all in the batch (N = 0, where dw and db are zeros)
    flatten:  x (N, C, H, W) -> (N, C*H*W) in (c, h, w) order, as torch.flatten(x, 1)
"""
from typing import NamedTuple

from .. import backend
from ._checks import check_dout, check_float, check_same_dtype


class LinearCache(NamedTuple):
    x: object           # the input as a matrix (N, D), N the product of its leading dims
    w: object
    has_bias: bool
    lead: tuple         # the input's leading dimensions: () for a (D,) input


def linear_forward(x, w, b=None):
    """x (*, D), w (F, D), b (F,) or None -> out (*, F), cache"""
    layer = "linear"
    if getattr(x, "ndim", 0) < 1:
        raise ValueError(f"{layer}: expected an input (N, D) or (D,), got shape "
                         f"{tuple(getattr(x, 'shape', ()))}")
    check_float(layer, x)
    check_same_dtype(layer, x, w, "weight")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"{layer}: input has {x.shape[-1]} features but weight {tuple(w.shape)} "
                         f"expects {w.shape[1]} (x.shape={tuple(x.shape)})")
    lead = tuple(x.shape[:-1])
    x_mat = x.reshape(-1, w.shape[1])
    out = backend.matmul(x_mat, w.T)
    if b is not None:
        out += b
    return out.reshape(lead + (w.shape[0],)), LinearCache(x_mat, w, b is not None, lead)


def linear_backward(dout, cache):
    """dout (*, F) -> dx (*, D), dw (F, D), db (F,) or None"""
    x, w, has_bias, lead = cache
    check_dout("linear", dout, lead + (w.shape[0],))
    dout = dout.reshape(-1, w.shape[0])
    dx = backend.matmul(dout, w).reshape(lead + (w.shape[1],))
    return dx, backend.matmul(dout.T, x), dout.sum(axis=0) if has_bias else None


def flatten_forward(x):
    """x (N, ...) -> (N, prod(...)), cache"""
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dout, cache):
    check_dout("flatten", dout, (cache[0], dout.size // max(cache[0], 1)))
    return dout.reshape(cache)
