// im2col and col2im of resnet_np.functional.conv, one thread per output element.
//
// Shapes (as in resnet_np.functional.conv):
//   x     (N, H, W, C)            channels-last input, any element strides
//   cols  (N, P, Q, G, R, S, C/G) contiguous, i.e. (N*P*Q, G, R*S*C/G)
//   P = (H + 2*ph - dh*(R-1) - 1) / sh + 1, and Q likewise.
#include "common.cuh"

// im2col: cols[n, p, q, g, r, s, c] = xpad[n, p*sh + r*dh, q*sw + s*dw, g*Cg + c]
// (0 in the padding). The NumPy twin is functional.conv.im2col (a strided view
// of the padded input, then one reshape copy).
template <typename T, typename I>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols,
                       I N, I H, I W, I C,
                       I sxN, I sxH, I sxW, I sxC,
                       I P, I Q, I G, I R, I S,
                       I sh, I sw, I ph, I pw,
                       I dh, I dw) {
    const I Cg = C / G;
    const I total = N * P * Q * G * R * S * Cg;
    GRID_STRIDE_LOOP(i, total) {
        I t = i;
        const I c = t % Cg; t /= Cg;
        const I s = t % S;  t /= S;
        const I r = t % R;  t /= R;
        const I g = t % G;  t /= G;
        const I q = t % Q;  t /= Q;
        const I p = t % P;  t /= P;
        const I n = t;
        const I h = p * sh - ph + r * dh;
        const I w = q * sw - pw + s * dw;
        T value = T(0);
        if (h >= 0 && h < H && w >= 0 && w < W)
            value = x[n * sxN + h * sxH + w * sxW + (g * Cg + c) * sxC];
        cols[i] = value;
    }
}

// col2im, the adjoint of im2col, as a gather: one thread per input pixel
// (n, h, w, ch) sums every column entry that im2col read from it, so no two
// threads write the same place (no atomics) and the result is deterministic:
//   dx[n, h, w, g*Cg + c] = sum over (p, r) with p*sh + r*dh = h + ph,
//                                 and (q, s) with q*sw + s*dw = w + pw,
//                           of cols[n, p, q, g, r, s, c].
// The NumPy twin is functional.conv.col2im (one strided += per kernel offset).
template <typename T, typename I>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ dx,
                       I N, I H, I W, I C,
                       I P, I Q, I G, I R, I S,
                       I sh, I sw, I ph, I pw,
                       I dh, I dw) {
    const I Cg = C / G;
    const I total = N * H * W * C;
    GRID_STRIDE_LOOP(i, total) {
        I t = i;
        const I ch = t % C; t /= C;
        const I w = t % W;  t /= W;
        const I h = t % H;  t /= H;
        const I n = t;
        const I g = ch / Cg, c = ch % Cg;
        T sum = T(0);
        for (I r = 0; r < R; ++r) {
            const I hp = h + ph - r * dh;        // = p * sh when p exists
            if (hp < 0) break;                           // larger r only lowers hp
            if (hp % sh) continue;
            const I p = hp / sh;
            if (p >= P) continue;
            for (I s = 0; s < S; ++s) {
                const I wp = w + pw - s * dw;
                if (wp < 0) break;
                if (wp % sw) continue;
                const I q = wp / sw;
                if (q >= Q) continue;
                sum += cols[(((((n * P + p) * Q + q) * G + g) * R + r) * S + s) * Cg + c];
            }
        }
        dx[i] = sum;
    }
}
