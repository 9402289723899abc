"""2-D convolution: im2col + one GEMM forward, GEMMs + col2im backward.

    x    (N, C, H, W)         input ((C, H, W) unbatched, as torch accepts)
    w    (K, C/G, R, S)       filters, G groups of K/G filters over C/G channels
    b    (K,)                 bias, optional
    out  (N, K, P, Q)         P = floor((H + pad_top + pad_bottom - dil_h*(R-1) - 1) / stride_h) + 1

    out[n, k, p, q] = b[k] + sum_{c, r, s} w[k, c, r, s]
                      * xpad[n, g(k)*C/G + c, p*stride_h + r*dil_h, q*stride_w + s*dil_w]

With every receptive field unrolled into a row ("im2col"), the convolution
is a matrix product:  cols (N*P*Q, R*S*C) @ w_mat.T (R*S*C, K) = out (N*P*Q, K).
The backward then needs two more products and the adjoint of im2col:

    dw_mat = dout_mat.T @ cols          (K, R*S*C)
    dcols  = dout_mat @ w_mat           (N*P*Q, R*S*C)
    dx     = col2im(dcols)              every column entry added back where it came from
    db     = dout summed over N, P, Q

For a stride-1 convolution dx is also a convolution of dout with the flipped
filters (a "transposed convolution"); on large maps that is the faster route.

Memory: the columns of an R x S kernel hold every input value R*S/stride^2
times (576 MB for ResNet-18's 64-channel 3x3 layers on a CIFAR batch of 128,
against 32 MB for the input). The forward keeps whichever is smaller, the
columns or the input itself (which the layer before holds anyway); from the
input, the backward unrolls the columns again for dw and frees them at once.
A 1x1 stride-1 convolution's columns are its input, so nothing is redone.

Rows are ordered (n, p, q) and columns (r, s, c): both follow the channels-last
memory of the input, so im2col is a strided view plus one copy, and a 1x1
convolution with stride 1 needs no copy at all.

Padding is per side, so padding='same' with an even kernel (torch puts the
extra row and column at the end) is zero padding like any other. The other
padding modes (reflect, replicate, circular; see :mod:`.padding`) pad the input
first and convolve it without padding; the backward folds the gradient of the
padded input back onto the input.
"""
from typing import NamedTuple

from .. import backend
from ._checks import (check_array, check_float, check_image_dout, check_image_rank,
                      check_positive, check_rank, check_same_dtype, output_size, pair)
from .sizes import conv_padding, output_length, sides
from .padding import Pad2dCache, check_padding_mode, pad2d_backward, pad2d_forward
from .winograd import (WinogradCache, winograd_conv3x3_backward, winograd_conv3x3_forward,
                       winograd_tile)


class ConvGeometry(NamedTuple):
    """The sizes of one convolution, in the notation of :mod:`resnet_np.functional`."""
    N: int
    C: int
    H: int                  # input height and width (before the zero padding)
    W: int
    K: int
    R: int
    S: int
    G: int
    P: int
    Q: int
    stride: tuple           # (sh, sw)
    padding: tuple          # zeros added by im2col: ((top, bottom), (left, right))
    dilation: tuple         # (dil_h, dil_w)


class Conv2dCache(NamedTuple):
    """What :func:`conv2d_backward` needs from :func:`conv2d_forward`."""
    geometry: ConvGeometry  # of the GEMM convolution (after any pre-padding)
    w: object               # (K, C/G, R, S)
    has_bias: bool
    cols: object            # im2col of the input, (N*P*Q, G, R*S*C/G), when no larger than x
    pad: Pad2dCache         # the reflect/replicate/circular pre-padding, or None
    unbatched: bool         # the input was (C, H, W)
    winograd: WinogradCache = None  # set (and cols None) when Winograd computed the forward
    x_nhwc: object = None   # the input, channels-last (N, H, W, C), kept instead of cols when
                            # cols would be larger: the backward unrolls it again


def _geometry(x, w, stride, padding, dilation, groups):
    """Validate the arguments of a convolution of 4-D ``x`` and return its sizes."""
    layer = "conv2d"
    check_rank(layer, w, 4, "weight (K, C/G, R, S)")
    check_float(layer, x)
    check_same_dtype(layer, x, w, "weight")
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    check_positive(layer, stride=stride, dilation=dilation)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    if not isinstance(groups, int) or groups < 1 or C % groups or K % groups:
        raise ValueError(f"{layer}: groups={groups} must divide input channels {C} and "
                         f"output channels {K}")
    if Cg * groups != C:
        raise ValueError(f"{layer}: input has {C} channels but weight {tuple(w.shape)} expects "
                         f"{Cg * groups} (= {Cg} per group x {groups} groups); x.shape={tuple(x.shape)}")
    P = output_size(layer, H, R, stride[0], padding[0], dilation[0], "height")
    Q = output_size(layer, W, S, stride[1], padding[1], dilation[1], "width")
    return ConvGeometry(N, C, H, W, K, R, S, groups, P, Q, stride, padding, dilation)


def im2col(x_nhwc, R, S, stride, padding, dilation, groups=1):
    """Unroll receptive fields into rows.

    x_nhwc  (N, H, W, C)  channels-last input
    padding (ph, pw), or per side ((top, bottom), (left, right)): zeros around x
    returns (N*P*Q, G, R*S*C/G): row (n, p, q) holds, per group, the window
            xpad[n, p*sh + r*dil_h, q*sw + s*dil_w, g*C/G + c] in (r, s, c) order.

    A strided view picks the windows without copying; the final reshape makes
    the one copy (none for a 1x1 stride-1 convolution on contiguous input).
    """
    xp = backend.get_array_module(x_nhwc)
    (sh, sw), (dil_h, dil_w) = stride, dilation
    (pt, pb), (pl, pr) = sides(padding)
    N, H, W, C = x_nhwc.shape
    P = output_length(H, R, sh, (pt, pb), dil_h)
    Q = output_length(W, S, sw, (pl, pr), dil_w)
    if pt or pb or pl or pr:
        x_nhwc = xp.pad(x_nhwc, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    x_nhwc = xp.ascontiguousarray(x_nhwc)
    G, Cg = groups, C // groups
    sN, sH, sW, sC = x_nhwc.strides
    windows = backend.as_strided(
        x_nhwc, shape=(N, P, Q, G, R, S, Cg),
        strides=(sN, sH * sh, sW * sw, sC * Cg, sH * dil_h, sW * dil_w, sC))
    return windows.reshape(N * P * Q, G, R * S * Cg)


def _valid_outputs(offset, pad, stride, size, out_size):
    """First and last output p whose input row p*stride + offset - pad lies in [0, size)."""
    first = max(0, -((offset - pad) // stride))          # ceil((pad - offset) / stride)
    last = min(out_size - 1, (size - 1 + pad - offset) // stride)
    return first, last


def col2im(cols, x_shape_nhwc, R, S, stride, padding, dilation, groups=1):
    """Adjoint of :func:`im2col`: add every column entry back to its input pixel.

    cols     (N*P*Q, G, R*S*C/G)
    returns  (N, H, W, C)

    Windows overlap when the stride is smaller than the kernel, so entries are
    accumulated (``+=``), never assigned: one strided slice per kernel offset.
    Entries that fall in the zero padding are dropped (each slice is clipped),
    so no padded buffer is needed.
    """
    xp = backend.get_array_module(cols)
    (sh, sw), (dil_h, dil_w) = stride, dilation
    (pt, pb), (pl, pr) = sides(padding)
    N, H, W, C = x_shape_nhwc
    G, Cg = groups, C // groups
    if R == S == 1 and (sh, sw, pt, pb, pl, pr) == (1, 1, 0, 0, 0, 0):
        return cols.reshape(N, H, W, C)  # a 1x1 stride-1 conv: im2col was the identity
    P = output_length(H, R, sh, (pt, pb), dil_h)
    Q = output_length(W, S, sw, (pl, pr), dil_w)
    cols = cols.reshape(N, P, Q, G, R, S, Cg)
    dx = xp.zeros((N, H, W, G, Cg), dtype=cols.dtype)
    for r in range(R):
        p0, p1 = _valid_outputs(r * dil_h, pt, sh, H, P)
        if p0 > p1:
            continue
        rows = slice(p0 * sh + r * dil_h - pt, p1 * sh + r * dil_h - pt + 1, sh)
        for s in range(S):
            q0, q1 = _valid_outputs(s * dil_w, pl, sw, W, Q)
            if q0 > q1:
                continue
            columns = slice(q0 * sw + s * dil_w - pl, q1 * sw + s * dil_w - pl + 1, sw)
            tile = dx[:, rows, columns]          # a view: += then adds in place (CuPy too)
            tile += cols[:, p0:p1 + 1, q0:q1 + 1, :, r, s, :]
    return dx.reshape(N, H, W, C)


def _weight_matrix(w, groups):
    """(K, C/G, R, S) -> (G, K/G, R*S*C/G), columns in im2col's (r, s, c) order."""
    K, Cg, R, S = w.shape
    return w.reshape(groups, K // groups, Cg, R, S).transpose(0, 1, 3, 4, 2).reshape(
        groups, K // groups, R * S * Cg)


def _prepare(layer, x, w, stride, padding, dilation, padding_mode):
    """Checks shared by the fast and the naive forward -> (4-D x, unbatched, per-side pads)."""
    check_array(layer, x)
    check_array(layer, w, "weight")
    x, unbatched = check_image_rank(layer, x)
    check_rank(layer, w, 4, "weight (K, C/G, R, S)")
    pads = conv_padding(padding, w.shape[2:], stride, dilation, layer)
    check_padding_mode(layer, padding_mode, pads, x.shape[2:])
    return x, unbatched, pads


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1,
                   padding_mode="zeros", winograd=None):
    """out = conv2d(x, w) + b, by im2col and one matrix product per group.

    x (N, C, H, W) or (C, H, W), w (K, C/G, R, S), b (K,) or None
    ->  out (N, K, P, Q) (or (K, P, Q)), cache
    padding: int, (ph, pw), ((top, bottom), (left, right)), 'same' or 'valid';
    padding_mode: 'zeros' (inside im2col), or 'reflect', 'replicate', 'circular'
    (the input is padded first, then convolved without padding).
    winograd: None (im2col), or "fast" / "accurate": Winograd minimal filtering
    (:mod:`.winograd`) where :func:`~.winograd.winograd_tile` picks it for this
    shape; "fast" may use F(4x4, 3x3), with a few times im2col's float32 rounding,
    "accurate" only F(2x2, 3x3). Conv2d asks for "fast" under no_grad (inference)
    and for "accurate" in training.
    """
    x, unbatched, pads = _prepare("conv2d", x, w, stride, padding, dilation, padding_mode)
    pad = None
    if padding_mode != "zeros" and any(any(p) for p in pads):
        x, pad = pad2d_forward(x, pads, padding_mode, "conv2d")
        pads = (0, 0), (0, 0)
    g = _geometry(x, w, stride, pads, dilation, groups)
    if b is not None and tuple(b.shape) != (g.K,):
        raise ValueError(f"conv2d: bias has shape {tuple(b.shape)}, expected ({g.K},)")
    m = winograd_tile(x, g, winograd) if winograd else 0
    if m:
        out, winograd = winograd_conv3x3_forward(x, w, g.padding, m)
        if b is not None:
            out += b[:, None, None]
        cache = Conv2dCache(g, w, b is not None, None, pad, unbatched, winograd)
        return (out[0] if unbatched else out), cache
    x_nhwc = x.transpose(0, 2, 3, 1)
    cols = im2col(x_nhwc, g.R, g.S, g.stride, g.padding, g.dilation, g.G)
    w_mat = _weight_matrix(w, g.G)
    out = backend.matmul(cols.transpose(1, 0, 2), w_mat.transpose(0, 2, 1))  # (G, NPQ, K/G)
    out = out.transpose(1, 0, 2).reshape(g.N * g.P * g.Q, g.K)
    if b is not None:
        out += b
    out = out.reshape(g.N, g.P, g.Q, g.K).transpose(0, 3, 1, 2)
    if cols.size > x.size:      # keep the input; the backward unrolls it again
        cache = Conv2dCache(g, w, b is not None, None, pad, unbatched, x_nhwc=x_nhwc)
    else:
        cache = Conv2dCache(g, w, b is not None, cols, pad, unbatched)
    return (out[0] if unbatched else out), cache


def conv2d_backward(dout, cache, input_grad=True):
    """Gradients of :func:`conv2d_forward`.

    dout (N, K, P, Q)  ->  dx (N, C, H, W), dw (K, C/G, R, S), db (K,) or None
    (dout (K, P, Q) and dx (C, H, W) for an unbatched input).
    With ``input_grad=False`` dx is not computed (None): a network's first layer
    needs no gradient for its input images, and it is the costliest col2im.
    """
    g, w = cache.geometry, cache.w
    N, C, H, W, K = g.N, g.C, g.H, g.W, g.K
    R, S, G, P, Q = g.R, g.S, g.G, g.P, g.Q
    dout = check_image_dout("conv2d", dout, (N, K, P, Q), cache.unbatched)
    xp = backend.get_array_module(dout)
    dout_mat = xp.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(N * P * Q, G, K // G)
    db = dout_mat.reshape(N * P * Q, K).sum(axis=0) if cache.has_bias else None
    if cache.winograd is not None:
        dx, dw = winograd_conv3x3_backward(dout_mat.reshape(N, P, Q, K).transpose(0, 3, 1, 2),
                                           cache.winograd, input_grad)
        if dx is not None and cache.pad is not None:
            dx = pad2d_backward(dx, cache.pad)
        return (dx[0] if cache.unbatched and dx is not None else dx), dw, db
    cols = cache.cols
    if cols is None:
        cols = im2col(cache.x_nhwc, R, S, g.stride, g.padding, g.dilation, G)
    dw_mat = backend.matmul(dout_mat.transpose(1, 2, 0), cols.transpose(1, 0, 2))
    del cols                    # free unrolled columns before dx allocates its own
    Cg = w.shape[1]
    dw = dw_mat.reshape(G, K // G, R, S, Cg).transpose(0, 1, 4, 2, 3).reshape(w.shape)
    if not input_grad:
        return None, dw, db
    if _transposed_conv_is_faster(g):
        dx = _input_grad_by_transposed_conv(dout, w, g)
    else:
        dcols = backend.matmul(dout_mat.transpose(1, 0, 2), _weight_matrix(w, G))  # (G, NPQ, RSC/G)
        dx = col2im(dcols.transpose(1, 0, 2), (N, H, W, C), R, S, g.stride, g.padding,
                    g.dilation, G).transpose(0, 3, 1, 2)
    if cache.pad is not None:
        dx = pad2d_backward(dx, cache.pad)
    return (dx[0] if cache.unbatched else dx), dw, db


def _transposed_conv_is_faster(g):
    """Whether dx is cheaper as a convolution of dout than as GEMM + col2im.

    Measured here for 3x3 stride-1 convs at batch 8 (float32, 2 cores): 56x56,
    30.7 vs 52.8 ms; 28x28, 16.5 vs 21.6 ms; 14x14, 15.1 vs 17.5 ms; 7x7, 17.1
    vs 13.1 ms. So: stride 1, one group, a kernel wider than 1x1, maps of 14x14 or more.
    """
    (dil_h, dil_w), (R, S) = g.dilation, (g.R, g.S)
    return (g.stride == (1, 1) and g.G == 1 and R * S > 1
            and max(g.padding[0]) <= dil_h * (R - 1) and max(g.padding[1]) <= dil_w * (S - 1)
            and g.H * g.W >= 14 * 14)


def _input_grad_by_transposed_conv(dout, w, g):
    """dx of a stride-1 convolution is itself a convolution ("transposed convolution"):

        dx[n, c, h, w] = sum_{k, r, s} dout[n, k, h + top - r*dil, w + left - s*dil] * w[k, c, r, s]

    i.e. dout, padded by dil*(R-1) - pad on each side, convolved with the filters
    flipped in space and with input and output channels swapped: (C, K, R, S).
    """
    (dil_h, dil_w), ((pt, pb), (pl, pr)) = g.dilation, g.padding
    xp = backend.get_array_module(w)
    w_flipped = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    extent_h, extent_w = dil_h * (g.R - 1), dil_w * (g.S - 1)
    padding = (extent_h - pt, extent_h - pb), (extent_w - pl, extent_w - pr)
    dx, _ = conv2d_forward(dout, w_flipped, None, 1, padding, g.dilation)
    return dx
