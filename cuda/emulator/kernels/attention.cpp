// kernels/cu/attention.cu compiled for the host; one block per row with block reductions (warp shuffles, __syncthreads).
#include "../kernel_table.h"
#include "../../../kernels/cu/attention.cu"

static emulator::Register registered{
    BLOCK_KERNEL(attention_softmax_f32),
};
