// Rotary position embedding, Hugging Face Llama "rotate_half" convention, on contiguous
// [batch, heads, seq, head_dim] f32 with precomputed cos/sin tables [seq, head_dim] (or
// [batch, seq, head_dim] when per_batch != 0), as the engine's Tensor::rope:
//   forward:   y = x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[half..], x[..half])
//   transpose: the adjoint map x * cos + rotate_half^T(x * sin), which is the backward.
// The tables carry positions, so key/value prefixes and cached positions need nothing here.
#include "common.cuh"

extern "C" __global__ void rope_f32(const float* __restrict__ x, const float* __restrict__ cos_t,
                                    const float* __restrict__ sin_t, float* __restrict__ y, u32 batch, u32 heads,
                                    u32 seq, u32 head_dim, u32 per_batch, u32 transpose) {
  u32 half = head_dim / 2;
  u64 rows = (u64)batch * heads * seq, total = rows * half;
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
    u64 row = i / half;
    u32 j = (u32)(i % half);
    u64 t = row % seq, b = row / ((u64)heads * seq);
    u64 trow = (per_batch ? b * seq + t : t) * head_dim;
    const float* c = cos_t + trow;
    const float* s = sin_t + trow;
    const float* p = x + row * head_dim;
    float x1 = p[j], x2 = p[j + half];
    float* o = y + row * head_dim;
    if (transpose) {
      o[j] = x1 * c[j] + x2 * s[j + half];
      o[j + half] = x2 * c[j + half] - x1 * s[j];
    } else {
      o[j] = x1 * c[j] - x2 * s[j];
      o[j + half] = x2 * c[j + half] + x1 * s[j + half];
    }
  }
}
