"""The maths of every layer a ResNet uses, in its plainest form: read this file first.

Each layer is a pair ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> gradients``: the formula of its docstring written
as loops over output positions or as the plainest array expression, with no
trick for speed. The fast layers beside this file (:mod:`.conv`,
:mod:`.batchnorm`, :mod:`.pooling`, ...) compute the same numbers, and
tests/test_reference.py checks that they do, in float64 to 1e-12, over every
case of :mod:`resnet_np.layer_cases`. To learn the maths, read this file; to
see how it is made fast, read conv.py, batchnorm.py and pooling.py.

Notation (as in :mod:`resnet_np.functional`): N batch, C input channels, H, W
input height and width, K filters, R, S kernel height and width, G groups,
P, Q output height and width, M values per channel (batch norm) or classes
(cross-entropy). Images are (N, C, H, W). Every function works on NumPy or
CuPy arrays (``xp``), so the same twin checks both devices.
"""
from typing import NamedTuple

from .. import backend
from .padding import source_index
from .sizes import conv_padding, output_length, pair

NUMPY_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                   "circular": "wrap"}


def _per_channel(v):
    """(C,) -> (1, C, 1, 1), to broadcast over (N, C, H, W)."""
    return v.reshape(1, -1, 1, 1)


# --------------------------------------------------------------------------- #
# Convolution
# --------------------------------------------------------------------------- #
class ConvCache(NamedTuple):
    xpad: object            # (N, C, H + top + bottom, W + left + right), the padded input
    w: object               # (K, C/G, R, S)
    has_bias: bool
    stride: tuple           # (sh, sw)
    dilation: tuple         # (dil_h, dil_w)
    groups: int
    padding: tuple          # ((top, bottom), (left, right)) around x
    padding_mode: str       # 'zeros', 'reflect', 'replicate' or 'circular'


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """2-D convolution, one output position at a time.

    x (N, C, H, W), w (K, C/G, R, S), b (K,) or None  ->  out (N, K, P, Q), cache

        out[n, k, p, q] = b[k] + sum_{c, r, s} w[k, c, r, s]
                          * xpad[n, g*C/G + c, p*sh + r*dil_h, q*sw + s*dil_w]

    where filter k belongs to group g = k // (K/G), xpad is x padded as
    ``padding_mode`` says (``padding`` an int, a pair, per side, 'same' or
    'valid'), and P = floor((H + top + bottom - dil_h*(R-1) - 1) / sh) + 1.
    """
    xp = backend.get_array_module(x)
    (sh, sw), (dil_h, dil_w) = pair(stride, "stride"), pair(dilation, "dilation")
    pads = conv_padding(padding, w.shape[2:], stride, dilation)
    xpad = xp.pad(x, ((0, 0), (0, 0)) + pads, mode=NUMPY_PAD_MODES[padding_mode])
    N, _, Hp, Wp = xpad.shape
    K, Cg, R, S = w.shape
    Kg = K // groups
    P, Q = output_length(Hp, R, sh, 0, dil_h), output_length(Wp, S, sw, 0, dil_w)
    out = xp.zeros((N, K, P, Q), dtype=x.dtype)
    for p in range(P):
        for q in range(Q):
            window = xpad[:, :, p * sh:p * sh + dil_h * (R - 1) + 1:dil_h,
                          q * sw:q * sw + dil_w * (S - 1) + 1:dil_w]          # (N, C, R, S)
            for g in range(groups):
                xg = window[:, g * Cg:(g + 1) * Cg]                           # (N, C/G, R, S)
                wg = w[g * Kg:(g + 1) * Kg]                                   # (K/G, C/G, R, S)
                out[:, g * Kg:(g + 1) * Kg, p, q] = xp.einsum("ncrs,kcrs->nk", xg, wg)
    if b is not None:
        out += _per_channel(b)
    cache = ConvCache(xpad, w, b is not None, (sh, sw), (dil_h, dil_w), groups, pads, padding_mode)
    return out, cache


def conv2d_backward(dout, cache):
    """Gradients of :func:`conv2d_forward` by the same loops.

    dout (N, K, P, Q)  ->  dx (N, C, H, W), dw (K, C/G, R, S), db (K,) or None

    Each output position (p, q) sends dout[:, k, p, q] back along the products
    that made it: dxpad[window] += dout * w[k] and dw[k] += dout * xpad[window];
    then each padded position adds its gradient to the input entry it copies.
    db[k] = sum over n, p, q of dout[n, k, p, q].
    """
    xpad, w = cache.xpad, cache.w
    xp = backend.get_array_module(xpad)
    (sh, sw), (dil_h, dil_w) = cache.stride, cache.dilation
    K, Cg, R, S = w.shape
    Kg = K // cache.groups
    dxpad, dw = xp.zeros_like(xpad), xp.zeros_like(w)
    for p in range(dout.shape[2]):
        for q in range(dout.shape[3]):
            rows = slice(p * sh, p * sh + dil_h * (R - 1) + 1, dil_h)
            columns = slice(q * sw, q * sw + dil_w * (S - 1) + 1, dil_w)
            for g in range(cache.groups):
                channels, filters = slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)
                d = dout[:, filters, p, q]                                    # (N, K/G)
                dxpad[:, channels, rows, columns] += xp.einsum("nk,kcrs->ncrs", d, w[filters])
                dw[filters] += xp.einsum("nk,ncrs->kcrs", d, xpad[:, channels, rows, columns])
    dx = unpad2d(dxpad, cache.padding, cache.padding_mode)
    db = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    return dx, dw, db


def unpad2d(dxpad, padding, padding_mode):
    """The gradient of padding: dxpad (N, C, H', W') -> dx (N, C, H, W), every padded
    entry's gradient added to the input entry it copies (zeros copy nothing)."""
    xp = backend.get_array_module(dxpad)
    (top, bottom), (left, right) = padding
    N, C, Hp, Wp = dxpad.shape
    H, W = Hp - top - bottom, Wp - left - right
    if padding_mode == "zeros":
        return dxpad[:, :, top:top + H, left:left + W]
    rows = source_index(H, top, bottom, padding_mode)
    columns = source_index(W, left, right, padding_mode)
    dx = xp.zeros((N, C, H, W), dtype=dxpad.dtype)
    for i, source_row in enumerate(rows):
        for j, source_column in enumerate(columns):
            dx[:, :, source_row, source_column] += dxpad[:, :, i, j]
    return dx


# --------------------------------------------------------------------------- #
# Batch normalisation
# --------------------------------------------------------------------------- #
class BatchNormCache(NamedTuple):
    centered: object        # (N, C, H, W) x - mean
    inv_std: object         # (C,) 1 / sqrt(var + eps)
    gamma: object           # (C,) or None (1)
    has_beta: bool
    training: bool


def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training,
                         momentum=0.1, eps=1e-5):
    """Batch normalisation of each channel over its M = N*H*W values, step by step.

    x (N, C, H, W); gamma, beta, running_mean, running_var (C,) or None  ->  out, cache

    train:  mean = sum(x) / M              var = sum((x - mean)^2) / M    (biased)
            running_mean <- (1 - momentum) * running_mean + momentum * mean
            running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)
    eval:   mean, var = running_mean, running_var
    both:   xhat = (x - mean) / sqrt(var + eps)      out = gamma * xhat + beta
    """
    xp = backend.get_array_module(x)
    M = x.shape[0] * x.shape[2] * x.shape[3]
    if training:
        mean = x.mean(axis=(0, 2, 3))
        var = ((x - _per_channel(mean)) ** 2).mean(axis=(0, 2, 3))
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * var * M / (M - 1)
    else:
        mean, var = running_mean, running_var
    inv_std = 1 / xp.sqrt(var + eps)
    centered = x - _per_channel(mean)
    out = centered * _per_channel(inv_std)
    if gamma is not None:
        out = out * _per_channel(gamma)
    if beta is not None:
        out = out + _per_channel(beta)
    return out, BatchNormCache(centered, inv_std, gamma, beta is not None, training)


def batch_norm2d_backward(dout, cache):
    """The chain rule through each step of :func:`batch_norm2d_forward` (sums over N, H, W).

    dout (N, C, H, W)  ->  dx (N, C, H, W), dgamma (C,) or None, dbeta (C,) or None

        dxhat  = dout * gamma                 dgamma = sum(dout * xhat)    dbeta = sum(dout)
    train:
        dvar   = sum(dxhat * (x - mean)) * -1/2 * (var + eps)^(-3/2)
        dmean  = -sum(dxhat) / sqrt(var + eps)     (the path through var adds
                 dvar * -2/M * sum(x - mean) = 0)
        dx     = dxhat / sqrt(var + eps) + dvar * 2 (x - mean) / M + dmean / M
    eval (mean and var are constants):
        dx     = dxhat / sqrt(var + eps)
    """
    axes = (0, 2, 3)
    M = dout.shape[0] * dout.shape[2] * dout.shape[3]
    centered, inv_std = cache.centered, _per_channel(cache.inv_std)
    dxhat = dout if cache.gamma is None else dout * _per_channel(cache.gamma)
    dx = dxhat * inv_std
    if cache.training:
        dvar = (dxhat * centered).sum(axis=axes, keepdims=True) * -0.5 * inv_std ** 3
        dmean = -dxhat.sum(axis=axes, keepdims=True) * inv_std
        dx = dx + dvar * 2 * centered / M + dmean / M
    dgamma = (dout * centered * inv_std).sum(axis=axes) if cache.gamma is not None else None
    dbeta = dout.sum(axis=axes) if cache.has_beta else None
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------- #
# ReLU
# --------------------------------------------------------------------------- #
def relu_forward(x):
    """out = max(x, 0), any shape (a NaN stays NaN, as in torch)  ->  out, cache = out"""
    xp = backend.get_array_module(x)
    out = xp.maximum(x, 0)
    return out, out


def relu_backward(dout, cache):
    """dx = dout where out > 0, else 0 (0 at x = 0; a NaN input passes dout, as torch's
    threshold_backward: the test is ``out <= 0``, false for NaN)."""
    xp = backend.get_array_module(dout)
    return xp.where(cache <= 0, xp.zeros((), dtype=dout.dtype), dout)


# --------------------------------------------------------------------------- #
# Max pooling
# --------------------------------------------------------------------------- #
class MaxPoolCache(NamedTuple):
    x: object               # (N, C, H, W)
    kernel_size: tuple      # (R, S)
    stride: tuple           # (sh, sw)
    padding: tuple          # ((top, bottom), (left, right)); the windows are cut to the input
    dilation: tuple         # (dil_h, dil_w)
    output_size: tuple      # (P, Q)


def _inside(start, kernel, dilation, size):
    """The indices start + r*dilation, r < kernel, that lie in [0, size): a window cut
    to the input (its padding never wins a max-pool)."""
    return [start + r * dilation for r in range(kernel) if 0 <= start + r * dilation < size]


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """x (N, C, H, W) -> out (N, C, P, Q), cache

        out[n, c, p, q] = max over r < R, s < S of x[n, c, p*sh - ph + r*dil_h,
                                                          q*sw - pw + s*dil_w]

    over the entries inside x (the padding is -inf: it never wins); a NaN in a
    window makes its maximum NaN, as in torch. P from :func:`.sizes.output_length`,
    rounded up with ``ceil_mode``.
    """
    xp = backend.get_array_module(x)
    (R, S), (ph, pw) = pair(kernel_size), pair(padding)
    (sh, sw), (dil_h, dil_w) = pair(kernel_size if stride is None else stride), pair(dilation)
    N, C, H, W = x.shape
    P = output_length(H, R, sh, ph, dil_h, ceil_mode)
    Q = output_length(W, S, sw, pw, dil_w, ceil_mode)
    out = xp.empty((N, C, P, Q), dtype=x.dtype)
    for p in range(P):
        rows = _inside(p * sh - ph, R, dil_h, H)
        for q in range(Q):
            columns = _inside(q * sw - pw, S, dil_w, W)
            out[:, :, p, q] = x[:, :, rows][:, :, :, columns].max(axis=(2, 3))
    cache = MaxPoolCache(x, (R, S), (sh, sw), ((ph, ph), (pw, pw)), (dil_h, dil_w), (P, Q))
    return out, cache


def max_pool2d_backward(dout, cache):
    """dout (N, C, P, Q) -> dx (N, C, H, W): each dout goes to its window's winner.

    The winner is torch's: the window's entries inside x, in row-major order,
    each replacing the running maximum when it is larger or NaN (so the first
    of equal maxima wins, and the last NaN). Windows that share a winner add.
    Also takes the fast layer's cache (:class:`.pooling.MaxPool2dCache`).
    """
    x = cache.x
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    (R, S), (sh, sw), (dil_h, dil_w) = cache.kernel_size, cache.stride, cache.dilation
    (top, _), (left, _) = cache.padding
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    for p in range(cache.output_size[0]):
        for q in range(cache.output_size[1]):
            entries = [(h, w) for h in _inside(p * sh - top, R, dil_h, H)
                       for w in _inside(q * sw - left, S, dil_w, W)]
            best = xp.full((N, C), -xp.inf, dtype=x.dtype)
            winner = xp.zeros((N, C), dtype=xp.int64)
            for j, (h, w) in enumerate(entries):
                wins = (x[:, :, h, w] > best) | xp.isnan(x[:, :, h, w])
                best = xp.where(wins, x[:, :, h, w], best)
                winner = xp.where(wins, j, winner)
            for j, (h, w) in enumerate(entries):
                dx[:, :, h, w] += xp.where(winner == j, dout[:, :, p, q], 0)
    return dx


# --------------------------------------------------------------------------- #
# Adaptive average pooling
# --------------------------------------------------------------------------- #
class AdaptiveAvgPoolCache(NamedTuple):
    x_shape: tuple          # (N, C, H, W)
    output_size: tuple      # (P, Q)


def adaptive_cell(i, size, out_size):
    """torch's cell i of ``out_size`` over ``size``: [floor(i*size/out), ceil((i+1)*size/out))."""
    return i * size // out_size, -(-(i + 1) * size // out_size)


def adaptive_avg_pool2d_forward(x, output_size=(1, 1)):
    """x (N, C, H, W) -> out (N, C, P, Q), cache; out[:, :, i, j] is the mean of cell (i, j):
    rows adaptive_cell(i, H, P), columns adaptive_cell(j, W, Q). (1, 1) is the global
    average pool of a ResNet's head; None in a pair keeps that input size."""
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    wanted = (output_size, output_size) if isinstance(output_size, int) else output_size
    P, Q = (H if wanted[0] is None else wanted[0]), (W if wanted[1] is None else wanted[1])
    out = xp.empty((N, C, P, Q), dtype=x.dtype)
    for i in range(P):
        h0, h1 = adaptive_cell(i, H, P)
        for j in range(Q):
            w0, w1 = adaptive_cell(j, W, Q)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out, AdaptiveAvgPoolCache(tuple(x.shape), (P, Q))


def adaptive_avg_pool2d_backward(dout, cache):
    """dout (N, C, P, Q) -> dx (N, C, H, W): each dout spread evenly over its cell
    (cells overlap when the sizes do not divide: their shares add)."""
    xp = backend.get_array_module(dout)
    N, C, H, W = cache.x_shape
    P, Q = cache.output_size
    dx = xp.zeros((N, C, H, W), dtype=dout.dtype)
    for i in range(P):
        h0, h1 = adaptive_cell(i, H, P)
        for j in range(Q):
            w0, w1 = adaptive_cell(j, W, Q)
            dx[:, :, h0:h1, w0:w1] += dout[:, :, i:i + 1, j:j + 1] / ((h1 - h0) * (w1 - w0))
    return dx


# --------------------------------------------------------------------------- #
# Flatten and linear
# --------------------------------------------------------------------------- #
def flatten_forward(x, start_dim=1, end_dim=-1):
    """Dims start_dim..end_dim merged into one, as torch.flatten: (N, C, H, W) -> (N, C*H*W)
    in (c, h, w) order by default  ->  out, cache = x's shape"""
    shape = tuple(x.shape)
    start, end = start_dim % len(shape), end_dim % len(shape)
    merged = 1
    for n in shape[start:end + 1]:
        merged *= n
    return x.reshape(shape[:start] + (merged,) + shape[end + 1:]), shape


def flatten_backward(dout, cache):
    """dout (the output's shape) -> dx (the input's shape): the same numbers."""
    return dout.reshape(cache)


class LinearCache(NamedTuple):
    x: object               # (N, D)
    w: object               # (F, D)
    has_bias: bool


def linear_forward(x, w, b=None):
    """x (N, D), w (F, D), b (F,) or None  ->  out (N, F), cache

        out[n, f] = b[f] + sum_d x[n, d] * w[f, d]        (out = x @ w.T + b)
    """
    out = x @ w.T
    if b is not None:
        out = out + b
    return out, LinearCache(x, w, b is not None)


def linear_backward(dout, cache):
    """dout (N, F)  ->  dx = dout @ w (N, D), dw = dout.T @ x (F, D), db = sum_n dout (F,)"""
    db = dout.sum(axis=0) if cache.has_bias else None
    return dout @ cache.w, dout.T @ cache.x, db


# --------------------------------------------------------------------------- #
# Residual add
# --------------------------------------------------------------------------- #
def add_forward(a, b):
    """out = a + b (a block's residual branch and its shortcut, same shape)  ->  out, cache"""
    return a + b, a.shape


def add_backward(dout, cache):
    """da = db = dout: the sum passes its gradient to both branches unchanged."""
    return dout, dout


# --------------------------------------------------------------------------- #
# Softmax cross-entropy
# --------------------------------------------------------------------------- #
class CrossEntropyCache(NamedTuple):
    p: object               # (N, M) softmax of the logits
    target: object          # (N, M) target distribution T


def softmax_cross_entropy_forward(logits, labels, label_smoothing=0.0):
    """logits (N, M), labels (N,) class indices  ->  loss (a 0-d array), cache

        log p[n, m] = logits[n, m] - log sum_j exp(logits[n, j])      (log-softmax)
        T[n, m]     = (1 - eps) * [m == labels[n]] + eps / M         (eps = label_smoothing)
        loss        = -1/N sum_n sum_m T[n, m] log p[n, m]

    The maximum of each row is subtracted first: exp never overflows.
    """
    xp = backend.get_array_module(logits)
    N, M = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    target = xp.full((N, M), label_smoothing / M, dtype=logits.dtype)
    target[xp.arange(N), xp.asarray(labels)] += 1 - label_smoothing
    loss = -(target * log_p).sum() / N
    return loss, CrossEntropyCache(xp.exp(log_p), target)


def softmax_cross_entropy_backward(dloss, cache):
    """dloss (a scalar)  ->  dlogits (N, M) = dloss * (p - T) / N  (each row of T sums to 1)"""
    return dloss * (cache.p - cache.target) / cache.p.shape[0]
