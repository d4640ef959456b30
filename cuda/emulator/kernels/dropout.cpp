// kernels/cu/dropout.cu compiled for the host; grid-stride loops, no barrier.
#include "../kernel_table.h"
#include "../../../kernels/cu/dropout.cu"

static emulator::Register registered{
    GRID_STRIDE_KERNEL(dropout_f32),
};
