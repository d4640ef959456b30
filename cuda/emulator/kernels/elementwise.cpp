// kernels/cu/elementwise.cu compiled for the host; grid-stride loops, no barrier.
#include "../kernel_table.h"
#include "../../../kernels/cu/elementwise.cu"

static emulator::Register registered{
    GRID_STRIDE_KERNEL(unary_f32),
    GRID_STRIDE_KERNEL(binary_f32),
    GRID_STRIDE_KERNEL(accumulate_f32),
    GRID_STRIDE_KERNEL(fill_f32),
};
