// kernels/cu/embedding.cu compiled for the host; grid-stride loops, no barrier.
#include "../kernel_table.h"
#include "../../../kernels/cu/embedding.cu"

static emulator::Register registered{
    GRID_STRIDE_KERNEL(embedding_f32),
    GRID_STRIDE_KERNEL(embedding_bwd_f32),
};
