"""Fully connected layer and flatten (twins: :func:`.reference.linear_forward`,
:func:`.reference.flatten_forward` and their backwards).

    linear:   x (N, D), w (F, D), b (F,)  ->  out (N, F) = x @ w.T + b
              dx = dout @ w,  dw = dout.T @ x,  db = sum_n dout
              as torch, x may be (*, D): any leading dimensions, (D,) alone, or none
              at all in the batch (N = 0, where dw and db are zeros)
    flatten:  x (N, C, H, W) -> (N, C*H*W) in (c, h, w) order, as torch.flatten(x, 1);
              any start_dim..end_dim, as torch.flatten(x, start_dim, end_dim)
"""
from typing import NamedTuple

from .. import backend
from ._checks import check_array, check_dout, check_float, check_same_dtype


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
    x, w, has_bias, lead = cache.x, cache.w, cache.has_bias, cache.lead
    check_dout("linear", dout, lead + (w.shape[0],))
    dout = dout.reshape(-1, w.shape[0])
    dx = backend.matmul(dout, w).reshape(lead + (w.shape[1],))
    return dx, backend.matmul(dout.T, x), dout.sum(axis=0) if has_bias else None


class FlattenCache(NamedTuple):
    x_shape: tuple
    out_shape: tuple


def _dim(layer, dim, ndim, name):
    """torch's dimension wrap: -1 is the last; a 0-D input counts as 1-D."""
    rank = max(ndim, 1)
    if not isinstance(dim, int) or not -rank <= dim < rank:
        raise ValueError(f"{layer}: {name}={dim!r} is out of range for a {ndim}-D input "
                         f"(expected an int in [{-rank}, {rank - 1}])")
    return dim % rank


def flatten_forward(x, start_dim=1, end_dim=-1):
    """x (d0, ..., dn) -> dims start_dim..end_dim merged into one, cache; as torch.flatten."""
    layer = "flatten"
    check_array(layer, x)
    start = _dim(layer, start_dim, x.ndim, "start_dim")
    end = _dim(layer, end_dim, x.ndim, "end_dim")
    if start > end:
        raise ValueError(f"{layer}: start_dim={start_dim} cannot come after end_dim={end_dim} "
                         f"for a {x.ndim}-D input")
    shape = tuple(x.shape) if x.ndim else (1,)
    merged = 1
    for n in shape[start:end + 1]:
        merged *= n
    out_shape = shape[:start] + (merged,) + shape[end + 1:]
    return x.reshape(out_shape), FlattenCache(tuple(x.shape), out_shape)


def flatten_backward(dout, cache):
    """dout (the forward's output shape) -> dx (the input's shape)"""
    check_array("flatten backward", dout, "dout")
    check_dout("flatten", dout, cache.out_shape)
    return dout.reshape(cache.x_shape)
