// Selection and data movement over strided f32 views, one thread per element (grid-stride): a strided
// copy that also writes through strides (so cat, stack and narrow's backward put each input straight
// into its slice of the output), select by a u8 mask, comparisons into u8 masks, and u8 <-> f32 casts.
#include "common.cuh"

typedef unsigned char u8;

// Comparison op codes (keep in sync with kernels::ops::Compare). A NaN operand compares false, except
// under C_NE (true), as f32's operators do on the host.
enum { C_GE, C_GT, C_EQ, C_NE };

__device__ __forceinline__ bool compare_op(u32 op, float a, float b) {
  switch (op) {
    case C_GE: return a >= b;
    case C_GT: return a > b;
    case C_EQ: return a == b;
    default: return a != b;
  }
}

// y[stride_b . idx(i)] = x[stride_a . idx(i)] over layout.shape. The destination strides let the host
// pass the address of a slice of a larger output (its offset) and that output's strides.
extern "C" __global__ void copy_strided_f32(const float* __restrict__ x, float* __restrict__ y, Layout layout, u64 n) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    i64 ox, oy;
    strided_offsets(layout, i, &ox, &oy);
    y[oy] = x[ox];
  }
}

// out[i] = mask[m] != 0 ? a[oa] : b[ob] into a contiguous output: a select, never a blend, so a -inf
// fill stays -inf and never turns into NaN. `ma` holds the strides of the mask (stride_a) and of a
// (stride_b); `lb.stride_a` those of b (its shape and ndim equal ma's, its stride_b is unused).
extern "C" __global__ void where_f32(const u8* __restrict__ mask, const float* __restrict__ a,
                                     const float* __restrict__ b, float* __restrict__ out, Layout ma, Layout lb,
                                     u64 n) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    i64 om, oa, ob, unused;
    strided_offsets(ma, i, &om, &oa);
    strided_offsets(lb, i, &ob, &unused);
    out[i] = mask[om] ? a[oa] : b[ob];
  }
}

// out[i] = op(a[stride_a . idx(i)], b[stride_b . idx(i)]) as 0 / 1 (broadcasting is a zero stride).
extern "C" __global__ void compare_f32(const float* __restrict__ a, const float* __restrict__ b, u8* __restrict__ out,
                                       Layout layout, u64 n, u32 op) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    i64 oa, ob;
    strided_offsets(layout, i, &oa, &ob);
    out[i] = compare_op(op, a[oa], b[ob]) ? 1 : 0;
  }
}

extern "C" __global__ void cast_u8_f32(const u8* __restrict__ x, float* __restrict__ y, u64 n) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) y[i] = (float)x[i];
}

// Saturating like Rust's `as u8`: truncation toward zero, NaN and negatives to 0, 255 and above to 255.
extern "C" __global__ void cast_f32_u8(const float* __restrict__ x, u8* __restrict__ y, u64 n) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    float v = x[i];
    y[i] = v > 0.0f ? (v < 255.0f ? (u8)v : (u8)255) : (u8)0;
  }
}
