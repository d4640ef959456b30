//! CPU kernels.
pub mod gemm;
pub(crate) mod strided;
pub mod pool;
