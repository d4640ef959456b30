// Dropout with a counter-based RNG (Philox4x32-10, Salmon et al. 2011): element i uses word i % 4 of the
// block philox(counter = (i / 4 + offset, 0, 0, 0), key = seed), so the backward regenerates the same
// mask from (seed, offset) without storing it, and the result does not depend on the launch shape.
// kernels/src/philox.rs is the same generator on the CPU, checked against the published test vectors.
// y = keep ? x / (1 - p) : 0, keep = u32 word >= p * 2^32. The backward is the same kernel on dy.
#include "common.cuh"

__device__ __forceinline__ void philox4x32_10(u32 c[4], u32 k0, u32 k1) {
  const u32 M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    u32 hi0 = __umulhi(M0, c[0]), lo0 = M0 * c[0];
    u32 hi1 = __umulhi(M1, c[2]), lo1 = M1 * c[2];
    u32 n0 = hi1 ^ c[1] ^ k0, n1 = lo1, n2 = hi0 ^ c[3] ^ k1, n3 = lo0;
    c[0] = n0;
    c[1] = n1;
    c[2] = n2;
    c[3] = n3;
    k0 += W0;
    k1 += W1;
  }
}

extern "C" __global__ void dropout_f32(const float* __restrict__ x, float* __restrict__ y, u64 n, float p,
                                       u64 seed, u64 offset) {
  u32 threshold = p >= 1.0f ? 0xffffffffu : (u32)(p * 4294967296.0);
  float scale = p >= 1.0f ? 0.0f : 1.0f / (1.0f - p);
  u64 blocks = (n + 3) / 4;
  for (u64 blk = blockIdx.x * (u64)blockDim.x + threadIdx.x; blk < blocks; blk += (u64)gridDim.x * blockDim.x) {
    u64 ctr = blk + offset;
    u32 c[4] = {(u32)ctr, (u32)(ctr >> 32), 0u, 0u};
    philox4x32_10(c, (u32)seed, (u32)(seed >> 32));
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      u64 i = blk * 4 + w;
      if (i < n) y[i] = (p < 1.0f && c[w] >= threshold) ? x[i] * scale : 0.0f;
    }
  }
}
