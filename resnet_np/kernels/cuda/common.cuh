// Shared by every kernel of resnet_np/kernels.
//
// Every kernel walks its output with a grid-stride loop, so any grid size is
// correct (a small grid just loops more). Every kernel is a template over the
// element type T and the index type I: int where every offset fits (integer
// division, which the index arithmetic is made of, is far cheaper in 32 bits),
// long long for larger tensors. Sizes and strides arrive as I, other scalars
// as double, whatever T is.
#ifndef RESNET_NP_COMMON_CUH
#define RESNET_NP_COMMON_CUH

#define GRID_STRIDE_LOOP(i, total)                                              \
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < (total);     \
         i += (I)blockDim.x * (I)gridDim.x)

// The element (n, m, c) of a (N, M, C) view with element strides (sN, sM, sC).
#define AT3(ptr, n, m, c, sN, sM, sC) ((ptr)[(n) * (sN) + (m) * (sM) + (c) * (sC)])

#endif
