// Max pooling of resnet_np.functional.pooling: the forward keeps its winners, the
// backward routes each gradient to its winner by a gather (no atomics).
//
//   x    (N, H, W, C)  channels-last view, any element strides
//   out  (N, P, Q, C)  contiguous; argmax (N, P, Q, C) int32, the winner's
//                      offset r*S + s inside its window
//   P = (H + 2*ph - R) / sh + 1, and Q likewise; the padding counts as -inf.
#include "common.cuh"

// out[n, p, q, c] = max_{r, s} xpad[n, p*sh + r, q*sw + s, c]; ties go to the
// first offset in row-major order (strict >), as in torch, and a NaN wins
// (the first NaN), as NumPy's maximum propagates it.
// The NumPy twin: functional.max_pool2d_forward (an xp.maximum per offset) and
// the argmax of functional.max_pool2d_backward.
template <typename T, typename I>
__global__ void maxpool_forward(const T* __restrict__ x, T* __restrict__ out,
                                int* __restrict__ argmax,
                                I N, I H, I W, I C,
                                I sxN, I sxH, I sxW, I sxC,
                                I P, I Q, I R, I S,
                                I sh, I sw, I ph, I pw) {
    GRID_STRIDE_LOOP(i, N * P * Q * C) {
        I t = i;
        const I c = t % C; t /= C;
        const I q = t % Q; t /= Q;
        const I p = t % P; t /= P;
        const I n = t;
        T best = T(0);
        int winner = -1;
        for (I r = 0; r < R; ++r) {
            const I h = p * sh - ph + r;
            if (h < 0 || h >= H) continue;
            for (I s = 0; s < S; ++s) {
                const I w = q * sw - pw + s;
                if (w < 0 || w >= W) continue;
                const T v = x[n * sxN + h * sxH + w * sxW + c * sxC];
                const bool v_nan = v != v, best_nan = best != best;
                if (winner < 0 || (!best_nan && (v > best || v_nan))) {
                    best = v;
                    winner = (int)(r * S + s);
                }
            }
        }
        out[i] = best;          // padding <= R/2 leaves every window a real pixel
        argmax[i] = winner;
    }
}

// dx[n, h, w, c] = sum of dout[n, c, p, q] over the windows (p, q) that hold
// (h, w) at offset (r, s) = (h + ph - p*sh, w + pw - q*sw) and whose winner is
// that offset. One thread per input pixel, dx contiguous (N, H, W, C); dout is
// read through its (N, P, Q, C) element strides.
// The NumPy twin: functional.max_pool2d_backward (dout times each offset's winner mask).
template <typename T, typename I>
__global__ void maxpool_backward(const T* __restrict__ dout, const int* __restrict__ argmax,
                                 T* __restrict__ dx,
                                 I N, I H, I W, I C,
                                 I sdN, I sdP, I sdQ, I sdC,
                                 I P, I Q, I R, I S,
                                 I sh, I sw, I ph, I pw) {
    GRID_STRIDE_LOOP(i, N * H * W * C) {
        I t = i;
        const I c = t % C; t /= C;
        const I w = t % W; t /= W;
        const I h = t % H; t /= H;
        const I n = t;
        T sum = T(0);
        for (I r = 0; r < R; ++r) {
            const I hp = h + ph - r;
            if (hp < 0) break;
            if (hp % sh) continue;
            const I p = hp / sh;
            if (p >= P) continue;
            for (I s = 0; s < S; ++s) {
                const I wp = w + pw - s;
                if (wp < 0) break;
                if (wp % sw) continue;
                const I q = wp / sw;
                if (q >= Q) continue;
                if (argmax[((n * P + p) * Q + q) * C + c] == (int)(r * S + s))
                    sum += dout[n * sdN + p * sdP + q * sdQ + c * sdC];
            }
        }
        dx[i] = sum;
    }
}
