//! CUDA backend: launches the PTX of the `kernels` crate through the CUDA driver API.
//!
//! Without the `driver` feature this crate holds only host-side logic (argument packing checked against
//! the kernel signature table, launch geometry, operand bounds checks) and needs no CUDA. With it,
//! [`Device`] opens a GPU; on a machine without a driver or GPU, [`Device::new`] returns an error.
//! `cust` (the driver API binding) is used only in `driver.rs`, so the binding can be swapped there.

pub mod args;
mod error;
pub mod geometry;

#[cfg(feature = "driver")]
mod driver;
#[cfg(feature = "driver")]
pub mod ops;

pub use args::Arg;
pub use error::{Error, Result};
pub use geometry::GemmShape;
/// The kernel tables and op codes the launchers take (e.g. `cuda::kernels::ops::Unary`).
pub use kernels;

#[cfg(feature = "driver")]
pub use driver::{Buffer, Device, Element};
