// kernels/cu/softmax.cu compiled for the host; one block per row with block reductions (warp shuffles, __syncthreads).
#include "../kernel_table.h"
#include "../../../kernels/cu/softmax.cu"

static emulator::Register registered{
    BLOCK_KERNEL(softmax_f32),
    BLOCK_KERNEL(softmax_bwd_f32),
    BLOCK_KERNEL(cross_entropy_f32),
    BLOCK_KERNEL(cross_entropy_bwd_f32),
};
