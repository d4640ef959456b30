// kernels/cu/norm.cu compiled for the host; one block per row with block reductions (warp shuffles, __syncthreads).
#include "../kernel_table.h"
#include "../../../kernels/cu/norm.cu"

static emulator::Register registered{
    BLOCK_KERNEL(norm_f32),
    BLOCK_KERNEL(norm_bwd_f32),
};
