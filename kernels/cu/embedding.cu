// Embedding gather (forward) and scatter-add (backward) of rows of a [vocab, dim] f32 table.
// Ids are validated on the host; an id out of range here writes NaN / is skipped rather than touching
// memory outside the table.
#include "common.cuh"

extern "C" __global__ void embedding_f32(const u32* __restrict__ ids, const float* __restrict__ table,
                                         float* __restrict__ out, u32 n, u32 dim, u32 vocab) {
  u64 total = (u64)n * dim;
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
    u32 id = ids[i / dim];
    out[i] = id < vocab ? table[(u64)id * dim + i % dim] : __int_as_float(0x7fc00000);
  }
}

extern "C" __global__ void embedding_bwd_f32(const u32* __restrict__ ids, const float* __restrict__ dout,
                                             float* __restrict__ dtable, u32 n, u32 dim, u32 vocab) {
  u64 total = (u64)n * dim;
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
    u32 id = ids[i / dim];
    if (id < vocab) atomicAdd(&dtable[(u64)id * dim + i % dim], dout[i]);
  }
}
