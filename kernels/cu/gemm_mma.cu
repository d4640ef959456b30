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
// gemm_bf16_fast / gemm_f16_fast (below) are the same product with a 3-stage cp.async pipeline and ldmatrix,
// for operands the launcher has checked are 16-byte aligned with 16-byte contiguous runs.
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

// A warp's 64x32 accumulator: 4x4 m16n8 tiles of 4 registers each (both GEMM paths share it).
__device__ __forceinline__ void zero_acc(float (&acc)[4][4][4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;
}

// Stores the accumulator: register r of tile (i, j) is (row 16i + 8(r/2), col 8j + r%2) from this lane's
// (row, col) = (row0 + g, col0 + 2t), as the C fragment table says.
__device__ __forceinline__ void store_acc(float* c, u32 m, u32 n, i64 c_m, u32 row0, u32 col0,
                                          const float (&acc)[4][4][4], float alpha, float beta) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      u32 r = row0 + 16 * i, col = col0 + 8 * j;
      gemm_store(c, m, n, c_m, r, col, acc[i][j][0], alpha, beta);
      gemm_store(c, m, n, c_m, r, col + 1, acc[i][j][1], alpha, beta);
      gemm_store(c, m, n, c_m, r + 8, col, acc[i][j][2], alpha, beta);
      gemm_store(c, m, n, c_m, r + 8, col + 1, acc[i][j][3], alpha, beta);
    }
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
  zero_acc(acc);

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
  store_acc(c, m, n, c_m, row0 + wrow + g, col0 + wcol + 2 * t, acc, alpha, beta);
}

extern "C" __global__ void __launch_bounds__(256) gemm_bf16(GEMM_PARAMS(u16)) {
  gemm_mma<true>(a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
}

extern "C" __global__ void __launch_bounds__(256) gemm_f16(GEMM_PARAMS(u16)) {
  gemm_mma<false>(a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
}

// ---------------------------------------------------------------------------------------------------
// Fast path: 3-stage cp.async pipeline + ldmatrix. Same tiles (128x128x32, 8 warps of 64x32), same
// fragments and epilogue as gemm_mma above; only the staging differs. Preconditions (checked by the
// launcher, cuda/src/ops.rs `half_gemm_fast_ok`): a and b 16-byte aligned (offset included), every batch
// stride a multiple of 8 elements, and per operand either
//   k-contiguous: stride along k == 1, the other stride % 8 == 0, k % 8 == 0, or
//   m- (n-) contiguous: the other stride == 1, stride along k % 8 == 0, m (n) % 8 == 0,
// so every 8-element run along the contiguous dim is one aligned 16-byte chunk, wholly in or out of range.
// An operand is taken as k-contiguous exactly when its k stride is 1 (the launcher decides the same way).
// Three stages of 16 KiB (A and B tiles of 128x32 halves, unpadded), 48 KiB of static shared memory, one
// __syncthreads per k step. Shared tiles keep the contiguous dim contiguous (cp.async cannot transpose):
// [row][k] (64-byte rows of four 16-byte chunks) for a k-contiguous operand, [k][row] (256-byte rows of 16
// chunks) otherwise. The chunks of a row are permuted (XOR swizzle: chunk c of row r is stored at chunk
// c ^ ((r / 2) % 4) of a [row][k] tile, c ^ (r % 8) of a [k][row] tile) so that the 8 row addresses of one
// ldmatrix phase, same logical chunk of 8 consecutive rows, fall in 8 different 16-byte bank groups.
// Fragments come from ldmatrix.x4 (non-transposed for [row][k], .trans for [k][row]).
//
// PTX ISA semantics used (and emulated in kernels/emu/cuda_threads.h):
//   cp.async.cg.shared.global [dst], [src], 16, src_size: copies src_size bytes (here 16 or 0) from global
//     src to shared dst and fills the rest of the 16 bytes with zeros; both addresses 16-byte aligned. It
//     completes asynchronously: cp.async.commit_group closes the thread's pending copies into a group,
//     cp.async.wait_group N waits until at most N of the thread's groups are pending. Other threads see the
//     data only after a barrier that follows the wait.
//   ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 {r0..r3}, [addr]: lane 8q + i gives the address of
//     row i (8 contiguous 16-bit elements, 16-byte aligned) of matrix q; lane l receives in r_q the
//     elements (row l/4, cols 2(l%4), 2(l%4)+1) of matrix q (lower column in the low half), or with .trans
//     the elements (rows 2(l%4), 2(l%4)+1, col l/4), i.e. the same fragment of the transposed matrix.
// Against the m16n8k16 fragments: A register r is the 8x8 block (rows 8(r%2).., k 8(r/2)..) read as
// [row][k] (non-trans) or [k][row] (.trans); B register r is (k 8r.., cols 0..7) read as [col][k]
// (non-trans) or [k][col] (.trans).
#define STAGES 3
#define TILE (BM * BK)  // halves per operand per stage
static_assert(BM == BN && BK == 32, "the swizzles assume 128x32 tiles of both operands");
static_assert(STAGES * 2 * TILE * 2 <= 48 * 1024, "static shared memory");

// Byte offset of 16-byte chunk `c` (8 halves along the contiguous dim) of row `r` in a swizzled tile.
template <bool K_FAST>
__device__ __forceinline__ u32 chunk_offset(u32 r, u32 c) {
  return K_FAST ? r * 64 + 16 * (c ^ ((r >> 1) & 3)) : r * 256 + 16 * (c ^ (r & 7));
}

// 32-bit shared-window address of a shared pointer (what cp.async and ldmatrix take).
__device__ __forceinline__ u32 shared_u32(const void* p) {
#ifdef KERNELS_CPU_EMULATION
  (void)p;
  return 0;
#else
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
#endif
}

// 16 bytes from `src` into the shared tile at byte `off`, or 16 zero bytes when !in_range (src is not read).
__device__ __forceinline__ void cp_async16(u16* tile, u32 tile_s, u32 off, const u16* src, bool in_range) {
#ifdef KERNELS_CPU_EMULATION
  (void)tile_s;
  emu_cp_async_16((char*)tile + off, src, in_range ? 16 : 0);
#else
  (void)tile;
  asm volatile("{ .reg .u64 g; cvta.to.global.u64 g, %1; cp.async.cg.shared.global [%0], [g], 16, %2; }" ::"r"(
                   tile_s + off),
               "l"(src), "r"(in_range ? 16u : 0u)
               : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef KERNELS_CPU_EMULATION
  emu_cp_async_commit();
#else
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits for all but the newest of this thread's committed groups.
__device__ __forceinline__ void cp_async_wait_one() {
#ifdef KERNELS_CPU_EMULATION
  emu_cp_async_wait(1);
#else
  asm volatile("cp.async.wait_group 1;" ::: "memory");
#endif
}

template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(u32* r, const u16* tile, u32 tile_s, u32 off) {
#ifdef KERNELS_CPU_EMULATION
  (void)tile_s;
  emu_ldmatrix_x4(r, (const char*)tile + off, TRANS);
#else
  (void)tile;
  if (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(tile_s + off)
                 : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(tile_s + off)
                 : "memory");
#endif
}

// One operand's 128x32 tile at k0 into a stage: 512 chunks of 8 halves, 2 per thread. K_FAST: global
// [row][k] (row stride `rs`), tile [row][k]; else global [k][row] (k stride `ks`), tile [k][row].
template <bool K_FAST>
__device__ __forceinline__ void load_tile(u16* tile, u32 tile_s, const u16* g, u32 row0, u32 rows, u32 k0, u32 k,
                                          i64 row_stride, i64 k_stride, u32 tid) {
#pragma unroll
  for (int l = 0; l < 2; ++l) {
    u32 c = tid + 256 * l;
    u32 r = K_FAST ? c >> 2 : (c & 15) * 8, kk = K_FAST ? (c & 3) * 8 : c >> 4;
    u32 gr = row0 + r, gk = k0 + kk;
    bool ok = gr < rows && gk < k;
    const u16* src = ok ? g + (i64)gr * row_stride + (i64)gk * k_stride : g;
    u32 off = K_FAST ? chunk_offset<true>(r, kk / 8) : chunk_offset<false>(kk, r / 8);
    cp_async16(tile, tile_s, off, src, ok);
  }
}

template <bool BF16, bool A_K, bool B_K>
__device__ __forceinline__ void gemm_mma_fast(u16* smem, GEMM_PARAMS(u16)) {
  const u32 smem_s = shared_u32(smem);
  a += blockIdx.z * a_batch;
  b += blockIdx.z * b_batch;
  c += blockIdx.z * c_batch;
  const u32 tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const u32 g = lane >> 2, t = lane & 3, q = lane >> 3, i8 = lane & 7;
  const u32 wrow = (warp >> 2) * 64, wcol = (warp & 3) * 32;
  const u32 row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
  float acc[4][4][4];
  zero_acc(acc);

  // The row this lane addresses for ldmatrix, within a stage (bytes), for A's m16 tile i and B's n16 pair
  // p at k half h. A: matrix q = (rows 8(q%2).., k 8(q/2)..). B: matrix q = (cols 8(q/2).., k 8(q%2)..),
  // so its registers 0..3 are fb[2p][0], fb[2p][1], fb[2p+1][0], fb[2p+1][1].
  auto a_row = [&](u32 i, u32 h) {
    u32 row = wrow + 16 * i + 8 * (q & 1) + i8, kk = 16 * h + 8 * (q >> 1);
    return A_K ? chunk_offset<true>(row, kk / 8) : chunk_offset<false>(kk + i8, (row - i8) / 8);
  };
  auto b_row = [&](u32 p, u32 h) {
    u32 col = wcol + 16 * p + 8 * (q >> 1) + i8, kk = 16 * h + 8 * (q & 1);
    return B_K ? chunk_offset<true>(col, kk / 8) : chunk_offset<false>(kk + i8, (col - i8) / 8);
  };

  auto load_stage = [&](u32 s, u32 k0) {
    u16* as = smem + (2 * s) * TILE;
    u16* bs = smem + (2 * s + 1) * TILE;
    const u32 as_s = smem_s + 2 * (2 * s) * TILE, bs_s = smem_s + 2 * (2 * s + 1) * TILE;
    load_tile<A_K>(as, as_s, a, row0, m, k0, k, a_m, a_k, tid);
    load_tile<B_K>(bs, bs_s, b, col0, n, k0, k, b_n, b_k, tid);
  };

  // One commit group per tile (empty past the last), so "all but the newest group" is always tile kt.
  const u32 nk = (k + BK - 1) / BK;
#pragma unroll
  for (u32 s = 0; s < STAGES - 1; ++s) {
    if (s < nk) load_stage(s, s * BK);
    cp_async_commit();
  }
  u32 s = 0, s_next = STAGES - 1;  // stages of tile kt and of tile kt + STAGES - 1
  for (u32 kt = 0; kt < nk; ++kt) {
    // Tile kt has landed for this thread (tile kt + 1 may still be in flight); after the barrier for
    // every thread, and every warp has finished reading stage s_next (tile kt - 1), so it can be refilled
    // while tile kt is used.
    cp_async_wait_one();
    __syncthreads();
    if (kt + STAGES - 1 < nk) load_stage(s_next, (kt + STAGES - 1) * BK);
    cp_async_commit();
    const u16* as = smem + (2 * s) * TILE;
    const u16* bs = smem + (2 * s + 1) * TILE;
    const u32 as_s = smem_s + 2 * (2 * s) * TILE, bs_s = smem_s + 2 * (2 * s + 1) * TILE;
#pragma unroll
    for (int h = 0; h < BK / 16; ++h) {
      u32 fa[4][4], fb[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) ldmatrix_x4<!A_K>(fa[i], as, as_s, a_row(i, h));
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        u32 r[4];
        ldmatrix_x4<!B_K>(r, bs, bs_s, b_row(p, h));
        fb[2 * p][0] = r[0];
        fb[2 * p][1] = r[1];
        fb[2 * p + 1][0] = r[2];
        fb[2 * p + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_16816<BF16>(acc[i][j], fa[i], fb[j]);
    }
    s = s == STAGES - 1 ? 0 : s + 1;
    s_next = s_next == STAGES - 1 ? 0 : s_next + 1;
  }
  store_acc(c, m, n, c_m, row0 + wrow + g, col0 + wcol + 2 * t, acc, alpha, beta);
}

// The layout is uniform per launch; one entry per element type keeps the launcher table small.
template <bool BF16>
__device__ __forceinline__ void gemm_fast_dispatch(GEMM_PARAMS(u16)) {
  // Declared here, not per layout, so that the four layouts share one 48 KiB array: [stage][A, B].
  __shared__ __align__(128) u16 smem[STAGES * 2 * TILE];
  if (a_k == 1) {
    if (b_k == 1)
      gemm_mma_fast<BF16, true, true>(smem, a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
    else
      gemm_mma_fast<BF16, true, false>(smem, a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
  } else {
    if (b_k == 1)
      gemm_mma_fast<BF16, false, true>(smem, a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
    else
      gemm_mma_fast<BF16, false, false>(smem, a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
  }
}

extern "C" __global__ void __launch_bounds__(256) gemm_bf16_fast(GEMM_PARAMS(u16)) {
  gemm_fast_dispatch<true>(a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
}

extern "C" __global__ void __launch_bounds__(256) gemm_f16_fast(GEMM_PARAMS(u16)) {
  gemm_fast_dispatch<false>(a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta);
}
