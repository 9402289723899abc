// Compiles the CUDA kernels as plain C++20 for the CPU, so that their index
// arithmetic and their barriers can be checked against NumPy where no GPU is at hand.
//
// A kernel with barriers (HOST_ENTRY_WITH_BARRIERS) runs as one std::thread per
// CUDA thread of a block. The same team of blockDim.x * blockDim.y threads runs
// every block of the grid, one block after another: thread (tx, ty) runs its part
// of block (0, 0), then of block (1, 0), and so on.
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
// none does.
//
// A kernel without barriers (HOST_ENTRY) has threads that never wait on each
// other, so any order of them is right: FREE_THREADS std::threads share them out,
// CUDA thread g (counted block after block) to std::thread g % FREE_THREADS. Each
// std::thread walks memory in order, and neighbouring CUDA threads run side by
// side, so that ThreadSanitizer sees two of them writing one place. A kernel
// launched this way that calls __syncthreads ends its launch with an error
// (BARRIER_IN_A_FREE_LAUNCH): it belongs in WITH_BARRIERS.
//
// Not emulated: warp-level functions (__shfl_*, __syncwarp, __ballot_sync), atomics
// and dynamic shared memory. No kernel of the package uses them, and they are not
// defined here, so a kernel that starts to use one fails to build for the host
// rather than run with a wrong emulation.
#pragma once
#include <algorithm>
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
struct barrier_outside_a_team {};                    // thrown by __syncthreads in a free launch
}

inline void __syncthreads() {
    if (host_emulation::team_barrier == nullptr) throw host_emulation::barrier_outside_a_team{};
    ++host_emulation::barriers_met;
    host_emulation::team_barrier->arrive_and_wait();
}

namespace host_emulation {

constexpr unsigned FREE_THREADS = 4;
constexpr long long COULD_NOT_START = -1, BARRIER_IN_A_FREE_LAUNCH = -2;

// Starts count std::threads running thread_main(k), k = 0 .. count - 1, and waits
// for them -> true, or false when one could not be started (then none runs).
template <typename Main>
bool run_threads(unsigned count, Main thread_main) {
    std::atomic<int> start{0};                   // 1: go, 2: give up
    std::vector<std::thread> threads;
    threads.reserve(count);
    try {
        for (unsigned k = 0; k < count; ++k)
            threads.emplace_back([&, k] {
                start.wait(0);
                if (start.load() == 1) thread_main(k);
            });
        start.store(1);
    } catch (const std::system_error&) {
        start.store(2);
    }
    start.notify_all();
    for (auto& thread : threads) thread.join();
    return start.load() == 1;
}

inline std::mutex& one_launch_at_a_time() {     // the shared memory and the dims are global
    static std::mutex mutex;
    return mutex;
}

// A kernel with barriers: body() as every thread of every block, a team of one
// std::thread per thread of a block -> the barriers each thread met, or a code < 0.
// dims = {grid.x, grid.y, block.x, block.y}.
template <typename Body>
long long launch_team(const unsigned* dims, Body body) {
    std::lock_guard<std::mutex> lock(one_launch_at_a_time());
    gridDim = dim3{dims[0], dims[1], 1};
    blockDim = dim3{dims[2], dims[3], 1};
    const unsigned size = blockDim.x * blockDim.y;
    std::barrier<> barrier(size);
    std::atomic<long long> total{0};
    const bool started = run_threads(size, [&](unsigned k) {
        threadIdx = dim3{k % blockDim.x, k / blockDim.x, 0};
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
        team_barrier = nullptr;
        total += met;
    });
    return started ? total.load() / size : COULD_NOT_START;
}

// A kernel without barriers: body() as every thread of every block, shared out
// among FREE_THREADS std::threads -> 0, or a code < 0.
template <typename Body>
long long launch_free(const unsigned* dims, Body body) {
    std::lock_guard<std::mutex> lock(one_launch_at_a_time());
    gridDim = dim3{dims[0], dims[1], 1};
    blockDim = dim3{dims[2], dims[3], 1};
    const unsigned long long block = blockDim.x * blockDim.y;
    const unsigned long long total = (unsigned long long)gridDim.x * gridDim.y * block;
    std::atomic<bool> waited{false};
    const unsigned count = (unsigned)std::min<unsigned long long>(FREE_THREADS, total);
    const bool started = run_threads(count, [&](unsigned k) {
        try {
            for (unsigned long long g = k; g < total; g += count) {
                const unsigned long long b = g / block, t = g % block;
                blockIdx = dim3{(unsigned)(b % gridDim.x), (unsigned)(b / gridDim.x), 0};
                threadIdx = dim3{(unsigned)(t % blockDim.x), (unsigned)(t / blockDim.x), 0};
                body();
            }
        } catch (const barrier_outside_a_team&) {
            waited = true;
        }
    });
    return !started ? COULD_NOT_START : waited ? BARRIER_IN_A_FREE_LAUNCH : 0;
}

// Calls kernel(*args[0], *args[1], ...): args[i] points to a value of the
// kernel's i-th parameter type.
template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}

template <typename... A>
long long run_team(void (*kernel)(A...), const unsigned* dims, void** args) {
    return launch_team(dims, [&] { call(kernel, args, std::index_sequence_for<A...>{}); });
}

template <typename... A>
long long run_free(void (*kernel)(A...), const unsigned* dims, void** args) {
    return launch_free(dims, [&] { call(kernel, args, std::index_sequence_for<A...>{}); });
}

}  // namespace host_emulation

// HOST_ENTRY(symbol, kernel<T, I>): the variadic tail keeps the template's comma
#define HOST_ENTRY(symbol, ...)                                             \
    extern "C" long long symbol(const unsigned* dims, void** args) {        \
        return host_emulation::run_free(__VA_ARGS__, dims, args);           \
    }
#define HOST_ENTRY_WITH_BARRIERS(symbol, ...)                               \
    extern "C" long long symbol(const unsigned* dims, void** args) {        \
        return host_emulation::run_team(__VA_ARGS__, dims, args);           \
    }
