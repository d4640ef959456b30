// f32 GEMM on the SIMT cores (no TF32): 128x128 output tile per 256-thread block, k step 8, each thread
// an 8x8 sub-tile spread with stride 16 over the tile so that shared-memory reads are conflict-free and
// global stores coalesce. Out-of-range rows/cols/k are loaded as zero and never stored, so any shape works.
#include "gemm_args.cuh"

#define BM 128
#define BN 128
#define BK 8

extern "C" __global__ void __launch_bounds__(256) gemm_f32(GEMM_PARAMS(float)) {
  __shared__ float as[2][BK][BM];
  __shared__ float bs[2][BK][BN];
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
      float av[8], bv[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) av[i] = as[buf][kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 8; ++j) bv[j] = bs[buf][kk][tx + 16 * j];
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
      gemm_store(c, m, n, c_m, row0 + ty + 16 * i, col0 + tx + 16 * j, acc[i][j], alpha, beta);
}
