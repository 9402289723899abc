"""Max pooling and adaptive average pooling.

max_pool2d:  x (N, C, H, W) or (C, H, W) -> out (N, C, P, Q) (or (C, P, Q))
    out[n, c, p, q] = max_{r, s} xpad[n, c, p*sh + r*dh, q*sw + s*dw]   (xpad padded with -inf)
    P = floor((H + 2*pad - dh*(R-1) - 1) / sh) + 1, or with ceil_mode the ceiling,
        less one if that last window would start past the input and its left padding
    backward: each dout goes to the window entry that won (its argmax), as torch
    picks it: entries in row-major window order, the first maximum wins ties, a
    NaN wins over any number (the last NaN of the window, as torch), and the
    padding never wins (a window of -inf keeps its first entry inside the input).
    The fast path reads x as its sh*sw strided planes (rows a::sh, columns b::sw),
    never the padding: a window's winner is its first entry equal to the cached
    maximum, and dx is built plane by plane from dout times each offset's mask.

adaptive_avg_pool2d:  x (N, C, H, W) -> out (N, C, P, Q), for any P, Q >= 0
    output cell (i, j) averages rows [floor(i*H/P), ceil((i+1)*H/P)) and
    columns [floor(j*W/Q), ceil((j+1)*W/Q)), as torch does; (1, 1) is the
    global average pool of a ResNet's head; None in a pair keeps that input size.
    backward: each dout is spread evenly over its cell.
"""
import math
from typing import NamedTuple

import numpy as np

from .. import backend
from ._checks import (check_array, check_float, check_image_dout, check_image_rank,
                      check_positive, output_size, pair)


class MaxPool2dCache(NamedTuple):
    """What the max-pool backward needs: the input and the output (each window's winner
    is found again: the first of its entries equal to its maximum)."""
    x: object               # (N, C, H, W)
    kernel_size: tuple      # (R, S)
    stride: tuple           # (sh, sw)
    padding: tuple          # -inf around x: ((top, bottom), (left, right)); ceil_mode may
                            # make bottom/right larger than top/left
    dilation: tuple         # (dh, dw)
    output_size: tuple      # (P, Q)
    argmax: object          # (N, P, Q, C) window offset r*S + s of each winner, or None
    unbatched: bool         # the input was (C, H, W)
    out: object = None      # (N, P, Q, C) the window maxima (not the array returned)


class AdaptiveAvgPool2dCache(NamedTuple):
    x_shape: tuple          # (N, C, H, W)
    output_size: tuple      # (P, Q)
    unbatched: bool


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """x (N, C, H, W) or (C, H, W) -> out (N, C, P, Q) (or (C, P, Q)), cache

    The arguments are torch's (``stride`` None means ``kernel_size``). For
    torch's ``return_indices``, :func:`max_pool2d_indices` numbers the winners.
    """
    layer = "max_pool2d"
    check_array(layer, x)
    x, unbatched = check_image_rank(layer, x)
    check_float(layer, x)
    R, S = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride if stride is not None else kernel_size, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    check_positive(layer, kernel_size=(R, S), stride=(sh, sw), dilation=(dh, dw))
    if min(ph, pw) < 0 or ph > (dh * (R - 1) + 1) // 2 or pw > (dw * (S - 1) + 1) // 2:
        raise ValueError(f"{layer}: padding {padding} must be between 0 and half the kernel's "
                         f"extent (kernel_size {kernel_size}, dilation {dilation})")
    N, C, H, W = x.shape
    P = output_size(layer, H, R, sh, ph, dh, "height", ceil_mode)
    Q = output_size(layer, W, S, sw, pw, dw, "width", ceil_mode)
    # ceil_mode's last window may reach past the padding: pad it with -inf too
    bottom = max(ph, (P - 1) * sh + dh * (R - 1) + 1 - H - ph)
    right = max(pw, (Q - 1) * sw + dw * (S - 1) + 1 - W - pw)
    geometry = MaxPool2dCache(x, (R, S), (sh, sw), ((ph, bottom), (pw, right)), (dh, dw),
                              (P, Q), None, unbatched)
    maxima = _new_nhwc(x, (N, P, Q, C), x.dtype)
    out = _new_nhwc(x, (N, P, Q, C), x.dtype)
    offsets = _offsets(geometry)
    work = {}                           # buffers reused from one group of images to the next
    for n0, n1 in _batch_chunks(x):
        _window_maxima(x[n0:n1], offsets, (sh, sw), maxima[n0:n1], work)
        out[n0:n1] = maxima[n0:n1]
    # The forward keeps its input and its own copy of the output (the caller may change
    # the output in place, as an in-place ReLU does): the backward finds the winners
    # again, so inference pays for no argmax.
    cache = geometry._replace(out=maxima)
    out = out.transpose(0, 3, 1, 2)
    return (out[0] if unbatched else out), cache


def _window_maxima(x, offsets, stride, out, work):
    """out (N, P, Q, C) = the maximum over the offsets' entries of x (N, C, H, W)."""
    xp = backend.get_array_module(x)
    planes = _planes(x, stride, {o.plane for o in offsets}, work)
    P, Q = out.shape[1:3]
    full = [o for o in offsets if o.covers_output(P, Q)][:1]
    if full:
        out[...] = _read(planes, full[0])
    else:
        out.fill(-xp.inf)               # a window with no entry inside stays -inf
    for o in offsets:
        if o not in full:
            view = out[:, o.p0:o.p1, o.q0:o.q1]
            xp.maximum(view, _read(planes, o), out=view)   # NaN propagates, as in torch


CHUNK_BYTES = 1 << 22     # the max-pool's passes on NumPy go over about 4 MiB of x at a time


def _batch_chunks(x):
    """[(n0, n1)]: on NumPy, groups of images of about CHUNK_BYTES of x each, so the passes
    over a group's windows run in the CPU's cache; on CuPy the whole batch at once."""
    N = x.shape[0]
    per_image = x[:1].nbytes
    if backend.get_array_module(x) is not np or N == 0 or per_image == 0:
        return [(0, N)]
    step = max(1, CHUNK_BYTES // per_image)
    return [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]


class _Offset(NamedTuple):
    """Window offset (r, s), k = r*S + s: it reads plane (a, b) (rows a::sh, columns b::sw
    of x) for the outputs [p0, p1) x [q0, q1) whose entry lies inside the input; output
    (p, q) reads plane[i0 + p - p0, j0 + q - q0]."""
    k: int
    plane: tuple
    p0: int
    p1: int
    q0: int
    q1: int
    i0: int
    j0: int

    def covers_output(self, P, Q):
        return (self.p0, self.p1, self.q0, self.q1) == (0, P, 0, Q)


def _span(start, stride, size, out_size):
    """Entries start + p*stride, p in [0, out_size), inside [0, size): (plane a, p0, p1, i0),
    with plane a = the entries a::stride and entry p at index i0 + p - p0 of that plane."""
    shift, a = divmod(start, stride)
    plane_size = len(range(a, size, stride))
    p0, p1 = max(0, -shift), min(out_size, plane_size - shift)
    return a, p0, max(p0, p1), p0 + shift


def _offsets(cache):
    """The R*S window offsets (_Offset) in row-major order, those reading nothing left out."""
    (R, S), (sh, sw), (dh, dw), (P, Q) = (cache.kernel_size, cache.stride, cache.dilation,
                                          cache.output_size)
    (top, _), (left, _) = cache.padding
    H, W = cache.x.shape[2:]
    offsets = []
    for r in range(R):
        a, p0, p1, i0 = _span(r * dh - top, sh, H, P)
        for s in range(S):
            b, q0, q1, j0 = _span(s * dw - left, sw, W, Q)
            if p1 > p0 and q1 > q0:
                offsets.append(_Offset(r * S + s, (a, b), p0, p1, q0, q1, i0, j0))
    return offsets


def _planes(x, stride, needed, work):
    """{(a, b): x's rows a::sh and columns b::sw, (N, Ha, Wb, C)}: views of x when its
    channels are last in memory (each row of a window's entries is a run of C), else
    copies in work (a strided view of NCHW memory would step by sw in every pass)."""
    x_nhwc = x.transpose(0, 2, 3, 1)
    views = {(a, b): x_nhwc[:, a::stride[0], b::stride[1]] for a, b in needed}
    if stride == (1, 1) or abs(x.strides[1]) <= abs(x.strides[3]):
        return views
    copies = {}
    for ab, view in views.items():
        copies[ab] = _buffer(work, ("plane", ab), x, view.shape, x.dtype)
        copies[ab][...] = view
    return copies


def _read(planes, o):
    """The (N, p1 - p0, q1 - q0, C) entries of offset o's windows."""
    return planes[o.plane][:, o.i0:o.i0 + o.p1 - o.p0, o.j0:o.j0 + o.q1 - o.q0]


def _new_nhwc(like, shape, dtype, new="empty"):
    """A new (N, H, W, C) array (xp.empty or xp.zeros), channels-last in memory if ``like``
    (N, C, H', W') is, else an (N, C, H, W) array seen as (N, H, W, C): every array of
    one call walks memory in the same order."""
    xp = backend.get_array_module(like)
    N, H, W, C = shape
    if abs(like.strides[1]) <= abs(like.strides[3]):
        return getattr(xp, new)(shape, dtype=dtype)
    return getattr(xp, new)((N, C, H, W), dtype=dtype).transpose(0, 2, 3, 1)


def _windows(cache):
    """The R*S strided views (N, P, Q, C) of the -inf padded channels-last input,
    one per window offset (r, s), in row-major order."""
    xp = backend.get_array_module(cache.x)
    (R, S), (sh, sw), (dh, dw), (P, Q) = (cache.kernel_size, cache.stride, cache.dilation,
                                          cache.output_size)
    x_nhwc = cache.x.transpose(0, 2, 3, 1)
    (top, bottom), (left, right) = cache.padding
    if top or bottom or left or right:
        x_nhwc = xp.pad(x_nhwc, ((0, 0), (top, bottom), (left, right), (0, 0)),
                        constant_values=-xp.inf)
    for r in range(R):
        for s in range(S):
            rows = slice(r * dh, r * dh + sh * (P - 1) + 1, sh)
            yield x_nhwc[:, rows, s * dw:s * dw + sw * (Q - 1) + 1:sw]


def _first_inside(cache):
    """(P, Q, 1) window offset r*S + s of each window's first entry inside the input
    (0 except for windows that start in the top or left padding)."""
    (_, S), (sh, sw), (dh, dw), (P, Q) = (cache.kernel_size, cache.stride, cache.dilation,
                                          cache.output_size)
    (top, _), (left, _) = cache.padding
    r0 = np.maximum(0, -((np.arange(P) * sh - top) // dh))        # ceil((top - p*sh) / dh)
    s0 = np.maximum(0, -((np.arange(Q) * sw - left) // dw))
    return (r0[:, None] * S + s0[None, :])[:, :, None]


def _assign_where(index, mask, k):
    """index = where(mask, k, index), in place: index += (k - index) * mask, in unsigned
    arithmetic (the subtraction may wrap; adding it back undoes the wrap), 15x faster
    than a masked copy."""
    step = index.dtype.type(k) - index
    step *= mask
    index += step


def _find_winners(cache, nan_aware):
    """(N, P, Q, C) offset r*S + s of each window's winner, and the window maxima."""
    xp = backend.get_array_module(cache.x)
    R, S = cache.kernel_size
    N, C = cache.x.shape[:2]
    P, Q = cache.output_size
    index_type = xp.uint8 if R * S <= 256 else xp.int32
    windows = _windows(cache)
    best = xp.array(next(windows))
    argmax = xp.empty((N, P, Q, C), dtype=index_type)
    argmax[...] = xp.asarray(_first_inside(cache).astype(index_type))
    for k, window in enumerate(windows, start=1):
        wins = window > best          # strict: an earlier equal maximum keeps its place
        if nan_aware:
            wins |= xp.isnan(window)  # torch: a NaN replaces the maximum, even a NaN
        xp.maximum(best, window, out=best)
        _assign_where(argmax, wins, k)
    return argmax, best


def max_pool2d_winners(cache):
    """(N, P, Q, C) window offset r*S + s of the entry each output took, as torch picks it."""
    if cache.argmax is not None:
        return cache.argmax
    xp = backend.get_array_module(cache.x)
    if cache.out is not None and not bool(xp.isnan(cache.out).any()):
        return _plane_winners(cache)
    argmax, best = _find_winners(cache, nan_aware=False)
    if bool(xp.isnan(best).any()):
        argmax, _ = _find_winners(cache, nan_aware=True)   # rare: only then pay for isnan
    return argmax


def max_pool2d_indices(cache):
    """torch's ``return_indices``: (N, C, P, Q) int64 flat index h*W + w of each winner
    in its input plane (no padding counted)."""
    xp = backend.get_array_module(cache.x)
    W = cache.x.shape[3]
    h0, w0, offsets = _winner_coordinates(cache, W, 1)
    index = (h0 * W + w0) + xp.asarray(offsets)[max_pool2d_winners(cache)]
    index = index.transpose(0, 3, 1, 2)
    return index[0] if cache.unbatched else index


def _winner_coordinates(cache, row_stride, column_stride):
    """Top-left corner (h0, w0) of every window, (1, P, 1, 1) and (1, 1, Q, 1) ints (negative
    in the padding), and the flat offset of each window entry r*S + s: r*dh*row_stride +
    s*dw*column_stride."""
    (R, S), (sh, sw), (dh, dw), (P, Q) = (cache.kernel_size, cache.stride, cache.dilation,
                                          cache.output_size)
    (top, _), (left, _) = cache.padding
    xp = backend.get_array_module(cache.x)
    h0 = (xp.arange(P) * sh - top).reshape(1, P, 1, 1)
    w0 = (xp.arange(Q) * sw - left).reshape(1, 1, Q, 1)
    offsets = np.array([r * dh * row_stride + s * dw * column_stride
                        for r in range(R) for s in range(S)])
    return h0, w0, offsets


def max_pool2d_backward(dout, cache):
    """dout (N, C, P, Q) -> dx (N, C, H, W) (unbatched: (C, P, Q) -> (C, H, W))"""
    x = cache.x
    N, C, H, W = x.shape
    P, Q = cache.output_size
    dout = check_image_dout("max_pool2d", dout, (N, C, P, Q), cache.unbatched)
    xp = backend.get_array_module(dout)
    if dout.size == 0 or x.size == 0:
        dx = xp.zeros(x.shape, dtype=dout.dtype)
        return dx[0] if cache.unbatched else dx
    offsets = _offsets(cache)
    dout_nhwc = dout.transpose(0, 2, 3, 1)
    dx = _new_nhwc(x, (N, H, W, C), dout.dtype)
    work = {}                                   # buffers reused from one chunk to the next
    for n0, n1 in _batch_chunks(x):
        chunk = cache._replace(x=x[n0:n1], out=None if cache.out is None else cache.out[n0:n1],
                               argmax=None if cache.argmax is None else cache.argmax[n0:n1])
        argmax = chunk.argmax
        if argmax is None and (chunk.out is None or bool(xp.isnan(chunk.out).any())):
            argmax = max_pool2d_winners(chunk)  # NaN maxima: the search of torch's rule
        d = dout_nhwc[n0:n1]
        finite = bool(xp.isfinite(d).all())     # else 0 * inf would spread NaN
        masks = _winner_masks(chunk, offsets, argmax, work)
        _route(d, masks, chunk, offsets, finite, work, dx[n0:n1])
    dx = dx.transpose(0, 3, 1, 2)
    return dx[0] if cache.unbatched else dx


def _buffer(work, name, like, shape, dtype):
    """work[name][:N]: an (N, ...) array made once at the first chunk's size."""
    if name not in work:
        work[name] = _new_nhwc(like, shape, dtype)
    return work[name][:shape[0]]


def _winner_masks(cache, offsets, argmax, work):
    """For each offset (row-major), the (N, p1 - p0, q1 - q0, C) mask of the windows whose
    winner it is: argmax == k, or without an argmax the first entry equal to the window's
    maximum cache.out (no padding is read, so the padding never wins; a window of -inf
    takes its first entry inside; wrong where a maximum is NaN)."""
    xp = backend.get_array_module(cache.x)
    shape = cache.x.shape[:1] + tuple(cache.output_size) + cache.x.shape[1:2]
    masks = []
    if argmax is None:
        planes = _planes(cache.x, cache.stride, {o.plane for o in offsets}, work)
        taken = _buffer(work, "taken", cache.x, shape, bool)
        taken.fill(False)
    for i, o in enumerate(offsets):
        view = (slice(None), slice(o.p0, o.p1), slice(o.q0, o.q1))
        mask = _buffer(work, ("mask", i), cache.x, shape, bool)[view]
        if argmax is not None:
            xp.equal(argmax[view], o.k, out=mask)
        else:
            xp.equal(_read(planes, o), cache.out[view], out=mask)
            xp.greater(mask, taken[view], out=mask)      # and not taken by an earlier one
            taken[view] |= mask
        masks.append(mask)
    return masks


def _route(dout, masks, cache, offsets, finite, work, dx):
    """dx (N, H, W, C) = each dout (N, P, Q, C) added to its window's winner.

    Offset by offset, dout times the offset's mask goes into the plane of
    dx that offset reads (rows a::sh, columns b::sw); the offsets in reverse order add the
    windows sharing an entry in the order of the windows, as torch's loop does."""
    xp = backend.get_array_module(dout)
    x = cache.x
    N, C, H, W = x.shape
    sh, sw = cache.stride
    spare_all = _buffer(work, "spare", x, dout.shape, dout.dtype)
    dplanes = {}
    for o, mask in zip(reversed(offsets), reversed(masks)):
        view = (slice(None), slice(o.p0, o.p1), slice(o.q0, o.q1))
        d = dout[view]
        plane = dplanes.get(o.plane)
        first = plane is None
        if first:
            a, b = o.plane
            shape = (N, len(range(a, H, sh)), len(range(b, W, sw)), C)
            plane = dplanes[o.plane] = _buffer(work, o.plane, x, shape, dout.dtype)
            if mask.shape != plane.shape:
                plane.fill(0)
                first = False
        target = plane[:, o.i0:o.i0 + o.p1 - o.p0, o.j0:o.j0 + o.q1 - o.q0]
        routed = target if first else spare_all[view]
        if finite:
            xp.multiply(d, mask, out=routed)
        else:
            routed[...] = xp.where(mask, d, xp.zeros((), dout.dtype))
        if not first:
            target += routed
    for a in range(min(sh, H)):
        for b in range(min(sw, W)):
            dx[:, a::sh, b::sw] = dplanes.get((a, b), 0)


def _plane_winners(cache):
    """(N, P, Q, C) offset r*S + s of each window's first entry equal to its maximum
    cache.out (no padding is read, so the padding never wins; a window of -inf takes its
    first entry inside). Wrong where a maximum is NaN."""
    xp = backend.get_array_module(cache.x)
    work = {}
    out = cache.out
    R, S = cache.kernel_size
    offsets = _offsets(cache)
    planes = _planes(cache.x, cache.stride, {o.plane for o in offsets}, work)
    argmax = _buffer(work, "argmax", cache.x, out.shape, xp.uint8 if R * S <= 256 else xp.int32)
    argmax[...] = xp.asarray(_first_inside(cache).astype(argmax.dtype))
    equal = _buffer(work, "equal", cache.x, out.shape, bool)
    for o in reversed(offsets):     # the first offset equal to the maximum is the last kept
        view = (slice(None), slice(o.p0, o.p1), slice(o.q0, o.q1))
        xp.equal(_read(planes, o), out[view], out=equal[view])
        _assign_where(argmax[view], equal[view], o.k)
    return argmax


# --------------------------------------------------------------------------- #
# Adaptive average pooling
# --------------------------------------------------------------------------- #
def _cells(size, out_size):
    """torch's adaptive pooling cells: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out_size, math.ceil((i + 1) * size / out_size)) for i in range(out_size)]


def _adaptive_size(layer, output_size, H, W):
    """An int or a pair of ints or None (None keeps that input size) -> (P, Q)."""
    sizes = (output_size, output_size) if isinstance(output_size, int) else output_size
    sizes = tuple(sizes) if isinstance(sizes, (tuple, list)) else ()
    if len(sizes) != 2 or not all(s is None or (isinstance(s, int) and s >= 0) for s in sizes):
        raise ValueError(f"{layer}: output_size must be an int >= 0 or a pair of them (None in "
                         f"the pair keeps that input size), got {output_size!r}")
    return tuple(n if s is None else s for s, n in zip(sizes, (H, W)))


def adaptive_avg_pool2d_forward(x, output_size=(1, 1)):
    """x (N, C, H, W) or (C, H, W) -> out (N, C, P, Q) (or (C, P, Q)), cache"""
    layer = "adaptive_avg_pool2d"
    check_array(layer, x)
    x, unbatched = check_image_rank(layer, x)
    check_float(layer, x)
    N, C, H, W = x.shape
    P, Q = _adaptive_size(layer, output_size, H, W)
    if (P or Q) and not (H and W):
        raise ValueError(f"{layer}: input size {(H, W)} is empty; cannot pool it to {(P, Q)}")
    xp = backend.get_array_module(x)
    x_nhwc = x.transpose(0, 2, 3, 1)
    out = xp.empty((N, P, Q, C), dtype=x.dtype)
    for i, (h0, h1) in enumerate(_cells(H, P)):
        for j, (w0, w1) in enumerate(_cells(W, Q)):
            out[:, i, j] = x_nhwc[:, h0:h1, w0:w1].mean(axis=(1, 2))
    out = out.transpose(0, 3, 1, 2)
    return (out[0] if unbatched else out), AdaptiveAvgPool2dCache(tuple(x.shape), (P, Q), unbatched)


def adaptive_avg_pool2d_backward(dout, cache):
    """dout (N, C, P, Q) -> dx (N, C, H, W) (unbatched: (C, P, Q) -> (C, H, W))"""
    N, C, H, W = cache.x_shape
    P, Q = cache.output_size
    dout = check_image_dout("adaptive_avg_pool2d", dout, (N, C, P, Q), cache.unbatched)
    xp = backend.get_array_module(dout)
    dout_nhwc = dout.transpose(0, 2, 3, 1)
    dx = xp.zeros((N, H, W, C), dtype=dout.dtype)
    for i, (h0, h1) in enumerate(_cells(H, P)):
        for j, (w0, w1) in enumerate(_cells(W, Q)):
            area = (h1 - h0) * (w1 - w0)
            dx[:, h0:h1, w0:w1] += dout_nhwc[:, i:i + 1, j:j + 1] / area
    dx = dx.transpose(0, 3, 1, 2)
    return dx[0] if cache.unbatched else dx
