// Shared by every kernel of resnet_np/kernels.
//
// Every kernel walks its output with a grid-stride loop, so any grid size is
// correct (a small grid just loops more), and indexes with 64-bit integers,
// so tensors of more than 2^31 elements are safe. Scalars arrive as
// long long or double, whatever the element type T is.
#ifndef RESNET_NP_COMMON_CUH
#define RESNET_NP_COMMON_CUH

#define GRID_STRIDE_LOOP(i, total)                                              \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;        \
         i < (total); i += (long long)blockDim.x * gridDim.x)

// The element (n, m, c) of a (N, M, C) view with element strides (sN, sM, sC).
#define AT3(ptr, n, m, c, sN, sM, sC) ((ptr)[(n) * (sN) + (m) * (sM) + (c) * (sC)])

#endif
