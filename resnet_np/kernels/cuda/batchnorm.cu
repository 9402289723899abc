// Batch normalisation of resnet_np.functional.batchnorm, fused with ReLU's mask in the backward.
//
// Activations are read as (N, HW, C) views with element strides (sN, sHW, sC):
// that covers both NCHW-contiguous and channels-last memory with no copy.
// M = N*HW values per channel. The per-channel sums are accumulated in double
// by many threads each; every thread writes its partial sums to row j of a
// (J, C) array (J = gridDim.y * blockDim.y), which the caller sums over j.
// No thread waits on another (no barriers, no atomics), and the result does
// not depend on the order in which blocks run.
#include "common.cuh"

// Forward sums, one pass, shifted by k[c] = x[0, c, 0, 0] for accuracy:
//   sum[j, c] = sum_{m = j, j+J, ...} (x[m, c] - k[c])
//   sq[j, c]  = sum_{m = j, j+J, ...} (x[m, c] - k[c])^2
// so that, summed over j,  mean = k + sum/M  and  var = sq/M - (sum/M)^2,
// the NumPy twin's x_mat.mean(axis=0) and einsum("mc,mc->c", centered, centered) / M.
template <typename T, typename I>
__global__ void bn_forward_sums(const T* __restrict__ x, const T* __restrict__ shift,
                                double* __restrict__ sum, double* __restrict__ sq,
                                I N, I HW, I C,
                                I sN, I sHW, I sC) {
    const I c = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x;
    const I j = (I)blockIdx.y * (I)blockDim.y + (I)threadIdx.y;
    const I J = (I)gridDim.y * (I)blockDim.y;
    if (c >= C) return;
    const double k = (double)shift[c];
    double s1 = 0.0, s2 = 0.0;
    for (I m = j; m < N * HW; m += J) {
        const double v = (double)AT3(x, m / HW, m % HW, c, sN, sHW, sC) - k;
        s1 += v;
        s2 += v * v;
    }
    sum[j * C + c] = s1;
    sq[j * C + c] = s2;
}

// Forward apply, one thread per output element (m, c), out contiguous (M, C):
//   out[m, c] = (x[m, c] - mean[c]) * scale[c] + beta[c],   scale = gamma / sqrt(var + eps)
// The NumPy twin: out = centered * scale; out += beta.
template <typename T, typename I>
__global__ void bn_apply(const T* __restrict__ x, const T* __restrict__ mean,
                         const T* __restrict__ scale, const T* __restrict__ beta,
                         T* __restrict__ out, I N, I HW, I C,
                         I sN, I sHW, I sC) {
    GRID_STRIDE_LOOP(i, N * HW * C) {
        const I c = i % C, m = i / C;
        const T v = AT3(x, m / HW, m % HW, c, sN, sHW, sC);
        out[i] = (v - mean[c]) * scale[c] + beta[c];
    }
}

// The upstream gradient g = dout, or with a ReLU after the batch norm
// g = dout * [relu_out > 0] (relu_out == nullptr: no ReLU).
template <typename T, typename I>
__device__ __forceinline__ T masked_grad(const T* dout, const T* relu_out, I n,
                                         I hw, I c, I sdN,
                                         I sdHW, I sdC, I srN,
                                         I srHW, I srC) {
    const T g = AT3(dout, n, hw, c, sdN, sdHW, sdC);
    if (relu_out != nullptr && !(AT3(relu_out, n, hw, c, srN, srHW, srC) > T(0))) return T(0);
    return g;
}

// Backward sums, laid out as the forward sums:
//   dbeta[j, c] = sum_m g[m, c]      dot[j, c] = sum_m g[m, c] * (x[m, c] - mean[c])
// summed over j:  dbeta = sum(g),  dgamma = dot * inv_std = sum(g * xhat).
template <typename T, typename I>
__global__ void bn_backward_sums(const T* __restrict__ dout, const T* __restrict__ relu_out,
                                 const T* __restrict__ x, const T* __restrict__ mean,
                                 double* __restrict__ dbeta, double* __restrict__ dot,
                                 I N, I HW, I C,
                                 I sdN, I sdHW, I sdC,
                                 I srN, I srHW, I srC,
                                 I sxN, I sxHW, I sxC) {
    const I c = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x;
    const I j = (I)blockIdx.y * (I)blockDim.y + (I)threadIdx.y;
    const I J = (I)gridDim.y * (I)blockDim.y;
    if (c >= C) return;
    const double mu = (double)mean[c];
    double s1 = 0.0, s2 = 0.0;
    for (I m = j; m < N * HW; m += J) {
        const I n = m / HW, hw = m % HW;
        const double g = (double)masked_grad(dout, relu_out, n, hw, c, sdN, sdHW, sdC,
                                             srN, srHW, srC);
        s1 += g;
        s2 += g * ((double)AT3(x, n, hw, c, sxN, sxHW, sxC) - mu);
    }
    dbeta[j * C + c] = s1;
    dot[j * C + c] = s2;
}

// Backward apply (train mode), one thread per element, dx contiguous (M, C):
//   dx = scale * (g - dbeta/M - (x - mean) * inv_std * dgamma/M)
// with the per-channel coefficients b = dbeta/M and k = inv_std * dgamma/M
// computed by the caller. The NumPy twin: functional.batch_norm2d_backward.
template <typename T, typename I>
__global__ void bn_backward_apply(const T* __restrict__ dout, const T* __restrict__ relu_out,
                                  const T* __restrict__ x, const T* __restrict__ mean,
                                  const T* __restrict__ scale, const T* __restrict__ b,
                                  const T* __restrict__ k, T* __restrict__ dx,
                                  I N, I HW, I C,
                                  I sdN, I sdHW, I sdC,
                                  I srN, I srHW, I srC,
                                  I sxN, I sxHW, I sxC) {
    GRID_STRIDE_LOOP(i, N * HW * C) {
        const I c = i % C, m = i / C, n = m / HW, hw = m % HW;
        const T g = masked_grad(dout, relu_out, n, hw, c, sdN, sdHW, sdC, srN, srHW, srC);
        const T centered = AT3(x, n, hw, c, sxN, sxHW, sxC) - mean[c];
        dx[i] = scale[c] * (g - b[c] - centered * k[c]);
    }
}
