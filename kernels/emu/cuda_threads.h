// A CUDA shim that runs a kernel's blocks one after another, each as blockDim.x real threads, with
// __syncthreads as a block barrier, __shared__ as one static per kernel (shared by the block's threads)
// and __shfl_xor_sync through a per-warp exchange buffer and barrier: enough to execute the
// block-cooperative kernels (row reductions, the SIMT GEMM's shared-memory tiles) on the CPU.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define KERNELS_CPU_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
#define __shared__ static

struct EmuDim3 {
  unsigned x, y, z;
};
static thread_local EmuDim3 threadIdx = {0, 0, 0};
static EmuDim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }

namespace emu {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline float exchange[1024];
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

// Every lane of the calling warp must call this (as on hardware with a full mask).
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  unsigned t = threadIdx.x, w = t / 32;
  emu::exchange[t] = v;
  emu::warp_barriers[w]->arrive_and_wait();
  float r = emu::exchange[t ^ (unsigned)lane_mask];
  emu::warp_barriers[w]->arrive_and_wait();
  return r;
}

inline float atomicAdd(float* p, float v) {
  static std::mutex m;
  std::lock_guard<std::mutex> g(m);
  float old = *p;
  *p += v;
  return old;
}

// Runs `kernel()` over grid (gx, gy, gz) with `threads` (a multiple of 32, at most 1024) per block.
template <class F>
void emu_launch(unsigned gx, unsigned gy, unsigned gz, unsigned threads, F kernel) {
  gridDim = {gx, gy, gz};
  blockDim = {threads, 1, 1};
  emu::block_barrier = std::make_unique<std::barrier<>>(threads);
  emu::warp_barriers.clear();
  for (unsigned w = 0; w < threads / 32; ++w) emu::warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        blockIdx = {x, y, z};
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t)
          pool.emplace_back([t, &kernel] {
            threadIdx = {t, 0, 0};
            kernel();
          });
        for (auto& th : pool) th.join();
      }
}
