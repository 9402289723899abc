"""Fully connected layer and flatten.

    linear:   x (N, D), w (F, D), b (F,)  ->  out (N, F) = x @ w.T + b
              dx = dout @ w,  dw = dout.T @ x,  db = sum_n dout
    flatten:  x (N, C, H, W) -> (N, C*H*W) in (c, h, w) order, as torch.flatten(x, 1)
"""
from .. import backend
from ._checks import check_dout, check_float, check_rank, check_same_dtype


def linear_forward(x, w, b=None):
    """x (N, D), w (F, D), b (F,) or None -> out (N, F), cache"""
    layer = "linear"
    check_rank(layer, x, 2, "(N, D)")
    check_float(layer, x)
    check_same_dtype(layer, x, w, "weight")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{layer}: input has {x.shape[1]} features but weight {tuple(w.shape)} "
                         f"expects {w.shape[1]} (x.shape={tuple(x.shape)})")
    out = backend.matmul(x, w.T)
    if b is not None:
        out += b
    return out, (x, w, b is not None)


def linear_backward(dout, cache):
    """dout (N, F) -> dx (N, D), dw (F, D), db (F,) or None"""
    x, w, has_bias = cache
    check_dout("linear", dout, (x.shape[0], w.shape[0]))
    return (backend.matmul(dout, w), backend.matmul(dout.T, x),
            dout.sum(axis=0) if has_bias else None)


def flatten_forward(x):
    """x (N, ...) -> (N, prod(...)), cache"""
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dout, cache):
    check_dout("flatten", dout, (cache[0], dout.size // max(cache[0], 1)))
    return dout.reshape(cache)
