//! CUDA C sources (`kernels/cu/`) and the PTX generated from them (`kernels/ptx/`, committed; see
//! `kernels/README.md` for the pinned generator), plus what a launcher needs to call them correctly:
//! each kernel's parameter list ([`signatures`]), the op codes some kernels take ([`ops`]) and the
//! by-value [`Layout`] struct. No CUDA is needed to build or test this crate.

pub mod layout;
pub mod module;
pub mod ops;
pub mod philox;
pub mod ptx;
pub mod signatures;

#[cfg(test)]
mod mma_layout;

pub use layout::{Layout, MAX_DIMS};
pub use module::Module;
pub use signatures::{Kernel, Param};
