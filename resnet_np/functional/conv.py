"""2-D convolution: im2col + one GEMM forward, GEMMs + col2im backward.

    x    (N, C, H, W)         input
    w    (K, C/G, R, S)       filters, G groups of K/G filters over C/G channels
    b    (K,)                 bias, optional
    out  (N, K, P, Q)         P = floor((H + 2*pad_h - dil_h*(R-1) - 1) / stride_h) + 1

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

Rows are ordered (n, p, q) and columns (r, s, c): both follow the channels-last
memory of the input, so im2col is a strided view plus one copy, and a 1x1
convolution with stride 1 needs no copy at all.
"""
from .. import backend
from ._checks import (check_dout, check_float, check_positive, check_rank, check_same_dtype,
                      output_size, pair)


def _geometry(x, w, stride, padding, dilation, groups):
    """Validate the arguments and return the sizes every other function uses."""
    layer = "conv2d"
    check_rank(layer, x, 4, "(N, C, H, W)")
    check_rank(layer, w, 4, "weight (K, C/G, R, S)")
    check_float(layer, x)
    check_same_dtype(layer, x, w, "weight")
    stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    check_positive(layer, stride=stride, dilation=dilation)
    if min(padding) < 0:
        raise ValueError(f"{layer}: padding must be >= 0, got {padding}")
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    if groups < 1 or C % groups or K % groups:
        raise ValueError(f"{layer}: groups={groups} must divide input channels {C} and "
                         f"output channels {K}")
    if Cg * groups != C:
        raise ValueError(f"{layer}: input has {C} channels but weight {tuple(w.shape)} expects "
                         f"{Cg * groups} (= {Cg} per group x {groups} groups); x.shape={tuple(x.shape)}")
    P = output_size(layer, H, R, stride[0], padding[0], dilation[0], "height")
    Q = output_size(layer, W, S, stride[1], padding[1], dilation[1], "width")
    return dict(N=N, C=C, H=H, W=W, K=K, R=R, S=S, P=P, Q=Q, G=groups,
                stride=stride, padding=padding, dilation=dilation)


def im2col(x_nhwc, R, S, stride, padding, dilation, groups=1):
    """Unroll receptive fields into rows.

    x_nhwc  (N, H, W, C)  channels-last input
    returns (N*P*Q, G, R*S*C/G): row (n, p, q) holds, per group, the window
            xpad[n, p*sh + r*dh, q*sw + s*dw, g*C/G + c] in (r, s, c) order.

    A strided view picks the windows without copying; the final reshape makes
    the one copy (none for a 1x1 stride-1 convolution on contiguous input).
    """
    xp = backend.get_array_module(x_nhwc)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    N, H, W, C = x_nhwc.shape
    if ph or pw:
        x_nhwc = xp.pad(x_nhwc, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    x_nhwc = xp.ascontiguousarray(x_nhwc)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    P = (Hp - dh * (R - 1) - 1) // sh + 1
    Q = (Wp - dw * (S - 1) - 1) // sw + 1
    G, Cg = groups, C // groups
    sN, sH, sW, sC = x_nhwc.strides
    windows = backend.as_strided(
        x_nhwc, shape=(N, P, Q, G, R, S, Cg),
        strides=(sN, sH * sh, sW * sw, sC * Cg, sH * dh, sW * dw, sC))
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
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    N, H, W, C = x_shape_nhwc
    G, Cg = groups, C // groups
    if R == S == 1 and (sh, sw, ph, pw) == (1, 1, 0, 0):
        return cols.reshape(N, H, W, C)  # a 1x1 stride-1 conv: im2col was the identity
    P = (H + 2 * ph - dh * (R - 1) - 1) // sh + 1
    Q = (W + 2 * pw - dw * (S - 1) - 1) // sw + 1
    cols = cols.reshape(N, P, Q, G, R, S, Cg)
    dx = xp.zeros((N, H, W, G, Cg), dtype=cols.dtype)
    for r in range(R):
        p0, p1 = _valid_outputs(r * dh, ph, sh, H, P)
        if p0 > p1:
            continue
        rows = slice(p0 * sh + r * dh - ph, p1 * sh + r * dh - ph + 1, sh)
        for s in range(S):
            q0, q1 = _valid_outputs(s * dw, pw, sw, W, Q)
            if q0 > q1:
                continue
            columns = slice(q0 * sw + s * dw - pw, q1 * sw + s * dw - pw + 1, sw)
            tile = dx[:, rows, columns]          # a view: += then adds in place (CuPy too)
            tile += cols[:, p0:p1 + 1, q0:q1 + 1, :, r, s, :]
    return dx.reshape(N, H, W, C)


def _weight_matrix(w, groups):
    """(K, C/G, R, S) -> (G, K/G, R*S*C/G), columns in im2col's (r, s, c) order."""
    K, Cg, R, S = w.shape
    return w.reshape(groups, K // groups, Cg, R, S).transpose(0, 1, 3, 4, 2).reshape(
        groups, K // groups, R * S * Cg)


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """out = conv2d(x, w) + b, by im2col and one matrix product per group.

    x (N, C, H, W), w (K, C/G, R, S), b (K,) or None  ->  out (N, K, P, Q), cache
    """
    g = _geometry(x, w, stride, padding, dilation, groups)
    if b is not None and tuple(b.shape) != (g["K"],):
        raise ValueError(f"conv2d: bias has shape {tuple(b.shape)}, expected ({g['K']},)")
    xp = backend.get_array_module(x)
    N, P, Q, K, G = g["N"], g["P"], g["Q"], g["K"], g["G"]
    cols = im2col(x.transpose(0, 2, 3, 1), g["R"], g["S"], g["stride"], g["padding"],
                  g["dilation"], G)
    w_mat = _weight_matrix(w, G)
    if G == 1:
        out = backend.matmul(cols[:, 0], w_mat[0].T)        # (N*P*Q, K)
    else:
        out = xp.matmul(cols.transpose(1, 0, 2), w_mat.transpose(0, 2, 1))  # (G, NPQ, K/G)
        out = out.transpose(1, 0, 2).reshape(N * P * Q, K)
    if b is not None:
        out += b
    cache = (x.shape, w, b is not None, cols, g)
    return out.reshape(N, P, Q, K).transpose(0, 3, 1, 2), cache


def conv2d_backward(dout, cache, input_grad=True):
    """Gradients of :func:`conv2d_forward`.

    dout (N, K, P, Q)  ->  dx (N, C, H, W), dw (K, C/G, R, S), db (K,) or None
    With ``input_grad=False`` dx is not computed (None): a network's first layer
    needs no gradient for its input images, and it is the costliest col2im.
    """
    x_shape, w, has_bias, cols, g = cache
    N, C, H, W = x_shape
    P, Q, K, G = g["P"], g["Q"], g["K"], g["G"]
    check_dout("conv2d", dout, (N, K, P, Q))
    xp = backend.get_array_module(dout)
    dout_mat = xp.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(N * P * Q, G, K // G)
    if G == 1:
        dw_mat = backend.matmul(dout_mat[:, 0].T, cols[:, 0])[None]         # (1, K, RSC)
    else:
        dw_mat = xp.matmul(dout_mat.transpose(1, 2, 0), cols.transpose(1, 0, 2))
    Cg, R, S = w.shape[1:]
    dw = dw_mat.reshape(G, K // G, R, S, Cg).transpose(0, 1, 4, 2, 3).reshape(w.shape)
    db = dout_mat.reshape(N * P * Q, K).sum(axis=0) if has_bias else None
    if not input_grad:
        return None, dw, db
    if _transposed_conv_is_faster(g):
        return _input_grad_by_transposed_conv(dout, w, g), dw, db
    w_mat = _weight_matrix(w, G)
    if G == 1:
        dcols = backend.matmul(dout_mat[:, 0], w_mat[0])[:, None]          # (NPQ, 1, RSC)
    else:
        dcols = xp.matmul(dout_mat.transpose(1, 0, 2), w_mat).transpose(1, 0, 2)
    dx = col2im(dcols, (N, H, W, C), R, S, g["stride"], g["padding"], g["dilation"], G)
    return dx.transpose(0, 3, 1, 2), dw, db


def _transposed_conv_is_faster(g):
    """Whether dx is cheaper as a convolution of dout than as GEMM + col2im.

    Measured here for 3x3 stride-1 convs at batch 8 (float32, 2 cores): 56x56,
    30.7 vs 52.8 ms; 28x28, 16.5 vs 21.6 ms; 14x14, 15.1 vs 17.5 ms; 7x7, 17.1
    vs 13.1 ms. So: stride 1, one group, a kernel wider than 1x1, maps of 14x14 or more.
    """
    (R, S), (ph, pw), (dh, dw) = (g["R"], g["S"]), g["padding"], g["dilation"]
    return (g["stride"] == (1, 1) and g["G"] == 1 and R * S > 1
            and ph <= dh * (R - 1) and pw <= dw * (S - 1) and g["H"] * g["W"] >= 14 * 14)


def _input_grad_by_transposed_conv(dout, w, g):
    """dx of a stride-1 convolution is itself a convolution ("transposed convolution"):

        dx[n, c, h, w] = sum_{k, r, s} dout[n, k, h + pad - r*dil, w + pad - s*dil] * w[k, c, r, s]

    i.e. dout, padded by dil*(R-1) - pad, convolved with the filters flipped in
    space and with input and output channels swapped: (C, K, R, S).
    """
    (R, S), (ph, pw), dilation = (g["R"], g["S"]), g["padding"], g["dilation"]
    xp = backend.get_array_module(w)
    w_flipped = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    padding = (dilation[0] * (R - 1) - ph, dilation[1] * (S - 1) - pw)
    dx, _ = conv2d_forward(dout, w_flipped, None, 1, padding, dilation)
    return dx


# --------------------------------------------------------------------------- #
# Naive reference: the formula above as loops over output positions
# --------------------------------------------------------------------------- #
def conv2d_forward_naive(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """The definition, one output position at a time (slow; for tests and teaching)."""
    g = _geometry(x, w, stride, padding, dilation, groups)
    xp = backend.get_array_module(x)
    (sh, sw), (ph, pw), (dh, dw) = g["stride"], g["padding"], g["dilation"]
    K, Cg, R, S = w.shape
    Kg = K // groups
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = xp.zeros((g["N"], K, g["P"], g["Q"]), dtype=x.dtype)
    for p in range(g["P"]):
        for q in range(g["Q"]):
            window = xpad[:, :, p * sh:p * sh + dh * (R - 1) + 1:dh, q * sw:q * sw + dw * (S - 1) + 1:dw]
            for grp in range(groups):
                xg = window[:, grp * Cg:(grp + 1) * Cg]               # (N, C/G, R, S)
                wg = w[grp * Kg:(grp + 1) * Kg]                        # (K/G, C/G, R, S)
                out[:, grp * Kg:(grp + 1) * Kg, p, q] = xp.einsum("ncrs,kcrs->nk", xg, wg)
    if b is not None:
        out += b.reshape(1, K, 1, 1)
    return out, (x, w, b is not None, g)


def conv2d_backward_naive(dout, cache):
    """Gradients by the same loops: each output position sends dout back to its window."""
    x, w, has_bias, g = cache
    xp = backend.get_array_module(x)
    (sh, sw), (ph, pw), (dh, dw_) = g["stride"], g["padding"], g["dilation"]
    K, Cg, R, S = w.shape
    groups, Kg = g["G"], K // g["G"]
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxpad = xp.zeros_like(xpad)
    dw = xp.zeros_like(w)
    for p in range(g["P"]):
        for q in range(g["Q"]):
            rows = slice(p * sh, p * sh + dh * (R - 1) + 1, dh)
            columns = slice(q * sw, q * sw + dw_ * (S - 1) + 1, dw_)
            for grp in range(groups):
                chans, filters = slice(grp * Cg, (grp + 1) * Cg), slice(grp * Kg, (grp + 1) * Kg)
                d = dout[:, filters, p, q]                             # (N, K/G)
                dxpad[:, chans, rows, columns] += xp.einsum("nk,kcrs->ncrs", d, w[filters])
                dw[filters] += xp.einsum("nk,ncrs->kcrs", d, xpad[:, chans, rows, columns])
    dx = dxpad[:, :, ph:ph + g["H"], pw:pw + g["W"]]
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db
