// Strided, batched GEMM arguments shared by the SIMT and tensor-core kernels:
//   C[z][m][n] = alpha * sum_k A[z][m][k] * B[z][k][n] + beta * C[z][m][n]
// A's element (m, k) of batch z sits at a[z * a_batch + m * a_m + k * a_k]; a transposed operand is just
// swapped strides. C is row-major with row stride c_m. beta == 0 never reads C (it may be uninitialised).
#pragma once
#include "common.cuh"

#define GEMM_PARAMS(T)                                                                                        \
  const T *__restrict__ a, const T *__restrict__ b, float *__restrict__ c, u32 m, u32 n, u32 k, i64 a_m, i64 a_k, \
      i64 b_k, i64 b_n, i64 c_m, i64 a_batch, i64 b_batch, i64 c_batch, float alpha, float beta

__device__ __forceinline__ void gemm_store(float* c, u32 m, u32 n, i64 c_m, u32 row, u32 col, float acc, float alpha,
                                           float beta) {
  if (row < m && col < n) {
    float* p = c + (i64)row * c_m + col;
    *p = beta == 0.0f ? alpha * acc : alpha * acc + beta * *p;
  }
}
