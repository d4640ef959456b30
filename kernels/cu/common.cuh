// Shared helpers for the kernels: no CUDA headers are used (NVRTC compiles these without the toolkit's
// include tree), so the few intrinsics we need are spelled out here.
#pragma once

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
typedef long long i64;

#define MAX_DIMS 6
#define NEG_INF (__int_as_float(0xff800000))

// Shape and element strides of up to MAX_DIMS dims, passed by value. A broadcast input has stride 0 on
// the broadcast dims, a transposed view has permuted strides: one kernel covers both.
struct Layout {
  u64 shape[MAX_DIMS];
  i64 stride_a[MAX_DIMS];
  i64 stride_b[MAX_DIMS];
  u32 ndim;
};

// Offsets of the linear (row-major over `shape`) index `i` in the two strided inputs.
__device__ __forceinline__ void strided_offsets(const Layout& l, u64 i, i64* oa, i64* ob) {
  i64 a = 0, b = 0;
  for (int d = (int)l.ndim - 1; d >= 0; --d) {
    u64 s = l.shape[d];
    u64 c = i % s;
    i /= s;
    a += (i64)c * l.stride_a[d];
    b += (i64)c * l.stride_b[d];
  }
  *oa = a;
  *ob = b;
}

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ u16 f32_to_bf16(float f) {
  u32 x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (u16)((x >> 16) | 0x40u);
  u32 rounding = 0x7fffu + ((x >> 16) & 1u);
  return (u16)((x + rounding) >> 16);
}

// PTX conversions; the CPU emulation (kernels/emu/cuda_threads.h) defines its own.
#ifndef KERNELS_CPU_EMULATION
__device__ __forceinline__ float f16_to_f32(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
#endif

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum/max for blockDim.x a multiple of 32 (at most 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; the leading barrier lets callers reuse it back to back.
template <bool MAX>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
  v = MAX ? warp_max(v) : warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  u32 warps = blockDim.x >> 5;
  v = threadIdx.x < warps ? scratch[threadIdx.x] : (MAX ? NEG_INF : 0.0f);
  if (threadIdx.x < 32) v = MAX ? warp_max(v) : warp_sum(v);
  if (threadIdx.x == 0) scratch[0] = v;
  __syncthreads();
  return scratch[0];
}

__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<false>(v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<true>(v, scratch); }

// Max and sum(exp(x - max)) of one row, computed by the whole block.
__device__ __forceinline__ void row_max_sumexp(const float* p, u32 cols, float* scratch, float* mx_out,
                                               float* sum_out) {
  float mx = NEG_INF;
  for (u32 i = threadIdx.x; i < cols; i += blockDim.x) mx = fmaxf(mx, p[i]);
  mx = block_max(mx, scratch);
  float s = 0.0f;
  for (u32 i = threadIdx.x; i < cols; i += blockDim.x) s += expf(p[i] - mx);
  *mx_out = mx;
  *sum_out = block_sum(s, scratch);
}
