//! CPU kernels.
pub mod gemm;
