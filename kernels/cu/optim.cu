// Optimizer updates on contiguous f32 parameters, one thread per element (grid-stride).
#include "common.cuh"

// AdamW (decoupled weight decay, as torch.optim.AdamW): p -= lr * wd * p; m = b1 m + (1-b1) g;
// v = b2 v + (1-b2) g^2; p -= lr * (m / bc1) / (sqrt(v / bc2) + eps), bc1 = 1 - b1^t, bc2 = 1 - b2^t
// computed on the host in f64.
extern "C" __global__ void adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                     float* __restrict__ v, u64 n, float lr, float beta1, float beta2, float eps,
                                     float weight_decay, float bc1, float bc2) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    float gi = g[i], pi = p[i] * (1.0f - lr * weight_decay);
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
  }
}

// SGD with momentum and (coupled, as torch.optim.SGD) weight decay: g' = g + wd p; buf = mu buf + g'
// (buf = g' on the first step: first != 0); p -= lr * buf. momentum == 0 ignores buf (may be null).
extern "C" __global__ void sgd_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ buf, u64 n,
                                   float lr, float momentum, float weight_decay, u32 first) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    float d = g[i] + weight_decay * p[i];
    if (momentum != 0.0f) {
      d = first ? d : momentum * buf[i] + d;
      buf[i] = d;
    }
    p[i] -= lr * d;
  }
}
