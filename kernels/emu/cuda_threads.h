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
#define __align__(n) __attribute__((aligned(n)))

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

// f16 / bf16 bits to float, for the emulated mma.
inline float emu_half_to_float(unsigned short h, bool bf16) {
  if (bf16) return __uint_as_float((unsigned)h << 16);
  unsigned sign = (h >> 15) & 1, exp = (h >> 10) & 31, man = h & 1023;
  float v = exp == 0 ? std::ldexp((float)man, -24) : exp == 31 ? (man ? NAN : INFINITY) : std::ldexp((float)(man | 1024), (int)exp - 25);
  return sign ? -v : v;
}

namespace emu {
inline unsigned mma_a[1024][4], mma_b[1024][2];
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16} for the calling lane, from the PTX ISA's fragment
// tables (g = lane / 4, t = lane % 4; each 32-bit register holds two elements, the lower k in the low
// half): A register r holds (row g + 8 (r % 2), k 2t + 8 (r / 2) + {0, 1}); B register r holds
// (k 2t + 8 r + {0, 1}, col g); D element r is (row g + 8 (r / 2), col 2t + r % 2). Every lane of the
// warp must call it.
inline void emu_mma_m16n8k16(float* d, const unsigned* a, const unsigned* b, bool bf16) {
  unsigned t = threadIdx.x, w = t / 32, base = w * 32, lane = t % 32;
  for (int r = 0; r < 4; ++r) emu::mma_a[t][r] = a[r];
  for (int r = 0; r < 2; ++r) emu::mma_b[t][r] = b[r];
  emu::warp_barriers[w]->arrive_and_wait();
  auto elem = [&](unsigned word, unsigned k) { return emu_half_to_float((unsigned short)(word >> (16 * (k & 1))), bf16); };
  auto a_at = [&](unsigned row, unsigned k) {
    unsigned src = base + (row % 8) * 4 + (k % 8) / 2, reg = (row >= 8) + 2 * (k >= 8);
    return elem(emu::mma_a[src][reg], k);
  };
  auto b_at = [&](unsigned k, unsigned col) {
    unsigned src = base + col * 4 + (k % 8) / 2, reg = k >= 8;
    return elem(emu::mma_b[src][reg], k);
  };
  for (unsigned r = 0; r < 4; ++r) {
    unsigned row = lane / 4 + 8 * (r / 2), col = 2 * (lane % 4) + r % 2;
    float s = 0.0f;
    for (unsigned k = 0; k < 16; ++k) s += a_at(row, k) * b_at(k, col);
    d[r] += s;
  }
  emu::warp_barriers[w]->arrive_and_wait();
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
