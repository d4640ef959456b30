// Elementwise ops over strided / broadcast f32 inputs into a contiguous output: one thread per output
// element (grid-stride). The op is a runtime code (see kernels/src/ops.rs for the numbering), so that
// one entry point per arity covers the engine's whole unary and binary families.
#include "common.cuh"

// Unary op codes (keep in sync with kernels::ops::Unary).
enum { U_NEG, U_EXP, U_LOG, U_RELU, U_GELU_TANH, U_GELU_ERF, U_SILU, U_TANH, U_SIGMOID, U_SQRT, U_RSQRT, U_ABS,
       U_SQUARE, U_RECIP, U_SCALE, U_ADD_SCALAR, U_POW_SCALAR, U_COPY };

// Binary op codes (keep in sync with kernels::ops::Binary).
enum { B_ADD, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_POW, B_RELU_BWD, B_SILU_BWD, B_GELU_TANH_BWD, B_GELU_ERF_BWD,
       B_TANH_BWD, B_SIGMOID_BWD };

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float unary_op(u32 op, float x, float s) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  switch (op) {
    case U_NEG: return -x;
    case U_EXP: return expf(x);
    case U_LOG: return logf(x);
    case U_RELU: return x > 0.0f ? x : 0.0f;
    case U_GELU_TANH: return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    case U_GELU_ERF: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case U_SILU: return x * sigmoidf(x);
    case U_TANH: return tanhf(x);
    case U_SIGMOID: return sigmoidf(x);
    case U_SQRT: return sqrtf(x);
    case U_RSQRT: return 1.0f / sqrtf(x);
    case U_ABS: return fabsf(x);
    case U_SQUARE: return x * x;
    case U_RECIP: return 1.0f / x;
    case U_SCALE: return x * s;
    case U_ADD_SCALAR: return x + s;
    case U_POW_SCALAR: return powf(x, s);
    default: return x;
  }
}

// Backward ops take (x, dy) and return dx, so they are binary ops over the forward input and the gradient.
__device__ __forceinline__ float binary_op(u32 op, float x, float y) {
  const float k = 0.7978845608028654f;
  switch (op) {
    case B_ADD: return x + y;
    case B_SUB: return x - y;
    case B_MUL: return x * y;
    case B_DIV: return x / y;
    case B_MAX: return fmaxf(x, y);
    case B_MIN: return fminf(x, y);
    case B_POW: return powf(x, y);
    case B_RELU_BWD: return x > 0.0f ? y : 0.0f;
    case B_SILU_BWD: {
      float s = sigmoidf(x);
      return y * s * (1.0f + x * (1.0f - s));
    }
    case B_GELU_TANH_BWD: {
      float u = k * (x + 0.044715f * x * x * x), t = tanhf(u);
      float du = k * (1.0f + 3.0f * 0.044715f * x * x);
      return y * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du);
    }
    case B_GELU_ERF_BWD: {
      float cdf = 0.5f * (1.0f + erff(x * 0.7071067811865476f));
      float pdf = 0.3989422804014327f * expf(-0.5f * x * x);
      return y * (cdf + x * pdf);
    }
    case B_TANH_BWD: {
      float t = tanhf(x);
      return y * (1.0f - t * t);
    }
    case B_SIGMOID_BWD: {
      float s = sigmoidf(x);
      return y * s * (1.0f - s);
    }
    default: return x;
  }
}

// y[i] = op(x[layout.stride_a . idx(i)], scalar); layout.stride_b is unused.
extern "C" __global__ void unary_f32(const float* __restrict__ x, float* __restrict__ y, Layout layout, u64 n, u32 op,
                                     float scalar) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    i64 oa, ob;
    strided_offsets(layout, i, &oa, &ob);
    y[i] = unary_op(op, x[oa], scalar);
  }
}

// out[i] = op(a[stride_a . idx(i)], b[stride_b . idx(i)]): broadcasting is a zero stride.
extern "C" __global__ void binary_f32(const float* __restrict__ a, const float* __restrict__ b,
                                      float* __restrict__ out, Layout layout, u64 n, u32 op) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    i64 oa, ob;
    strided_offsets(layout, i, &oa, &ob);
    out[i] = binary_op(op, a[oa], b[ob]);
  }
}

// dst[i] += src[i]: gradient accumulation into a contiguous buffer.
extern "C" __global__ void accumulate_f32(float* __restrict__ dst, const float* __restrict__ src, u64 n) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) dst[i] += src[i];
}

extern "C" __global__ void fill_f32(float* __restrict__ dst, u64 n, float value) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) dst[i] = value;
}
