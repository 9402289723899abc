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
template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols,
                       long long N, long long H, long long W, long long C,
                       long long sxN, long long sxH, long long sxW, long long sxC,
                       long long P, long long Q, long long G, long long R, long long S,
                       long long sh, long long sw, long long ph, long long pw,
                       long long dh, long long dw) {
    const long long Cg = C / G;
    const long long total = N * P * Q * G * R * S * Cg;
    GRID_STRIDE_LOOP(i, total) {
        long long t = i;
        const long long c = t % Cg; t /= Cg;
        const long long s = t % S;  t /= S;
        const long long r = t % R;  t /= R;
        const long long g = t % G;  t /= G;
        const long long q = t % Q;  t /= Q;
        const long long p = t % P;  t /= P;
        const long long n = t;
        const long long h = p * sh - ph + r * dh;
        const long long w = q * sw - pw + s * dw;
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
template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ dx,
                       long long N, long long H, long long W, long long C,
                       long long P, long long Q, long long G, long long R, long long S,
                       long long sh, long long sw, long long ph, long long pw,
                       long long dh, long long dw) {
    const long long Cg = C / G;
    const long long total = N * H * W * C;
    GRID_STRIDE_LOOP(i, total) {
        long long t = i;
        const long long ch = t % C; t /= C;
        const long long w = t % W;  t /= W;
        const long long h = t % H;  t /= H;
        const long long n = t;
        const long long g = ch / Cg, c = ch % Cg;
        T sum = T(0);
        for (long long r = 0; r < R; ++r) {
            const long long hp = h + ph - r * dh;        // = p * sh when p exists
            if (hp < 0) break;                           // larger r only lowers hp
            if (hp % sh) continue;
            const long long p = hp / sh;
            if (p >= P) continue;
            for (long long s = 0; s < S; ++s) {
                const long long wp = w + pw - s * dw;
                if (wp < 0) break;
                if (wp % sw) continue;
                const long long q = wp / sw;
                if (q >= Q) continue;
                sum += cols[(((((n * P + p) * Q + q) * G + g) * R + r) * S + s) * Cg + c];
            }
        }
        dx[i] = sum;
    }
}
