// Compiles a barrier-free CUDA kernel as plain C++ for the CPU, so that its
// index arithmetic can be checked against NumPy where no GPU is at hand.
//
// The CUDA built-ins become globals, and a launch becomes loops over every
// block and every thread, run one after another. That is exact for kernels
// whose threads never wait on each other (no __syncthreads, no shared memory);
// kernels with barriers are guarded by RESNET_NP_HOST_EMULATION and left out.
#pragma once
#include <cmath>
#include <cstddef>
#include <utility>
#include <type_traits>

struct dim3 { unsigned x, y, z; };
static dim3 blockIdx, threadIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

using std::exp;
using std::fmax;
using std::log;

// dims = {grid.x, grid.y, block.x, block.y}
template <typename Body>
void host_launch(const unsigned* dims, Body body) {
    gridDim = dim3{dims[0], dims[1], 1};
    blockDim = dim3{dims[2], dims[3], 1};
    for (unsigned by = 0; by < gridDim.y; ++by)
        for (unsigned bx = 0; bx < gridDim.x; ++bx)
            for (unsigned ty = 0; ty < blockDim.y; ++ty)
                for (unsigned tx = 0; tx < blockDim.x; ++tx) {
                    blockIdx = dim3{bx, by, 0};
                    threadIdx = dim3{tx, ty, 0};
                    body();
                }
}

// Calls kernel(*args[0], *args[1], ...) for every emulated thread: args[i]
// points to a value of the kernel's i-th parameter type.
template <typename... A, std::size_t... I>
void host_call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}

template <typename... A>
void host_run(void (*kernel)(A...), const unsigned* dims, void** args) {
    host_launch(dims, [&] { host_call(kernel, args, std::index_sequence_for<A...>{}); });
}

// HOST_ENTRY(symbol, kernel<T, I>): the variadic tail keeps the template's comma
#define HOST_ENTRY(symbol, ...) \
    extern "C" void symbol(const unsigned* dims, void** args) { host_run(__VA_ARGS__, dims, args); }
