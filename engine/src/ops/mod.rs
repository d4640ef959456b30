//! The op set. Each family keeps its forward, backward and CPU kernel together: a file, or a folder
//! with `mod.rs` (forward + backward) and `cpu.rs` (kernels).
pub(crate) mod attention;
pub(crate) mod binary;
pub(crate) mod compare;
pub(crate) mod concat;
pub(crate) mod copy;
pub(crate) mod dropout;
pub(crate) mod index;
pub(crate) mod lora;
pub(crate) mod loss;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod quant_matmul;
pub(crate) mod reduce;
pub(crate) mod rope;
pub(crate) mod softmax;
pub(crate) mod unary;
pub(crate) mod view;
pub(crate) mod where_cond;
