// f32 GEMM on the SIMT cores (no TF32): 128x128 output tile per 256-thread block, k step 8, each thread
// an 8x8 sub-tile made of two 4-row and two 4-column runs (rows 4ty..4ty+3 and 64+4ty.., columns alike),
// so each k step reads its 16 operands from shared memory as four 16-byte loads (a warp reads at most
// 16 distinct, contiguous float4: no bank conflicts beyond the two phases any 128-bit access takes).
// Out-of-range rows/cols/k are loaded as zero and never stored, so any shape works.
#include "gemm_args.cuh"

#define BM 128
#define BN 128
#define BK 8

// Four floats read as one 16-byte shared-memory load (ld.shared.v4.f32).
struct __align__(16) Quad {
  float v[4];
};

extern "C" __global__ void __launch_bounds__(256) gemm_f32(GEMM_PARAMS(float)) {
  __shared__ __align__(16) float as[2][BK][BM];
  __shared__ __align__(16) float bs[2][BK][BN];
  a += blockIdx.z * a_batch;
  b += blockIdx.z * b_batch;
  c += blockIdx.z * c_batch;
  const u32 tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const u32 row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

  // Each thread loads 4 elements of each tile: tile element e = tid + 256 * l. Consecutive threads take
  // consecutive addresses when they can: along k for an operand whose k stride is 1 (row-major A,
  // column-major B), along m / n otherwise. Both orders cover the same tile; the branch is uniform.
  const bool a_k_fast = a_k == 1, b_k_fast = b_k == 1;
  float ra[4], rb[4];
  auto load = [&](u32 k0) {
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      u32 e = tid + 256 * l;
      u32 r = a_k_fast ? e >> 3 : e & (BM - 1), kk = a_k_fast ? e & (BK - 1) : e >> 7;
      u32 gm = row0 + r, gk = k0 + kk;
      ra[l] = (gm < m && gk < k) ? a[(i64)gm * a_m + (i64)gk * a_k] : 0.0f;
      u32 c = b_k_fast ? e >> 3 : e & (BN - 1), kb = b_k_fast ? e & (BK - 1) : e >> 7;
      u32 gn = col0 + c, gkb = k0 + kb;
      rb[l] = (gn < n && gkb < k) ? b[(i64)gkb * b_k + (i64)gn * b_n] : 0.0f;
    }
  };
  auto stash = [&](int buf) {
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      u32 e = tid + 256 * l;
      if (a_k_fast) as[buf][e & (BK - 1)][e >> 3] = ra[l];
      else as[buf][e >> 7][e & (BM - 1)] = ra[l];
      if (b_k_fast) bs[buf][e & (BK - 1)][e >> 3] = rb[l];
      else bs[buf][e >> 7][e & (BN - 1)] = rb[l];
    }
  };

  load(0);
  stash(0);
  __syncthreads();
  int buf = 0;
  for (u32 k0 = 0; k0 < k; k0 += BK) {
    // Prefetch the next k slice into registers while this one is multiplied (double-buffered smem).
    bool more = k0 + BK < k;
    if (more) load(k0 + BK);
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      const Quad a0 = *(const Quad*)&as[buf][kk][4 * ty], a1 = *(const Quad*)&as[buf][kk][64 + 4 * ty];
      const Quad b0 = *(const Quad*)&bs[buf][kk][4 * tx], b1 = *(const Quad*)&bs[buf][kk][64 + 4 * tx];
      float av[8], bv[8];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        av[q] = a0.v[q];
        av[4 + q] = a1.v[q];
        bv[q] = b0.v[q];
        bv[4 + q] = b1.v[q];
      }
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (more) stash(buf ^ 1);
    __syncthreads();
    buf ^= 1;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j)
      gemm_store(c, m, n, c_m, row0 + (i < 4 ? 4 * ty + i : 64 + 4 * ty + i - 4),
                 col0 + (j < 4 ? 4 * tx + j : 64 + 4 * tx + j - 4), acc[i][j], alpha, beta);
}
