// kernels/cu/optim.cu compiled for the host; grid-stride loops, no barrier.
#include "../kernel_table.h"
#include "../../../kernels/cu/optim.cu"

static emulator::Register registered{
    GRID_STRIDE_KERNEL(adamw_f32),
    GRID_STRIDE_KERNEL(sgd_f32),
};
