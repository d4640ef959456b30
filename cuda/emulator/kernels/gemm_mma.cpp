// kernels/cu/gemm_mma.cu compiled for the host; block-cooperative (shared-memory tiles, __syncthreads, warp-wide mma.sync and ldmatrix, cp.async).
#include "../kernel_table.h"
#include "../../../kernels/cu/gemm_mma.cu"

static emulator::Register registered{
    BLOCK_KERNEL(gemm_bf16),
    BLOCK_KERNEL(gemm_f16),
    BLOCK_KERNEL(gemm_bf16_fast),
    BLOCK_KERNEL(gemm_f16_fast),
};
