// Sum / max / mean of an f32 tensor viewed as [outer, len, inner] over the middle dim, into [outer, inner].
// inner == 1 (the last dim, the common case) gets one block per row with a tree reduction; otherwise one
// thread per (outer, inner) walks the dim, so neighbouring threads read neighbouring addresses.
#include "common.cuh"

// Reduce op codes (keep in sync with kernels::ops::Reduce).
enum { R_SUM, R_MAX, R_MEAN };

extern "C" __global__ void __launch_bounds__(1024) reduce_last_f32(const float* __restrict__ x, float* __restrict__ y, u32 rows, u32 len,
                                           u32 op) {
  __shared__ float scratch[32];
  u32 row = blockIdx.x;
  if (row >= rows) return;
  const float* p = x + (u64)row * len;
  float v = op == R_MAX ? NEG_INF : 0.0f;
  for (u32 i = threadIdx.x; i < len; i += blockDim.x) v = op == R_MAX ? fmaxf(v, p[i]) : v + p[i];
  v = op == R_MAX ? block_max(v, scratch) : block_sum(v, scratch);
  if (threadIdx.x == 0) y[row] = op == R_MEAN ? v / (float)len : v;
}

extern "C" __global__ void reduce_mid_f32(const float* __restrict__ x, float* __restrict__ y, u32 outer, u32 len,
                                          u32 inner, u32 op) {
  u64 total = (u64)outer * inner;
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
    u64 o = i / inner, in = i % inner;
    const float* p = x + o * len * inner + in;
    float v = op == R_MAX ? NEG_INF : 0.0f;
    for (u32 j = 0; j < len; ++j) v = op == R_MAX ? fmaxf(v, p[(u64)j * inner]) : v + p[(u64)j * inner];
    y[i] = op == R_MEAN ? v / (float)len : v;
  }
}
