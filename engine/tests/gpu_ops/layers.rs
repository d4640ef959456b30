//! Norms, RoPE, embedding/index ops, dropout and the optimizers on the GPU.
