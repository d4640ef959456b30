// kernels/cu/gemm_mma.cu compiled for the host; block-cooperative (shared-memory tiles, __syncthreads, warp-wide mma.sync).
#include "../kernel_table.h"
#include "../../../kernels/cu/gemm_mma.cu"

static emulator::Register registered{
    BLOCK_KERNEL(gemm_bf16),
    BLOCK_KERNEL(gemm_f16),
};
