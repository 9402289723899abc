"""im2col and col2im as one CUDA kernel each (``cuda/im2col.cu``).

Same arguments and results as :func:`resnet_np.functional.conv.im2col` and
:func:`~resnet_np.functional.conv.col2im`:

    x_nhwc  (N, H, W, C)          any strides (a channels-last view needs no copy)
    padding (ph, pw) or per side ((top, bottom), (left, right)), as there
    cols    (N*P*Q, G, R*S*C/G)   P = (H + top + bottom - dh*(R-1) - 1) // sh + 1, Q likewise

The kernels take the top and left padding (where a window starts); the
bottom and right padding only set P and Q.

im2col writes every column entry once (0 in the padding). col2im is a gather:
one thread per input pixel sums the entries taken from it, so the kernel needs
no atomics and no zeroed buffer, and gives the same sums on every run.
"""
from .. import backend
from ..functional.sizes import output_length, sides
from ._launch import choose_index, cuda_launcher, grid_1d


def element_strides(a):
    """Strides of ``a`` in elements rather than bytes."""
    return tuple(s // a.itemsize for s in a.strides)


def im2col_gpu(x_nhwc, R, S, stride, padding, dilation, groups=1, launcher=None):
    """cols[n*P*Q + p*Q + q, g, (r*S + s)*C/G + c] = xpad[n, p*sh + r*dh, q*sw + s*dw, g*C/G + c].

    The kernel twin of functional.conv.im2col; always returns a new contiguous array.
    """
    launcher = launcher or cuda_launcher()
    xp = backend.get_array_module(x_nhwc)
    (sh, sw), (dh, dw) = stride, dilation
    pads_h, pads_w = sides(padding)
    (ph, _), (pw, _) = pads_h, pads_w
    N, H, W, C = x_nhwc.shape
    P, Q = output_length(H, R, sh, pads_h, dh), output_length(W, S, sw, pads_w, dw)
    G, Cg = groups, C // groups
    cols = xp.empty((N * P * Q, G, R * S * Cg), dtype=x_nhwc.dtype)
    if cols.size:
        grid, block = grid_1d(cols.size, launcher)
        launcher.launch("im2col", x_nhwc.dtype, grid, block,
                        [x_nhwc, cols, N, H, W, C, *element_strides(x_nhwc),
                         P, Q, G, R, S, sh, sw, ph, pw, dh, dw],
                        choose_index(launcher, x_nhwc, cols))
    return cols


def col2im_gpu(cols, x_shape_nhwc, R, S, stride, padding, dilation, groups=1, launcher=None):
    """dx[n, h, w, g*C/G + c] = sum of cols[(n, p, q), g, (r, s, c)] over h = p*sh + r*dh - ph,
    w = q*sw + s*dw - pw: the adjoint of :func:`im2col_gpu`, gathered per input pixel.

    The kernel twin of functional.conv.col2im: cols (N*P*Q, G, R*S*C/G) -> dx (N, H, W, C).
    """
    launcher = launcher or cuda_launcher()
    xp = backend.get_array_module(cols)
    (sh, sw), (dh, dw) = stride, dilation
    pads_h, pads_w = sides(padding)
    (ph, _), (pw, _) = pads_h, pads_w
    N, H, W, C = x_shape_nhwc
    P, Q = output_length(H, R, sh, pads_h, dh), output_length(W, S, sw, pads_w, dw)
    G, Cg = groups, C // groups
    expected = (N * P * Q, G, R * S * Cg)
    if tuple(cols.shape) != expected:
        raise ValueError(f"col2im: cols has shape {tuple(cols.shape)}, expected {expected} "
                         f"for input {tuple(x_shape_nhwc)} and a {R}x{S} kernel")
    cols = xp.ascontiguousarray(cols)
    dx = xp.empty((N, H, W, C), dtype=cols.dtype)
    if dx.size:
        grid, block = grid_1d(dx.size, launcher)
        launcher.launch("col2im", cols.dtype, grid, block,
                        [cols, dx, N, H, W, C, P, Q, G, R, S, sh, sw, ph, pw, dh, dw],
                        choose_index(launcher, cols, dx))
    return dx
