"""Max pooling and adaptive average pooling.

max_pool2d:  x (N, C, H, W) -> out (N, C, P, Q)
    out[n, c, p, q] = max_{r, s} xpad[n, c, p*sh + r, q*sw + s]      (xpad padded with -inf)
    P = floor((H + 2*pad - R) / stride) + 1
    backward: each dout goes to the window position that won (its argmax); when
    several entries tie, the first in row-major window order wins, as in torch.

adaptive_avg_pool2d:  x (N, C, H, W) -> out (N, C, P, Q), for any P <= H, Q <= W
    output cell (i, j) averages rows [floor(i*H/P), ceil((i+1)*H/P)) and
    columns [floor(j*W/Q), ceil((j+1)*W/Q)), as torch does; (1, 1) is the
    global average pool of a ResNet's head.
    backward: each dout is spread evenly over its cell.
"""
import math

from .. import backend
from ._checks import check_dout, check_float, check_rank, output_size, pair


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """x (N, C, H, W) -> out (N, C, P, Q), cache"""
    layer = "max_pool2d"
    check_rank(layer, x, 4, "(N, C, H, W)")
    check_float(layer, x)
    (R, S) = pair(kernel_size, "kernel_size")
    (sh, sw) = pair(stride if stride is not None else kernel_size, "stride")
    (ph, pw) = pair(padding, "padding")
    if ph > R // 2 or pw > S // 2 or min(ph, pw) < 0:
        raise ValueError(f"{layer}: padding {padding} must be between 0 and half the kernel "
                         f"size {kernel_size}")
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    P = output_size(layer, H, R, sh, ph, 1, "height")
    Q = output_size(layer, W, S, sw, pw, 1, "width")
    out = None
    for window in _windows(_pad_nhwc(x, ph, pw), R, S, sh, sw, P, Q):
        if out is None:
            out = xp.array(window)               # a contiguous copy of the first window
        else:
            xp.maximum(out, window, out=out)
    # The forward keeps only its input: the backward finds the winners again,
    # so inference pays for no argmax.
    cache = (x, (R, S), (sh, sw), (ph, pw), (P, Q))
    return out.transpose(0, 3, 1, 2), cache


def _pad_nhwc(x, ph, pw):
    """(N, C, H, W) -> channels-last (N, H+2ph, W+2pw, C), padded with -inf."""
    xp = backend.get_array_module(x)
    x_nhwc = x.transpose(0, 2, 3, 1)
    if ph or pw:
        x_nhwc = xp.pad(x_nhwc, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-xp.inf)
    return x_nhwc


def _windows(x_nhwc, R, S, sh, sw, P, Q):
    """The R*S strided views (N, P, Q, C), one per window offset, in row-major order."""
    for r in range(R):
        for s in range(S):
            yield x_nhwc[:, r:r + sh * (P - 1) + 1:sh, s:s + sw * (Q - 1) + 1:sw]


def max_pool2d_backward(dout, cache):
    """dout (N, C, P, Q) -> dx (N, C, H, W)"""
    x, (R, S), (sh, sw), (ph, pw), (P, Q) = cache
    N, C, H, W = x.shape
    check_dout("max_pool2d", dout, (N, C, P, Q))
    xp = backend.get_array_module(dout)
    windows = list(_windows(_pad_nhwc(x, ph, pw), R, S, sh, sw, P, Q))
    # argmax over the window offsets; strict > keeps an earlier equal maximum,
    # so ties go to the first in row-major order, as in torch
    index_type = xp.uint8 if R * S <= 256 else xp.int32
    best, argmax = xp.array(windows[0]), xp.zeros((N, P, Q, C), dtype=index_type)
    for k, window in enumerate(windows[1:], start=1):
        wins = window > best
        xp.maximum(best, window, out=best)
        # argmax = k where wins: plain arithmetic is 15x faster than a masked copy
        # (the unsigned subtraction may wrap; adding it back undoes the wrap)
        step = index_type(k) - argmax
        step *= wins
        argmax += step
    # Route each dout to its winner with one scatter-add: the flat index of the
    # winner in the padded channels-last input, summed by bincount (windows
    # overlap, so two outputs may send their gradient to the same input).
    Hp, Wp = H + 2 * ph, W + 2 * pw
    n, p, q, c = (xp.arange(size).reshape(shape) for size, shape in zip(
        (N, P, Q, C), ((N, 1, 1, 1), (1, P, 1, 1), (1, 1, Q, 1), (1, 1, 1, C))))
    offset = xp.asarray([(r * Wp + s) * C for r in range(R) for s in range(S)])
    winner = ((n * Hp + p * sh) * Wp + q * sw) * C + c + offset[argmax]
    dout_nhwc = dout.transpose(0, 2, 3, 1)
    dx = xp.bincount(winner.ravel(), weights=dout_nhwc.ravel(), minlength=N * Hp * Wp * C)
    dx = dx.astype(dout.dtype, copy=False).reshape(N, Hp, Wp, C)
    return dx[:, ph:ph + H, pw:pw + W].transpose(0, 3, 1, 2)


def _cells(size, out_size):
    """torch's adaptive pooling cells: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out_size, math.ceil((i + 1) * size / out_size)) for i in range(out_size)]


def adaptive_avg_pool2d_forward(x, output_size=(1, 1)):
    """x (N, C, H, W) -> out (N, C, P, Q), cache"""
    layer = "adaptive_avg_pool2d"
    check_rank(layer, x, 4, "(N, C, H, W)")
    check_float(layer, x)
    P, Q = pair(output_size, "output_size")
    N, C, H, W = x.shape
    if not (0 < P <= H and 0 < Q <= W):
        raise ValueError(f"{layer}: output size {(P, Q)} must be between 1 and the input "
                         f"size {(H, W)}")
    xp = backend.get_array_module(x)
    x_nhwc = x.transpose(0, 2, 3, 1)
    out = xp.empty((N, P, Q, C), dtype=x.dtype)
    for i, (h0, h1) in enumerate(_cells(H, P)):
        for j, (w0, w1) in enumerate(_cells(W, Q)):
            out[:, i, j] = x_nhwc[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out.transpose(0, 3, 1, 2), (x.shape, (P, Q))


def adaptive_avg_pool2d_backward(dout, cache):
    """dout (N, C, P, Q) -> dx (N, C, H, W)"""
    (N, C, H, W), (P, Q) = cache
    check_dout("adaptive_avg_pool2d", dout, (N, C, P, Q))
    xp = backend.get_array_module(dout)
    dout_nhwc = dout.transpose(0, 2, 3, 1)
    dx = xp.zeros((N, H, W, C), dtype=dout.dtype)
    for i, (h0, h1) in enumerate(_cells(H, P)):
        for j, (w0, w1) in enumerate(_cells(W, Q)):
            area = (h1 - h0) * (w1 - w0)
            dx[:, h0:h1, w0:w1] += dout_nhwc[:, i:i + 1, j:j + 1] / area
    return dx.transpose(0, 3, 1, 2)
