//! CUDA backend (cargo feature `cuda`). Empty until the CUDA issue: a build without it needs no CUDA.
