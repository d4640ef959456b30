// kernels/cu/rope.cu compiled for the host; grid-stride loops, no barrier.
#include "../kernel_table.h"
#include "../../../kernels/cu/rope.cu"

static emulator::Register registered{
    GRID_STRIDE_KERNEL(rope_f32),
};
