// kernels/cu/dequant.cu compiled for the host; grid-stride loops, no barrier.
#include "../kernel_table.h"
#include "../../../kernels/cu/dequant.cu"

static emulator::Register registered{
    GRID_STRIDE_KERNEL(dequant_bnb4_f32),
    GRID_STRIDE_KERNEL(dequant_bnb4_dq_f32),
};
