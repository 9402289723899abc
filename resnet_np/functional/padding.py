"""Padding of the two spatial axes, as torch.nn.functional.pad and Conv2d's padding_mode.

    x    (N, C, H, W)  ->  out (N, C, H + top + bottom, W + left + right)
    padding  ((top, bottom), (left, right))

    mode        out beyond the edge, along each axis (i < 0 or i >= size)
    zeros       0
    reflect     x[-i], x[2*(size-1) - i]   the edge itself is not repeated; pad < size
    replicate   x[0], x[size-1]            the edge repeated
    circular    x[i mod size]              the other side; pad <= size

Every output entry is some input entry (or 0), so the backward adds each
output gradient back onto the input entry it came from: a border entry of dx
collects its own gradient plus those of its copies in the padding.
"""
from typing import NamedTuple

import numpy as np

from .. import backend

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class Pad2dCache(NamedTuple):
    x_shape: tuple          # (N, C, H, W) before padding
    padding: tuple          # ((top, bottom), (left, right))
    rows: np.ndarray        # source row of every padded row, (H + top + bottom,)
    columns: np.ndarray     # source column of every padded column, (W + left + right,)


def check_padding_mode(layer, mode, padding, size):
    """torch's rules: a known mode; reflect needs pad < size, circular pad <= size.

    padding ((top, bottom), (left, right)), size (H, W).
    """
    if mode not in PADDING_MODES:
        raise ValueError(f"{layer}: padding_mode must be one of {PADDING_MODES}, got {mode!r}")
    for (before, after), n, axis in zip(padding, size, ("height", "width")):
        pad = max(before, after)
        if mode == "reflect" and pad >= n:
            raise ValueError(f"{layer}: padding_mode='reflect' needs padding smaller than the "
                             f"input {axis} {n}, got padding {(before, after)}")
        if mode == "circular" and pad > n:
            raise ValueError(f"{layer}: padding_mode='circular' needs padding at most the input "
                             f"{axis} {n} (it would wrap around more than once), got padding "
                             f"{(before, after)}")
        if mode == "replicate" and pad and n == 0:
            raise ValueError(f"{layer}: padding_mode='replicate' needs a non-empty input {axis}")


def source_index(size, before, after, mode):
    """Which input index each padded position copies: (before + size + after,) ints."""
    return np.pad(np.arange(size), (before, after), mode=_NUMPY_MODES[mode])


def pad2d_forward(x, padding, mode, layer="pad2d"):
    """x (N, C, H, W) -> out (N, C, H + top + bottom, W + left + right), cache.

    One gather in channels-last order, so the result is (N, C, H', W') in shape
    and channels-last in memory, the layout the convolution reads.
    """
    if mode == "zeros":
        raise ValueError(f"{layer}: zero padding is done by the convolution itself")
    N, C, H, W = x.shape
    check_padding_mode(layer, mode, padding, (H, W))
    (top, bottom), (left, right) = padding
    rows, columns = source_index(H, top, bottom, mode), source_index(W, left, right, mode)
    xp = backend.get_array_module(x)
    x_nhwc = x.transpose(0, 2, 3, 1)
    out = x_nhwc[:, xp.asarray(rows)[:, None], xp.asarray(columns)[None, :]]
    return out.transpose(0, 3, 1, 2), Pad2dCache(tuple(x.shape), padding, rows, columns)


def pad2d_backward(dout, cache):
    """dout (N, C, H', W') -> dx (N, C, H, W): the inner block plus every border copy
    folded back onto its source (one slice addition per padded row or column)."""
    (top, bottom), (left, right) = cache.padding
    N, C, H, W = cache.x_shape
    Wp = W + left + right
    # columns first, over all padded rows: (N, C, H', W)
    d = dout[:, :, :, left:left + W].copy()
    for j in list(range(left)) + list(range(left + W, Wp)):
        src = int(cache.columns[j])
        d[:, :, :, src] += dout[:, :, :, j]
    dx = d[:, :, top:top + H].copy()
    for i in list(range(top)) + list(range(top + H, H + top + bottom)):
        src = int(cache.rows[i])
        dx[:, :, src] += d[:, :, i]
    return dx
