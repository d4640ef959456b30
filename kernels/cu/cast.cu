// dtype casts between f32 and bf16 / f16 (round to nearest even; NaN stays NaN), contiguous.
#include "common.cuh"

#define GRID_STRIDE(n) for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

extern "C" __global__ void cast_f32_bf16(const float* __restrict__ x, u16* __restrict__ y, u64 n) {
  GRID_STRIDE(n) y[i] = f32_to_bf16(x[i]);
}

extern "C" __global__ void cast_bf16_f32(const u16* __restrict__ x, float* __restrict__ y, u64 n) {
  GRID_STRIDE(n) y[i] = bf16_to_f32(x[i]);
}

extern "C" __global__ void cast_f32_f16(const float* __restrict__ x, u16* __restrict__ y, u64 n) {
  GRID_STRIDE(n) y[i] = f32_to_f16(x[i]);
}

extern "C" __global__ void cast_f16_f32(const u16* __restrict__ x, float* __restrict__ y, u64 n) {
  GRID_STRIDE(n) y[i] = f16_to_f32(x[i]);
}
