// Row kernels are bounded to 1024 threads (cuda::geometry::row_block picks up to that many).
// Row softmax / log-softmax over the last dim (one block per row), their backward, and the fused
// cross-entropy (log-softmax + NLL) with ignore_index rows skipped, as the engine's loss does.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(1024) softmax_f32(const float* __restrict__ x, float* __restrict__ y, u32 rows, u32 cols,
                                       u32 log) {
  __shared__ float scratch[32];
  u32 row = blockIdx.x;
  if (row >= rows) return;
  const float* p = x + (u64)row * cols;
  float* q = y + (u64)row * cols;
  float mx, s;
  row_max_sumexp(p, cols, scratch, &mx, &s);
  if (log) {
    float lse = mx + logf(s);
    for (u32 i = threadIdx.x; i < cols; i += blockDim.x) q[i] = p[i] - lse;
  } else {
    float inv = 1.0f / s;
    for (u32 i = threadIdx.x; i < cols; i += blockDim.x) q[i] = expf(p[i] - mx) * inv;
  }
}

// softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy).
extern "C" __global__ void __launch_bounds__(1024) softmax_bwd_f32(const float* __restrict__ y, const float* __restrict__ dy,
                                           float* __restrict__ dx, u32 rows, u32 cols, u32 log) {
  __shared__ float scratch[32];
  u32 row = blockIdx.x;
  if (row >= rows) return;
  u64 off = (u64)row * cols;
  float s = 0.0f;
  for (u32 i = threadIdx.x; i < cols; i += blockDim.x) s += log ? dy[off + i] : dy[off + i] * y[off + i];
  s = block_sum(s, scratch);
  for (u32 i = threadIdx.x; i < cols; i += blockDim.x) {
    float yi = y[off + i], g = dy[off + i];
    dx[off + i] = log ? g - expf(yi) * s : yi * (g - s);
  }
}

// Per-row loss: loss[row] = logsumexp(x[row]) - x[row][target], 0 where target == ignore_index. Also writes
// the row's logsumexp for the backward. Targets outside [0, cols) that are not ignore_index give NaN (the
// host validates targets before launching; NaN makes a missed check visible instead of reading out of range).
extern "C" __global__ void __launch_bounds__(1024) cross_entropy_f32(const float* __restrict__ x, const int* __restrict__ target,
                                             float* __restrict__ loss, float* __restrict__ lse_out, u32 rows,
                                             u32 cols, int ignore_index) {
  __shared__ float scratch[32];
  u32 row = blockIdx.x;
  if (row >= rows) return;
  const float* p = x + (u64)row * cols;
  float mx, s;
  row_max_sumexp(p, cols, scratch, &mx, &s);
  if (threadIdx.x == 0) {
    float lse = mx + logf(s);
    int t = target[row];
    lse_out[row] = lse;
    if (t == ignore_index) loss[row] = 0.0f;
    else loss[row] = (t >= 0 && (u32)t < cols) ? lse - p[t] : __int_as_float(0x7fc00000);
  }
}

// dx[row][i] = scale * (softmax(x)[i] - [i == target]); rows with ignore_index get 0. scale = dloss / count.
extern "C" __global__ void __launch_bounds__(1024) cross_entropy_bwd_f32(const float* __restrict__ x, const int* __restrict__ target,
                                                 const float* __restrict__ lse, float* __restrict__ dx, u32 rows,
                                                 u32 cols, int ignore_index, float scale) {
  u32 row = blockIdx.x;
  if (row >= rows) return;
  u64 off = (u64)row * cols;
  int t = target[row];
  float l = lse[row];
  for (u32 i = threadIdx.x; i < cols; i += blockDim.x) {
    float g = t == ignore_index ? 0.0f : scale * (expf(x[off + i] - l) - ((int)i == t ? 1.0f : 0.0f));
    dx[off + i] = g;
  }
}
