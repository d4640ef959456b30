//! The op set. Each family keeps its forward, backward and CPU kernel together: a file, or a folder
//! with `mod.rs` (forward + backward) and `cpu.rs` (kernels).
pub(crate) mod binary;
pub(crate) mod compare;
pub(crate) mod copy;
pub(crate) mod matmul;
pub(crate) mod reduce;
pub(crate) mod unary;
pub(crate) mod view;
