// Masked softmax of attention scores [batch, heads, q_len, k_len] in place (one block per query row):
// the non-fused attention is scores = scale * Q K^T (gemm), this kernel, then P V (gemm).
// Key j is visible to query i when key_valid[b][j] != 0 (padding mask, null = all valid) and, if causal,
// j <= i + prefix, where prefix = k_len - q_len counts the key/value prefix (cached or prefix-tuning
// positions) that every query sees. A fully masked row gets zeros, not NaN.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(1024) attention_softmax_f32(float* __restrict__ scores, const unsigned char* __restrict__ key_valid,
                                                 u32 batch, u32 heads, u32 q_len, u32 k_len, u32 causal) {
  __shared__ float scratch[32];
  u32 row = blockIdx.x;
  if (row >= batch * heads * q_len) return;
  u32 qi = row % q_len, b = row / (heads * q_len);
  u32 prefix = k_len - q_len;
  float* p = scores + (u64)row * k_len;
  const unsigned char* valid = key_valid ? key_valid + (u64)b * k_len : nullptr;
  auto visible = [&](u32 j) { return (!valid || valid[j]) && (!causal || j <= qi + prefix); };
  float mx = NEG_INF;
  for (u32 j = threadIdx.x; j < k_len; j += blockDim.x)
    if (visible(j)) mx = fmaxf(mx, p[j]);
  mx = block_max(mx, scratch);
  float s = 0.0f;
  for (u32 j = threadIdx.x; j < k_len; j += blockDim.x)
    if (visible(j)) s += expf(p[j] - mx);
  s = block_sum(s, scratch);
  float inv = s > 0.0f ? 1.0f / s : 0.0f;
  for (u32 j = threadIdx.x; j < k_len; j += blockDim.x) p[j] = visible(j) ? expf(p[j] - mx) * inv : 0.0f;
}
