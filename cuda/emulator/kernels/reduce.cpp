// kernels/cu/reduce.cu compiled for the host: reduce_last_f32 is one block per row (block reduction),
// reduce_mid_f32 a grid-stride loop.
#include "../kernel_table.h"
#include "../../../kernels/cu/reduce.cu"

static emulator::Register registered{
    BLOCK_KERNEL(reduce_last_f32),
    GRID_STRIDE_KERNEL(reduce_mid_f32),
};
