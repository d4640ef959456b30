//! CPU kernels.
pub mod gemm;
pub mod pool;
pub(crate) mod strided;
