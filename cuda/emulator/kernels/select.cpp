// kernels/cu/select.cu compiled for the host; grid-stride loops, no barrier.
#include "../kernel_table.h"
#include "../../../kernels/cu/select.cu"

static emulator::Register registered{
    GRID_STRIDE_KERNEL(copy_strided_f32),
    GRID_STRIDE_KERNEL(where_f32),
    GRID_STRIDE_KERNEL(compare_f32),
    GRID_STRIDE_KERNEL(cast_u8_f32),
    GRID_STRIDE_KERNEL(cast_f32_u8),
};
