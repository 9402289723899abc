// Softmax cross-entropy of resnet_np.functional.loss, row by row.
//
//   logits (N, M) contiguous, labels (N,) int64
//   p[n, m]       = exp(logits[n, m] - lse[n]),   lse[n] = log sum_m exp(logits[n, m])
//   nll[n]        = lse[n] - logits[n, labels[n]]               (double)
//   mean_logp[n]  = mean_m logits[n, m] - lse[n]                 (double)
// The caller forms loss = (1 - eps) * mean(nll) - eps * mean(mean_logp), the
// NumPy twin's (1 - eps) * nll.mean() - eps * log_p.mean(axis=1).mean().
// Sums are taken in double, shifted by the row maximum (for float too).
#include "common.cuh"

// Version 1: one thread per row, three passes over it. No barrier.
template <typename T, typename I>
__global__ void softmax_xent_rows(const T* __restrict__ logits, const long long* __restrict__ labels,
                                  T* __restrict__ p, double* __restrict__ nll,
                                  double* __restrict__ mean_logp, I N, I M) {
    GRID_STRIDE_LOOP(n, N) {
        const T* row = logits + n * M;
        double mx = (double)row[0];
        for (I m = 1; m < M; ++m) mx = fmax(mx, (double)row[m]);
        double se = 0.0, sx = 0.0;
        for (I m = 0; m < M; ++m) {
            const double v = (double)row[m];
            se += exp(v - mx);
            sx += v;
        }
        const double lse = mx + log(se);
        for (I m = 0; m < M; ++m) p[n * M + m] = (T)exp((double)row[m] - lse);
        nll[n] = lse - (double)row[labels[n]];
        mean_logp[n] = sx / (double)M - lse;
    }
}

// dlogits[n, m] = (p[n, m] - eps/M - (1 - eps) * [m == labels[n]]) * coef,  coef = dloss / N.
// The NumPy twin: functional.softmax_cross_entropy_backward. No barrier.
template <typename T, typename I>
__global__ void softmax_xent_backward(const T* __restrict__ p, const long long* __restrict__ labels,
                                      T* __restrict__ dlogits, I N, I M,
                                      double eps, double coef) {
    GRID_STRIDE_LOOP(i, N * M) {
        const I n = i / M, m = i % M;
        double d = (double)p[i] - eps / (double)M;
        if (m == labels[n]) d -= 1.0 - eps;
        dlogits[i] = (T)(d * coef);
    }
}

// Version 2: one block per row (rows grid-strided over blocks), each pass a
// strided loop over the row plus a tree reduction in shared memory. Launched
// with SOFTMAX_BLOCK threads; correct for any block of up to SOFTMAX_BLOCK threads.
#define SOFTMAX_BLOCK 256

// The maximum (take_max) or the sum of v over the block's threads, returned to
// every thread. Each step folds the upper half of the values still live onto
// the lower half (rounding up, for a block that is not a power of two):
//   buf[t] = op(buf[t], buf[t + half])   for t + half < width,   width -> half
__device__ double block_reduce(double v, double* buf, bool take_max) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (unsigned width = blockDim.x; width > 1;) {
        const unsigned half = (width + 1) / 2;
        if (threadIdx.x + half < width) {
            const double other = buf[threadIdx.x + half];
            buf[threadIdx.x] = take_max ? fmax(buf[threadIdx.x], other) : buf[threadIdx.x] + other;
        }
        __syncthreads();
        width = half;
    }
    const double result = buf[0];
    __syncthreads();                 // buf is reused by the next reduction
    return result;
}

template <typename T, typename I>
__global__ void softmax_xent_block(const T* __restrict__ logits, const long long* __restrict__ labels,
                                   T* __restrict__ p, double* __restrict__ nll,
                                   double* __restrict__ mean_logp, I N, I M) {
    __shared__ double buf[SOFTMAX_BLOCK];
    for (I n = blockIdx.x; n < N; n += gridDim.x) {      // the same n for the whole block
        const T* row = logits + n * M;
        double mx = (double)row[0];
        for (I m = threadIdx.x; m < M; m += blockDim.x) mx = fmax(mx, (double)row[m]);
        mx = block_reduce(mx, buf, true);
        double se = 0.0, sx = 0.0;
        for (I m = threadIdx.x; m < M; m += blockDim.x) {
            const double v = (double)row[m];
            se += exp(v - mx);
            sx += v;
        }
        se = block_reduce(se, buf, false);
        sx = block_reduce(sx, buf, false);
        const double lse = mx + log(se);
        for (I m = threadIdx.x; m < M; m += blockDim.x)
            p[n * M + m] = (T)exp((double)row[m] - lse);
        if (threadIdx.x == 0) {
            nll[n] = lse - (double)row[labels[n]];
            mean_logp[n] = sx / (double)M - lse;
        }
    }
}
