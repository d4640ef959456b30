//! Whole models on the GPU: forward and a LoRA training step against the host.
