// kernels/cu/cast.cu compiled for the host; grid-stride loops, no barrier.
#include "../kernel_table.h"
#include "../../../kernels/cu/cast.cu"

static emulator::Register registered{
    GRID_STRIDE_KERNEL(cast_f32_bf16),
    GRID_STRIDE_KERNEL(cast_bf16_f32),
    GRID_STRIDE_KERNEL(cast_f32_f16),
    GRID_STRIDE_KERNEL(cast_f16_f32),
};
