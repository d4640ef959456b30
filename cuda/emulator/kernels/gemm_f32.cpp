// kernels/cu/gemm_f32.cu compiled for the host; block-cooperative (shared-memory tiles, __syncthreads).
#include "../kernel_table.h"
#include "../../../kernels/cu/gemm_f32.cu"

static emulator::Register registered{
    BLOCK_KERNEL(gemm_f32),
};
