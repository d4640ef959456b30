// Just enough of CUDA to run the grid-stride kernels of kernels/cu/ on the CPU as one thread that loops
// over the whole grid (blockDim = gridDim = 1), so their index math and arithmetic execute somewhere
// before a GPU is available. Block-cooperative kernels (shared memory, shuffles, mma) are not run here.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

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
static EmuDim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};

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
inline float atomicAdd(float* p, float v) {
  float old = *p;
  *p += v;
  return old;
}
// Only reached by block reductions, which the emulation does not run.
inline float __shfl_xor_sync(unsigned, float v, int) { return v; }
inline void __syncthreads() {}
