// Layer norm and RMS norm over the last dim, forward and backward, one block per row. The forward saves
// mean (layer norm only) and 1/std per row; the backward recomputes xhat from them. Weight/bias gradients
// are summed over rows with atomicAdd into zeroed buffers (order-dependent rounding, within f32 tolerance).
#include "common.cuh"

// rms != 0: y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps) (no mean, no bias);
// else y = (x - mean) * rstd * w + b. w and b may be null (no affine).
extern "C" __global__ void __launch_bounds__(1024) norm_f32(const float* __restrict__ x, const float* __restrict__ w,
                                    const float* __restrict__ b, float* __restrict__ y, float* __restrict__ mean_out,
                                    float* __restrict__ rstd_out, u32 rows, u32 cols, float eps, u32 rms) {
  __shared__ float scratch[32];
  u32 row = blockIdx.x;
  if (row >= rows) return;
  const float* p = x + (u64)row * cols;
  float mean = 0.0f;
  if (!rms) {
    float s = 0.0f;
    for (u32 i = threadIdx.x; i < cols; i += blockDim.x) s += p[i];
    mean = block_sum(s, scratch) / (float)cols;
  }
  float v = 0.0f;
  for (u32 i = threadIdx.x; i < cols; i += blockDim.x) {
    float d = p[i] - mean;
    v += d * d;
  }
  float rstd = 1.0f / sqrtf(block_sum(v, scratch) / (float)cols + eps);
  for (u32 i = threadIdx.x; i < cols; i += blockDim.x) {
    float h = (p[i] - mean) * rstd;
    y[(u64)row * cols + i] = h * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
  }
  if (threadIdx.x == 0) {
    if (mean_out) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// dxhat = dy * w; layer norm: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat));
// rms norm: dx = rstd * (dxhat - xhat * mean(dxhat * xhat)). dw += dy * xhat, db += dy (if non-null).
extern "C" __global__ void __launch_bounds__(1024) norm_bwd_f32(const float* __restrict__ x, const float* __restrict__ w,
                                        const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                                        const float* __restrict__ dy, float* __restrict__ dx, float* __restrict__ dw,
                                        float* __restrict__ db, u32 rows, u32 cols, u32 rms) {
  __shared__ float scratch[32];
  u32 row = blockIdx.x;
  if (row >= rows) return;
  u64 off = (u64)row * cols;
  float mean = rms ? 0.0f : mean_in[row], rstd = rstd_in[row];
  float s1 = 0.0f, s2 = 0.0f;
  for (u32 i = threadIdx.x; i < cols; i += blockDim.x) {
    float h = (x[off + i] - mean) * rstd, g = dy[off + i] * (w ? w[i] : 1.0f);
    s1 += g;
    s2 += g * h;
    if (dw) atomicAdd(&dw[i], dy[off + i] * h);
    if (db) atomicAdd(&db[i], dy[off + i]);
  }
  s1 = block_sum(s1, scratch) / (float)cols;
  s2 = block_sum(s2, scratch) / (float)cols;
  for (u32 i = threadIdx.x; i < cols; i += blockDim.x) {
    float h = (x[off + i] - mean) * rstd, g = dy[off + i] * (w ? w[i] : 1.0f);
    dx[off + i] = rstd * (g - (rms ? 0.0f : s1) - h * s2);
  }
}
