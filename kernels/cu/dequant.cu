// Dequantization of bitsandbytes' 4-bit matrices (NF4 / FP4) into f32, bit for bit what the host's
// `Bnb4bit::dequantize_flat` computes, so a GEMM over the result matches the host's up to summation
// order. Flat element e (row-major) holds its 4-bit code in byte e / 2, the high nibble for even e;
// its value is levels[code] * absmax[e / blocksize]. With double quantization the absmax of block b
// is itself decoded first: nested_code[codes[b]] * nested_absmax[b / nested_blocksize] + offset, a
// product rounded to f32 and then a sum rounded to f32, never one fused multiply-add (the host and
// bitsandbytes round twice; an fma would differ in the last bit). One thread per element, grid-stride.
#include "common.cuh"

typedef unsigned char u8;

// Products and sums with an explicit rounding mode: ptxas never contracts these into an fma.
#ifndef KERNELS_CPU_EMULATION
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
#else
// g++ contracts a * b + c only when told to target FMA hardware, which the emulation builds never do.
inline float mul_rn(float a, float b) { return a * b; }
inline float add_rn(float a, float b) { return a + b; }
#endif

__device__ __forceinline__ float bnb4_level(const u8* __restrict__ packed, const float* __restrict__ levels, u64 e) {
  u32 byte = packed[e >> 1];
  return levels[(e & 1) ? (byte & 15u) : (byte >> 4)];
}

// out[i] = levels[code(start + i)] * absmax[(start + i) / blocksize] for i < n (plain f32 absmax).
extern "C" __global__ void dequant_bnb4_f32(const u8* __restrict__ packed, const float* __restrict__ levels,
                                            const float* __restrict__ absmax, float* __restrict__ out, u64 start,
                                            u64 n, u32 blocksize) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    u64 e = start + i;
    out[i] = mul_rn(bnb4_level(packed, levels, e), absmax[e / blocksize]);
  }
}

// The same with double-quantized absmax: `codes` (u8, one per block), the 256-entry `nested_code`, one
// `nested_absmax` per `nested_blocksize` blocks, and the f32 `offset`.
extern "C" __global__ void dequant_bnb4_dq_f32(const u8* __restrict__ packed, const float* __restrict__ levels,
                                               const u8* __restrict__ codes, const float* __restrict__ nested_code,
                                               const float* __restrict__ nested_absmax, float offset,
                                               float* __restrict__ out, u64 start, u64 n, u32 blocksize,
                                               u32 nested_blocksize) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    u64 e = start + i;
    u64 b = e / blocksize;
    float scale = add_rn(mul_rn(nested_code[codes[b]], nested_absmax[b / nested_blocksize]), offset);
    out[i] = mul_rn(bnb4_level(packed, levels, e), scale);
  }
}
