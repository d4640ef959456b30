//! matmul (batched, transposed views), the fused LoRA linear and attention on the GPU.
