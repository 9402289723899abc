"""Max pooling and adaptive average pooling: the fast twins of
:func:`.reference.max_pool2d_forward`, :func:`.reference.max_pool2d_backward`,
:func:`.reference.adaptive_avg_pool2d_forward` and its backward (read those for the maths).

max_pool2d:  x (N, C, H, W) or (C, H, W) -> out (N, C, P, Q) (or (C, P, Q))
    out[n, c, p, q] = max_{r, s} xpad[n, c, p*sh + r*dil_h, q*sw + s*dil_w]   (xpad: -inf padding)
    P = floor((H + 2*pad - dil_h*(R-1) - 1) / sh) + 1, or with ceil_mode the ceiling,
        less one if that last window would start past the input and its left padding
    backward: each dout goes to the window entry that won (its argmax), as torch
    picks it: entries in row-major window order, the first maximum wins ties, a
    NaN wins over any number (the last NaN of the window, as torch), and the
    padding never wins (a window of -inf keeps its first entry inside the input).

adaptive_avg_pool2d:  x (N, C, H, W) -> out (N, C, P, Q), for any P, Q >= 0
    output cell (i, j) averages rows [floor(i*H/P), ceil((i+1)*H/P)) and
    columns [floor(j*W/Q), ceil((j+1)*W/Q)), as torch does; (1, 1) is the
    global average pool of a ResNet's head; None in a pair keeps that input size.
    backward: each dout is spread evenly over its cell.

How the max-pool is made fast (the twin loops over windows; here every pass is
one array operation over all windows at once):

- Taps, not windows. Window tap (r, s) of every window reads x at rows
  p*sh + r*dil_h - top: one strided slice of x (:class:`WindowTap`). The
  maximum is R*S elementwise ``maximum`` calls, one per tap, and each tap is
  cut to the windows where it lies inside x, so the -inf padding is never
  made or read.
- Strided planes. A tap reads rows a::sh and columns b::sw of x (a plane);
  on NCHW memory each plane is copied once into a reused buffer
  (:func:`strided_planes`) rather than read with a stride in every pass.
- No argmax in the forward: the cache keeps x and the maxima, and the
  backward takes as winner the first tap equal to the maximum (a mask per
  tap), so inference pays for no argmax. A NaN maximum (rare) sends the
  backward to the search of torch's rule (:func:`max_pool2d_winners`).
- dx plane by plane: dout times each tap's mask is added into the plane of dx
  that tap reads, taps in reverse order, so windows sharing an entry add in
  torch's order (bit-equal in float32).
- Groups of images of about ``CHUNK_BYTES`` (4 MiB) of x, so the R*S passes
  over a group run in the CPU's cache, with buffers reused from group to
  group (:func:`image_groups`).
- Winner indices as uint8 updated by arithmetic, ``index += (k - index) * mask``
  (:func:`set_where`), about 15x faster than a masked copy.
"""
from typing import NamedTuple

import numpy as np

from .. import backend
from ._checks import (check_array, check_float, check_image_dout, check_image_rank,
                      check_positive, output_size, pair)
from .reference import adaptive_cell
from .sizes import extent


class MaxPool2dCache(NamedTuple):
    """What the max-pool backward needs: the input and the output (each window's winner
    is found again: the first of its entries equal to its maximum)."""
    x: object               # (N, C, H, W)
    kernel_size: tuple      # (R, S)
    stride: tuple           # (sh, sw)
    padding: tuple          # -inf around x: ((top, bottom), (left, right)); ceil_mode may
                            # make bottom/right larger than top/left
    dilation: tuple         # (dil_h, dil_w)
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
    dil_h, dil_w = pair(dilation, "dilation")
    check_positive(layer, kernel_size=(R, S), stride=(sh, sw), dilation=(dil_h, dil_w))
    if min(ph, pw) < 0 or ph > extent(R, dil_h) // 2 or pw > extent(S, dil_w) // 2:
        raise ValueError(f"{layer}: padding {padding} must be between 0 and half the kernel's "
                         f"extent (kernel_size {kernel_size}, dilation {dilation})")
    N, C, H, W = x.shape
    P = output_size(layer, H, R, sh, ph, dil_h, "height", ceil_mode)
    Q = output_size(layer, W, S, sw, pw, dil_w, "width", ceil_mode)
    # ceil_mode's last window may reach past the padding: pad it with -inf too
    bottom = max(ph, (P - 1) * sh + extent(R, dil_h) - H - ph)
    right = max(pw, (Q - 1) * sw + extent(S, dil_w) - W - pw)
    geometry = MaxPool2dCache(x, (R, S), (sh, sw), ((ph, bottom), (pw, right)), (dil_h, dil_w),
                              (P, Q), None, unbatched)
    maxima = _new_nhwc(x, (N, P, Q, C), x.dtype)
    out = _new_nhwc(x, (N, P, Q, C), x.dtype)
    taps = window_taps(geometry)
    buffers = {}                        # reused from one group of images to the next
    for n0, n1 in image_groups(x):
        _window_maxima(x[n0:n1], taps, (sh, sw), maxima[n0:n1], buffers)
        out[n0:n1] = maxima[n0:n1]
    # The forward keeps its input and its own copy of the output (the caller may change
    # the output in place, as an in-place ReLU does): the backward finds the winners
    # again, so inference pays for no argmax.
    cache = geometry._replace(out=maxima)
    out = out.transpose(0, 3, 1, 2)
    return (out[0] if unbatched else out), cache


def _window_maxima(x, taps, stride, out, buffers):
    """out (N, P, Q, C) = the maximum over the taps' entries of x (N, C, H, W)."""
    xp = backend.get_array_module(x)
    planes = strided_planes(x, stride, {tap.plane for tap in taps}, buffers)
    P, Q = out.shape[1:3]
    full = [tap for tap in taps if tap.covers_output(P, Q)][:1]
    if full:
        out[...] = full[0].read(planes)
    else:
        out.fill(-xp.inf)               # a window with no entry inside stays -inf
    for tap in taps:
        if tap not in full:
            view = out[tap.windows]
            xp.maximum(view, tap.read(planes), out=view)   # NaN propagates, as in torch


CHUNK_BYTES = 1 << 22     # the max-pool's passes on NumPy go over about 4 MiB of x at a time


def image_groups(x):
    """[(n0, n1)]: on NumPy, groups of images of about CHUNK_BYTES of x each, so the passes
    over a group's windows run in the CPU's cache; on CuPy the whole batch at once."""
    N = x.shape[0]
    per_image = x[:1].nbytes
    if backend.get_array_module(x) is not np or N == 0 or per_image == 0:
        return [(0, N)]
    step = max(1, CHUNK_BYTES // per_image)
    return [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]


class WindowTap(NamedTuple):
    """Tap (r, s) of every window, k = r*S + s: it reads plane (a, b) (rows a::sh, columns
    b::sw of x) for the outputs [p0, p1) x [q0, q1) whose entry lies inside the input;
    output (p, q) reads plane[i0 + p - p0, j0 + q - q0]."""
    k: int
    plane: tuple
    p0: int
    p1: int
    q0: int
    q1: int
    i0: int
    j0: int

    @property
    def windows(self):
        """The index of the outputs this tap serves in an (N, P, Q, C) array."""
        return slice(None), slice(self.p0, self.p1), slice(self.q0, self.q1)

    def read(self, planes):
        """The (N, p1 - p0, q1 - q0, C) entries this tap reads, from strided_planes'."""
        plane = planes[self.plane]
        return plane[:, self.i0:self.i0 + self.p1 - self.p0, self.j0:self.j0 + self.q1 - self.q0]

    def covers_output(self, P, Q):
        return (self.p0, self.p1, self.q0, self.q1) == (0, P, 0, Q)


def _span(start, stride, size, out_size):
    """Entries start + p*stride, p in [0, out_size), inside [0, size): (plane a, p0, p1, i0),
    with plane a = the entries a::stride and entry p at index i0 + p - p0 of that plane."""
    shift, a = divmod(start, stride)
    plane_size = len(range(a, size, stride))
    p0, p1 = max(0, -shift), min(out_size, plane_size - shift)
    return a, p0, max(p0, p1), p0 + shift


def window_taps(cache):
    """The R*S window taps (WindowTap) in row-major order, those reading nothing left out."""
    (R, S), (sh, sw), (dil_h, dil_w), (P, Q) = (cache.kernel_size, cache.stride,
                                                cache.dilation, cache.output_size)
    (top, _), (left, _) = cache.padding
    H, W = cache.x.shape[2:]
    taps = []
    for r in range(R):
        a, p0, p1, i0 = _span(r * dil_h - top, sh, H, P)
        for s in range(S):
            b, q0, q1, j0 = _span(s * dil_w - left, sw, W, Q)
            if p1 > p0 and q1 > q0:
                taps.append(WindowTap(r * S + s, (a, b), p0, p1, q0, q1, i0, j0))
    return taps


def strided_planes(x, stride, needed, buffers):
    """{(a, b): x's rows a::sh and columns b::sw, (N, Ha, Wb, C)}: views of x when its
    channels are last in memory (each row of a window's entries is a run of C), else
    copies in reused buffers (a strided view of NCHW memory would step by sw in every pass)."""
    x_nhwc = x.transpose(0, 2, 3, 1)
    views = {(a, b): x_nhwc[:, a::stride[0], b::stride[1]] for a, b in needed}
    if stride == (1, 1) or abs(x.strides[1]) <= abs(x.strides[3]):
        return views
    copies = {}
    for ab, view in views.items():
        copies[ab] = _buffer(buffers, ("plane", ab), x, view.shape, x.dtype)
        copies[ab][...] = view
    return copies


def _new_nhwc(like, shape, dtype, new="empty"):
    """A new (N, H, W, C) array (xp.empty or xp.zeros), channels-last in memory if ``like``
    (N, C, H', W') is, else an (N, C, H, W) array seen as (N, H, W, C): every array of
    one call walks memory in the same order."""
    xp = backend.get_array_module(like)
    N, H, W, C = shape
    if abs(like.strides[1]) <= abs(like.strides[3]):
        return getattr(xp, new)(shape, dtype=dtype)
    return getattr(xp, new)((N, C, H, W), dtype=dtype).transpose(0, 2, 3, 1)


def _padded_tap_views(cache):
    """The R*S strided views (N, P, Q, C) of the -inf padded channels-last input,
    one per window tap (r, s), in row-major order."""
    xp = backend.get_array_module(cache.x)
    (R, S), (sh, sw), (dil_h, dil_w), (P, Q) = (cache.kernel_size, cache.stride,
                                                cache.dilation, cache.output_size)
    x_nhwc = cache.x.transpose(0, 2, 3, 1)
    (top, bottom), (left, right) = cache.padding
    if top or bottom or left or right:
        x_nhwc = xp.pad(x_nhwc, ((0, 0), (top, bottom), (left, right), (0, 0)),
                        constant_values=-xp.inf)
    for r in range(R):
        for s in range(S):
            rows = slice(r * dil_h, r * dil_h + sh * (P - 1) + 1, sh)
            yield x_nhwc[:, rows, s * dil_w:s * dil_w + sw * (Q - 1) + 1:sw]


def _first_inside(cache):
    """(P, Q, 1) window tap r*S + s of each window's first entry inside the input
    (0 except for windows that start in the top or left padding)."""
    (_, S), (sh, sw), (dil_h, dil_w), (P, Q) = (cache.kernel_size, cache.stride,
                                                cache.dilation, cache.output_size)
    (top, _), (left, _) = cache.padding
    r0 = np.maximum(0, -((np.arange(P) * sh - top) // dil_h))     # ceil((top - p*sh) / dil_h)
    s0 = np.maximum(0, -((np.arange(Q) * sw - left) // dil_w))
    return (r0[:, None] * S + s0[None, :])[:, :, None]


def set_where(index, mask, k):
    """index = where(mask, k, index), in place: index += (k - index) * mask, in unsigned
    arithmetic (the subtraction may wrap; adding it back undoes the wrap), 15x faster
    than a masked copy."""
    step = index.dtype.type(k) - index
    step *= mask
    index += step


def _search_winners(cache, nan_aware):
    """(N, P, Q, C) tap r*S + s of each window's winner by torch's rule (a larger entry,
    or with ``nan_aware`` a NaN, replaces the maximum), and the window maxima."""
    xp = backend.get_array_module(cache.x)
    R, S = cache.kernel_size
    N, C = cache.x.shape[:2]
    P, Q = cache.output_size
    index_type = xp.uint8 if R * S <= 256 else xp.int32
    windows = _padded_tap_views(cache)
    best = xp.array(next(windows))
    argmax = xp.empty((N, P, Q, C), dtype=index_type)
    argmax[...] = xp.asarray(_first_inside(cache).astype(index_type))
    for k, window in enumerate(windows, start=1):
        wins = window > best          # strict: an earlier equal maximum keeps its place
        if nan_aware:
            wins |= xp.isnan(window)  # torch: a NaN replaces the maximum, even a NaN
        xp.maximum(best, window, out=best)
        set_where(argmax, wins, k)
    return argmax, best


def max_pool2d_winners(cache):
    """(N, P, Q, C) window tap r*S + s of the entry each output took, as torch picks it."""
    if cache.argmax is not None:
        return cache.argmax
    xp = backend.get_array_module(cache.x)
    if cache.out is not None and not bool(xp.isnan(cache.out).any()):
        return _winners_from_maxima(cache)
    argmax, best = _search_winners(cache, nan_aware=False)
    if bool(xp.isnan(best).any()):
        argmax, _ = _search_winners(cache, nan_aware=True)   # rare: only then pay for isnan
    return argmax


def max_pool2d_indices(cache):
    """torch's ``return_indices``: (N, C, P, Q) int64 flat index h*W + w of each winner
    in its input plane (no padding counted)."""
    xp = backend.get_array_module(cache.x)
    W = cache.x.shape[3]
    (R, S), (sh, sw), (dil_h, dil_w), (P, Q) = (cache.kernel_size, cache.stride,
                                                cache.dilation, cache.output_size)
    (top, _), (left, _) = cache.padding
    # each window's top-left corner (negative in the padding), plus its winning tap's offset
    h0 = (xp.arange(P) * sh - top).reshape(1, P, 1, 1)
    w0 = (xp.arange(Q) * sw - left).reshape(1, 1, Q, 1)
    tap_offset = np.array([r * dil_h * W + s * dil_w for r in range(R) for s in range(S)])
    index = (h0 * W + w0) + xp.asarray(tap_offset)[max_pool2d_winners(cache)]
    index = index.transpose(0, 3, 1, 2)
    return index[0] if cache.unbatched else index


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
    taps = window_taps(cache)
    dout_nhwc = dout.transpose(0, 2, 3, 1)
    dx = _new_nhwc(x, (N, H, W, C), dout.dtype)
    buffers = {}                                # reused from one group to the next
    for n0, n1 in image_groups(x):
        group = cache._replace(x=x[n0:n1], out=None if cache.out is None else cache.out[n0:n1],
                               argmax=None if cache.argmax is None else cache.argmax[n0:n1])
        argmax = group.argmax
        if xp is not np:                        # on a GPU a test of the data is a host sync:
            if argmax is None:                  # take the routes right for any data
                argmax, _ = _search_winners(group, nan_aware=True)
            finite = False
        else:
            if argmax is None and (group.out is None or bool(xp.isnan(group.out).any())):
                argmax = max_pool2d_winners(group)  # NaN maxima: the search of torch's rule
            finite = bool(xp.isfinite(dout_nhwc[n0:n1]).all())  # else 0 * inf would spread NaN
        d = dout_nhwc[n0:n1]
        masks = _winner_masks(group, taps, argmax, buffers)
        _add_to_winners(d, masks, group, taps, finite, buffers, dx[n0:n1])
    dx = dx.transpose(0, 3, 1, 2)
    return dx[0] if cache.unbatched else dx


def _buffer(buffers, name, like, shape, dtype):
    """buffers[name][:N]: an (N, ...) array made once at the first group's size."""
    if name not in buffers:
        buffers[name] = _new_nhwc(like, shape, dtype)
    return buffers[name][:shape[0]]


def _winner_masks(cache, taps, argmax, buffers):
    """For each tap (row-major), the (N, p1 - p0, q1 - q0, C) mask of the windows whose
    winner it is: argmax == k, or without an argmax the first entry equal to the window's
    maximum cache.out (no padding is read, so the padding never wins; a window of -inf
    takes its first entry inside; wrong where a maximum is NaN)."""
    xp = backend.get_array_module(cache.x)
    shape = cache.x.shape[:1] + tuple(cache.output_size) + cache.x.shape[1:2]
    masks = []
    if argmax is None:
        planes = strided_planes(cache.x, cache.stride, {tap.plane for tap in taps}, buffers)
        taken = _buffer(buffers, "taken", cache.x, shape, bool)
        taken.fill(False)
    for i, tap in enumerate(taps):
        mask = _buffer(buffers, ("mask", i), cache.x, shape, bool)[tap.windows]
        if argmax is not None:
            xp.equal(argmax[tap.windows], tap.k, out=mask)
        else:
            xp.equal(tap.read(planes), cache.out[tap.windows], out=mask)
            xp.greater(mask, taken[tap.windows], out=mask)      # and not taken by an earlier one
            taken[tap.windows] |= mask
        masks.append(mask)
    return masks


def _add_to_winners(dout, masks, cache, taps, finite, buffers, dx):
    """dx (N, H, W, C) = each dout (N, P, Q, C) added to its window's winner.

    Tap by tap, dout times the tap's mask goes into the plane of dx that tap
    reads (rows a::sh, columns b::sw); the taps in reverse order add the windows
    sharing an entry in the order of the windows, as torch's loop does."""
    xp = backend.get_array_module(dout)
    x = cache.x
    N, C, H, W = x.shape
    sh, sw = cache.stride
    spare_all = _buffer(buffers, "spare", x, dout.shape, dout.dtype)
    dplanes = {}
    for tap, mask in zip(reversed(taps), reversed(masks)):
        d = dout[tap.windows]
        plane = dplanes.get(tap.plane)
        first = plane is None
        if first:
            a, b = tap.plane
            shape = (N, len(range(a, H, sh)), len(range(b, W, sw)), C)
            plane = dplanes[tap.plane] = _buffer(buffers, tap.plane, x, shape, dout.dtype)
            if mask.shape != plane.shape:
                plane.fill(0)
                first = False
        target = tap.read(dplanes)
        routed = target if first else spare_all[tap.windows]
        if finite:
            xp.multiply(d, mask, out=routed)
        else:
            routed[...] = xp.where(mask, d, xp.zeros((), dout.dtype))
        if not first:
            target += routed
    for a in range(min(sh, H)):
        for b in range(min(sw, W)):
            dx[:, a::sh, b::sw] = dplanes.get((a, b), 0)


def _winners_from_maxima(cache):
    """(N, P, Q, C) tap r*S + s of each window's first entry equal to its maximum
    cache.out (no padding is read, so the padding never wins; a window of -inf takes its
    first entry inside). Wrong where a maximum is NaN."""
    xp = backend.get_array_module(cache.x)
    buffers = {}
    out = cache.out
    R, S = cache.kernel_size
    taps = window_taps(cache)
    planes = strided_planes(cache.x, cache.stride, {tap.plane for tap in taps}, buffers)
    argmax = _buffer(buffers, "argmax", cache.x, out.shape,
                     xp.uint8 if R * S <= 256 else xp.int32)
    argmax[...] = xp.asarray(_first_inside(cache).astype(argmax.dtype))
    equal = _buffer(buffers, "equal", cache.x, out.shape, bool)
    for tap in reversed(taps):      # the first tap equal to the maximum is the last kept
        xp.equal(tap.read(planes), out[tap.windows], out=equal[tap.windows])
        set_where(argmax[tap.windows], equal[tap.windows], tap.k)
    return argmax


# --------------------------------------------------------------------------- #
# Adaptive average pooling
# --------------------------------------------------------------------------- #
def adaptive_cells(size, out_size):
    """torch's adaptive pooling cells, :func:`.reference.adaptive_cell` for i < out_size."""
    return [adaptive_cell(i, size, out_size) for i in range(out_size)]


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
    for i, (h0, h1) in enumerate(adaptive_cells(H, P)):
        for j, (w0, w1) in enumerate(adaptive_cells(W, Q)):
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
    for i, (h0, h1) in enumerate(adaptive_cells(H, P)):
        for j, (w0, w1) in enumerate(adaptive_cells(W, Q)):
            area = (h1 - h0) * (w1 - w0)
            dx[:, h0:h1, w0:w1] += dout_nhwc[:, i:i + 1, j:j + 1] / area
    dx = dx.transpose(0, 3, 1, 2)
    return dx[0] if cache.unbatched else dx
