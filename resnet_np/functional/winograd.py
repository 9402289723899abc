"""Winograd minimal filtering: stride-1 3x3 convolutions with fewer multiplications.

    x    (N, C, H, W)     input             w    (K, C, 3, 3)   filters
    out  (N, K, P, Q)     P = H + pad_top + pad_bottom - 2, Q likewise

The 1-D case first. F(m, 3) computes m outputs of a 3-tap correlation,
y[i] = sum_k g[k] d[i + k] for i < m, from a tile of n = m + 2 inputs with n
multiplications instead of 3m:

    y = A^T [ (G g) * (B^T d) ]          A^T (m, n), G (n, 3), B^T (n, n)

Derivation (Toom-Cook). Polynomial multiplication is linear convolution:
with g(t) = sum g[k] t^k (degree 2) and e(t) of degree m - 1, the product
c(t) = g(t) e(t) has n = m + 2 coefficients, fixed by its values at n
points: n - 1 numbers p_j and "infinity" (the leading coefficient). Writing
V (n, n), Vg (n, 3), Ve (n, m) for the matrices that evaluate a polynomial of
n, 3, m coefficients at those points (row j = [1, p_j, p_j^2, ...]; the
infinity row picks the last coefficient),

    c = V^-1 [ (Vg g) * (Ve e) ]        (evaluate, multiply point-wise, interpolate)

Correlation is the transpose of that map: y = L_g^T d where c = L_g e, so

    y = Ve^T [ (Vg g) * (V^-T d) ],   i.e.  A^T = Ve^T,  G = Vg,  B^T = V^-T.

Any diagonal D may move between the two factors, G -> D G and B^T -> D^-1 B^T;
:func:`winograd_matrices` picks D so that B^T holds small integers (the
fractions then sit in G, which is applied once per filter, not per tile).
With the points 0, 1, -1 (F(2, 3)) and 0, 1, -1, 2, -2 (F(4, 3)) this gives
the matrices of Lavin & Gray (2016) up to the sign of some rows (signs that
cancel between the factors), e.g. for F(2, 3)

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, 1]]

In 2-D the transforms nest: an (m, m) output tile of one filter and one
channel is

    Y = A^T [ (G g G^T) * (B^T d B) ] A        d: an (n, n) input tile

and the sum over channels moves inside the brackets: for each of the n*n
positions (xi, nu) of the transformed tile, the products summed over c are
one matrix product over all tiles at once,

    M[xi, nu] = V[xi, nu] @ U[xi, nu]      (T, C) @ (C, K), T = N * tiles per image

with V = B^T d B (every tile) and U = G g G^T (every filter). F(4, 3) does
36 multiplications per 16 outputs where the direct convolution does 144:
a 4x cut in the GEMM's work, paid for with the transforms (memory-bound
passes) and with float32 rounding a few times larger than im2col's (the
transform entries reach 8 and 1/24).

Backward. The weight gradient is the adjoint of the same factorisation:
with Z = A dY A^T the transformed output gradient of every tile,

    dU[xi, nu] = V[xi, nu]^T @ Z[xi, nu]     (C, T) @ (T, K)
    dw         = G^T dU G                    per filter and channel

and the input gradient of a stride-1 convolution is itself one (the
transposed convolution): dout, padded by 2 - pad on each side, convolved with
the filters flipped in space and with input and output channels swapped.
"""
from fractions import Fraction
from functools import lru_cache
from math import gcd, lcm
from typing import NamedTuple

import numpy as np

from .. import backend
from ..dispatch import use_winograd  # noqa: F401  (the switch, kept importable from here)

# Interpolation points of F(m, 3), infinity implied: the usual, best-conditioned choices.
POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -2)}


# --------------------------------------------------------------------------- #
# When conv2d uses it (the switch and the policy: resnet_np.dispatch)
# --------------------------------------------------------------------------- #
def winograd_tile(x, g, mode="fast"):
    """The output tile side m of the Winograd algorithm for input ``x`` and geometry ``g``
    (a ConvGeometry), or 0 for im2col: the shape rule :func:`resnet_np.dispatch.conv_algorithm`
    applies on NumPy while Winograd is on (``use_winograd``, RESNET_NP_WINOGRAD).

    Only 3x3, stride 1, dilation 1, one group, zero padding of at most 2. ``mode``:

    "fast"      the fastest measured: F(4x4) on maps of 28x28 or more, F(2x2) down
                to 7x7 (nn.Conv2d in inference, where no backward compounds the rounding)
    "accurate"  only F(2x2), whose float32 rounding is close to im2col's, and only
                where it was measured faster than im2col forward and backward: 14x14
                to 28x28 (nn.Conv2d in training: see its forward)

    benchmarks/winograd.py prints the figures behind these bounds.
    """
    if (g.R, g.S, g.stride, g.dilation, g.G) != (3, 3, (1, 1), (1, 1), 1):
        return 0
    if max(max(p) for p in g.padding) > 2:
        return 0
    pixels = g.P * g.Q
    if mode == "fast":
        return 4 if pixels >= 28 * 28 else 2 if pixels >= 7 * 7 else 0
    if mode == "accurate":
        return 2 if 14 * 14 <= pixels <= 28 * 28 else 0
    raise ValueError(f"winograd mode must be 'fast' or 'accurate', got {mode!r}")


@lru_cache(maxsize=None)
def winograd_matrices(m, r=3, points=None):
    """A^T (m, n), G (n, r), B^T (n, n) of F(m, r), as tuples of Fractions (exact).

    ``points``: the n - 1 finite interpolation points (default :data:`POINTS`).
    """
    points = POINTS[m] if points is None else tuple(points)
    n = m + r - 1
    if len(points) != n - 1 or len(set(points)) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct finite points, got {points}")

    def evaluation(columns):  # rows [1, p, p^2, ...]; the infinity row picks the top coefficient
        rows = [[Fraction(p) ** k for k in range(columns)] for p in points]
        return rows + [[Fraction(int(k == columns - 1)) for k in range(columns)]]

    V, Vg, Ve = evaluation(n), evaluation(r), evaluation(m)
    BT = _transpose(_inverse(V))
    # D: scale each row of B^T to coprime integers, and G's row by the inverse.
    scales = []
    for row in BT:
        denominator = lcm(*(q.denominator for q in row))
        numerator = gcd(*(int(q * denominator) for q in row))
        scales.append(Fraction(denominator, numerator))
    BT = [[q * s for q in row] for row, s in zip(BT, scales)]
    G = [[q / s for q in row] for row, s in zip(Vg, scales)]
    AT = _transpose(Ve)
    return tuple(map(tuple, AT)), tuple(map(tuple, G)), tuple(map(tuple, BT))


def _transpose(a):
    return [list(column) for column in zip(*a)]


def _inverse(a):
    """Gauss-Jordan inverse of a small square matrix of Fractions."""
    n = len(a)
    rows = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for col in range(n):
        pivot = next(i for i in range(col, n) if rows[i][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for i in range(n):
            if i != col and rows[i][col] != 0:
                factor = rows[i][col]
                rows[i] = [v - factor * u for v, u in zip(rows[i], rows[col])]
    return [row[n:] for row in rows]


def _as_arrays(m, xp, dtype):
    """The 2-D transforms of F(m x m, 3 x 3) as arrays of ``dtype`` on the device of ``xp``:
    kron(A^T, A^T) (m*m, n*n), kron(G, G) (n*n, 9), kron(B^T, B^T) (n*n, n*n).

    ``kron(B^T, B^T) @ vec(d)`` is ``vec(B^T d B)`` for a row-major (n, n) tile d,
    so each 2-D transform of every tile at once is one matrix product."""
    return tuple(xp.asarray(np.kron(a, a), dtype=dtype)
                 for a in (np.array(matrix, dtype=np.float64) for matrix in winograd_matrices(m)))


class WinogradCache(NamedTuple):
    """What the backward needs: the input (its tiles are transformed again, rather than
    kept at n*n / (m*m) times its size) and the geometry."""
    x: object            # (N, C, H, W) the input
    w: object            # (K, C, 3, 3) the filters
    m: int               # output tile side
    padding: tuple       # ((top, bottom), (left, right))
    tiles: tuple         # (tiles down, tiles across)


def transformed_tiles(x, padding, m):
    """V = B^T d B for every (n, n) input tile d of F(m x m, 3 x 3), n = m + 2.

    x (N, C, H, W), padding ((top, bottom), (left, right))  ->  V (n*n, T, C), (tP, tQ):
    T = N * tP * tQ tiles, tP = ceil(P / m) down and tQ = ceil(Q / m) across.
    """
    xp = backend.get_array_module(x)
    BB = _as_arrays(m, xp, x.dtype)[2]
    N, C, H, W = x.shape
    (top, bottom), (left, right) = padding
    P, Q = H + top + bottom - 2, W + left + right - 2
    tP, tQ, n = -(-P // m), -(-Q // m), m + 2
    # Zero padding, with extra rows and columns at the end so whole tiles fit.
    xpad = xp.zeros((N, tP * m + 2, tQ * m + 2, C), dtype=x.dtype)
    xpad[:, top:top + H, left:left + W] = x.transpose(0, 2, 3, 1)
    sN, sH, sW, sC = xpad.strides
    tiles = backend.as_strided(xpad, (n, n, N, tP, tQ, C), (sH, sW, sN, sH * m, sW * m, sC))
    d = xp.ascontiguousarray(tiles).reshape(n * n, -1)                # (n*n, T*C), tiles overlap
    return (BB @ d).reshape(n * n, -1, C), (tP, tQ)                   # B^T d B


def winograd_conv3x3_forward(x, w, padding=((1, 1), (1, 1)), m=4):
    """out = conv2d(x, w), stride 1, 3x3 filters, by Winograd F(m x m, 3 x 3).

    x (N, C, H, W), w (K, C, 3, 3), padding ((top, bottom), (left, right)),
    each at most 2  ->  out (N, K, P, Q) (channels-last in memory), cache
    """
    xp = backend.get_array_module(x)
    AA, GG, _ = _as_arrays(m, xp, x.dtype)
    N, C, H, W = x.shape
    K = w.shape[0]
    (top, bottom), (left, right) = padding
    P, Q = H + top + bottom - 2, W + left + right - 2
    n = m + 2
    V, (tP, tQ) = transformed_tiles(x, padding, m)                    # (n*n, T, C)
    U = (GG @ w.reshape(K * C, 9).T).reshape(n * n, K, C)             # (n*n, K, C): G g G^T
    M = xp.matmul(V, U.transpose(0, 2, 1))                            # (n*n, T, K)
    del V
    Y = AA @ M.reshape(n * n, -1)                                     # (m*m, T*K): A^T M A
    Y = Y.reshape(m, m, N, tP, tQ, K).transpose(2, 3, 0, 4, 1, 5).reshape(N, tP * m, tQ * m, K)
    out = xp.ascontiguousarray(Y[:, :P, :Q])
    cache = WinogradCache(x, w, m, ((top, bottom), (left, right)), (tP, tQ))
    return out.transpose(0, 3, 1, 2), cache


def winograd_conv3x3_backward(dout, cache, input_grad=True):
    """Gradients of :func:`winograd_conv3x3_forward`.

    dout (N, K, P, Q)  ->  dx (N, C, H, W) or None, dw (K, C, 3, 3)
    """
    xp = backend.get_array_module(dout)
    x, w, m, ((top, bottom), (left, right)), (tP, tQ) = cache
    N, C, H, W = x.shape
    AA, GG, _ = _as_arrays(m, xp, dout.dtype)
    K, P, Q, n = w.shape[0], dout.shape[2], dout.shape[3], m + 2
    # dY in whole tiles (zeros past the edge), laid out (u, v, T, K).
    dY = xp.zeros((N, tP * m, tQ * m, K), dtype=dout.dtype)
    dY[:, :P, :Q] = dout.transpose(0, 2, 3, 1)
    dY = xp.ascontiguousarray(dY.reshape(N, tP, m, tQ, m, K).transpose(2, 4, 0, 1, 3, 5))
    Z = (AA.T @ dY.reshape(m * m, -1)).reshape(n * n, -1, K)          # (n*n, T, K): A dY A^T
    del dY
    V, _ = transformed_tiles(x, cache.padding, m)                     # (n*n, T, C) again
    dU = xp.matmul(V.transpose(0, 2, 1), Z)                           # (n*n, C, K)
    del V, Z
    dw = (GG.T @ dU.reshape(n * n, -1)).reshape(3, 3, C, K)           # G^T dU G
    dw = xp.ascontiguousarray(dw.transpose(3, 2, 0, 1))               # (K, C, 3, 3)
    if not input_grad:
        return None, dw
    w_flipped = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    dx, _ = winograd_conv3x3_forward(dout, w_flipped, ((2 - top, 2 - bottom), (2 - left, 2 - right)),
                                     m)
    return dx, dw
