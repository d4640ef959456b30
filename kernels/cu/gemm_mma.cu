// bf16 / f16 GEMM on the tensor cores with f32 accumulation: mma.sync.aligned.m16n8k16.row.col.
// Block tile 128x128, k step 32, 8 warps in a 2x4 grid, each warp 64 rows x 32 cols = 4x4 mma tiles.
// Operands are staged in shared memory as [row][k] for A and [col][k] for B (k contiguous, padded by 8
// halves against bank conflicts), so every fragment register is one aligned 32-bit load of two adjacent k.
// Fragment layout (PTX ISA, m16n8k16 with .bf16/.f16 inputs), g = lane / 4, t = lane % 4:
//   A regs r0..r3: (row g, k 2t), (row g+8, k 2t), (row g, k 2t+8), (row g+8, k 2t+8), 2 k values each
//   B regs r0..r1: (col g, k 2t), (col g, k 2t+8), 2 k values each
//   C regs c0..c3: (row g, col 2t), (row g, col 2t+1), (row g+8, col 2t), (row g+8, col 2t+1)
// kernels/src/mma_layout.rs replays this index math in Rust, and kernels/emu/ runs this file on the CPU
// with mma.sync emulated from the ISA's layout tables.
// Out-of-range elements are loaded as zero and never stored, so any shape works.
#include "gemm_args.cuh"

#define BM 128
#define BN 128
#define BK 32
#define LDS (BK + 8)

template <bool BF16>
__device__ __forceinline__ void mma_16816(float* d, const u32* a, const u32* b) {
#ifdef KERNELS_CPU_EMULATION
  emu_mma_m16n8k16(d, a, b, BF16);  // the ISA's semantics, in kernels/emu/cuda_threads.h
#else
  if (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

template <bool BF16>
__device__ __forceinline__ void gemm_mma(GEMM_PARAMS(u16)) {
  __shared__ __align__(16) u16 as[BM][LDS];
  __shared__ __align__(16) u16 bs[BN][LDS];
  a += blockIdx.z * a_batch;
  b += blockIdx.z * b_batch;
  c += blockIdx.z * c_batch;
  const u32 tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const u32 g = lane >> 2, t = lane & 3;
  const u32 wrow = (warp >> 2) * 64, wcol = (warp & 3) * 32;
  const u32 row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

  const bool a_k_fast = a_k == 1, b_k_fast = b_k == 1;
  for (u32 k0 = 0; k0 < k; k0 += BK) {
    // 128x32 halves per operand = 16 per thread, element e = tid + 256 * l. Consecutive threads take
    // consecutive addresses: along k (row e / 32, k e % 32) for an operand whose k stride is 1 (row-major
    // A, column-major B), else along m / n (row e % 128, k e / 128). Same tile either way; uniform branch.
    // Unrolled by 4 only: a full unroll hoists all 32 loads and spills.
#pragma unroll 4
    for (int l = 0; l < 16; ++l) {
      u32 e = tid + 256 * l;
      u32 r = a_k_fast ? e >> 5 : e & (BM - 1), kk = a_k_fast ? e & (BK - 1) : e >> 7;
      u32 gm = row0 + r, gk = k0 + kk;
      as[r][kk] = (gm < m && gk < k) ? a[(i64)gm * a_m + (i64)gk * a_k] : (u16)0;
      u32 c = b_k_fast ? e >> 5 : e & (BN - 1), kb = b_k_fast ? e & (BK - 1) : e >> 7;
      u32 gn = col0 + c, gkb = k0 + kb;
      bs[c][kb] = (gn < n && gkb < k) ? b[(i64)gkb * b_k + (i64)gn * b_n] : (u16)0;
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      u32 fa[4][4], fb[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const u16* base = &as[wrow + 16 * i + g][ks + 2 * t];
        fa[i][0] = *(const u32*)(base);
        fa[i][1] = *(const u32*)(base + 8 * LDS);
        fa[i][2] = *(const u32*)(base + 8);
        fa[i][3] = *(const u32*)(base + 8 * LDS + 8);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const u16* base = &bs[wcol + 8 * j + g][ks + 2 * t];
        fb[j][0] = *(const u32*)(base);
        fb[j][1] = *(const u32*)(base + 8);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_16816<BF16>(acc[i][j], fa[i], fb[j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      u32 r = row0 + wrow + 16 * i + g, col = col0 + wcol + 8 * j + 2 * t;
      gemm_store(c, m, n, c_m, r, col, acc[i][j][0], alpha, beta);
      gemm_store(c, m, n, c_m, r, col + 1, acc[i][j][1], alpha, beta);
      gemm_store(c, m, n, c_m, r + 8, col, acc[i][j][2], alpha, beta);
      gemm_store(c, m, n, c_m, r + 8, col + 1, acc[i][j][3], alpha, beta);
    }
}

extern "C" __global__ void __launch_bounds__(256) gemm_bf16(GEMM_PARAMS(u16)) {
  gemm_mma<true>(a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
}

extern "C" __global__ void __launch_bounds__(256) gemm_f16(GEMM_PARAMS(u16)) {
  gemm_mma<false>(a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
}
