// Compiles the CUDA kernels as plain C++20 for the CPU, so that their index
// arithmetic and their barriers can be checked against NumPy where no GPU is at hand.
//
// A launch runs one std::thread per CUDA thread of a block. The same team of
// blockDim.x * blockDim.y threads runs every block of the grid, one block after
// another: thread (tx, ty) runs its part of block (0, 0), then of block (1, 0),
// and so on.
//
//   threadIdx, blockIdx   thread_local: each emulated thread has its own
//   blockDim, gridDim     the launch's, set before its threads start
//   __syncthreads()       a std::barrier shared by the team
//   __shared__            static storage: one copy, owned by the block in flight
//
// Since blocks run one after another, only one block uses the shared memory at a
// time. A thread that met a barrier in a block waits once more at the block's
// end, so that no thread starts the next block (and overwrites the shared
// memory) while another still reads it. CUDA requires every thread of a block
// to reach the same barriers, so either all threads of a block wait there or
// none does (a block that never meets a barrier lets its threads run on into
// the next block, as blocks without barriers run side by side on a GPU).
//
// Not emulated: warp-level functions (__shfl_*, __syncwarp, __ballot_sync), atomics
// and dynamic shared memory. No kernel of the package uses them, and they are not
// defined here, so a kernel that starts to use one fails to build for the host
// rather than run with a wrong emulation.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 { unsigned x, y, z; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

using std::exp;
using std::fmax;
using std::log;

namespace host_emulation {
inline thread_local std::barrier<>* team_barrier = nullptr;
inline thread_local long long barriers_met = 0;      // by this thread, in the current block
}

inline void __syncthreads() {
    ++host_emulation::barriers_met;
    host_emulation::team_barrier->arrive_and_wait();
}

namespace host_emulation {

// Runs body() as every thread of every block -> the number of barriers the
// launch went through (per thread), or -1 when its threads could not be started.
// dims = {grid.x, grid.y, block.x, block.y}.
template <typename Body>
long long launch(const unsigned* dims, Body body) {
    static std::mutex one_launch_at_a_time;      // the shared memory and the dims are global
    std::lock_guard<std::mutex> lock(one_launch_at_a_time);
    gridDim = dim3{dims[0], dims[1], 1};
    blockDim = dim3{dims[2], dims[3], 1};
    const unsigned size = blockDim.x * blockDim.y;
    std::barrier<> barrier(size);
    std::atomic<long long> total{0};
    std::atomic<int> start{0};                   // 1: go, 2: give up (a thread failed to start)
    std::vector<std::thread> team;
    team.reserve(size);
    auto thread_main = [&](unsigned tx, unsigned ty) {
        start.wait(0);
        if (start.load() != 1) return;
        threadIdx = dim3{tx, ty, 0};
        team_barrier = &barrier;
        long long met = 0;
        for (unsigned by = 0; by < gridDim.y; ++by)
            for (unsigned bx = 0; bx < gridDim.x; ++bx) {
                blockIdx = dim3{bx, by, 0};
                barriers_met = 0;
                body();
                if (barriers_met) {              // the block's end: its shared memory is free
                    met += barriers_met;
                    barrier.arrive_and_wait();
                }
            }
        total += met;
    };
    try {
        for (unsigned ty = 0; ty < blockDim.y; ++ty)
            for (unsigned tx = 0; tx < blockDim.x; ++tx) team.emplace_back(thread_main, tx, ty);
        start.store(1);
    } catch (const std::system_error&) {
        start.store(2);
    }
    start.notify_all();
    for (auto& thread : team) thread.join();
    return start.load() == 1 ? total.load() / size : -1;
}

// Calls kernel(*args[0], *args[1], ...): args[i] points to a value of the
// kernel's i-th parameter type.
template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}

template <typename... A>
long long run(void (*kernel)(A...), const unsigned* dims, void** args) {
    return launch(dims, [&] { call(kernel, args, std::index_sequence_for<A...>{}); });
}

}  // namespace host_emulation

// HOST_ENTRY(symbol, kernel<T, I>): the variadic tail keeps the template's comma
#define HOST_ENTRY(symbol, ...)                                             \
    extern "C" long long symbol(const unsigned* dims, void** args) {        \
        return host_emulation::run(__VA_ARGS__, dims, args);                \
    }
