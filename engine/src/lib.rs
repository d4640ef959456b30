//! The tensor engine: tensors (storage + layout), define-by-run autograd, a small closed set of ops
//! with hand-written backward passes, a SIMD + rayon CPU backend, nn layers and optimizers.
pub mod autocast;
pub mod autograd;
pub mod cpu;
pub mod dtype;
pub mod error;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod gradcheck;
pub mod io;
pub mod layout;
pub mod models;
pub mod nn;
mod ops;
pub mod optim;
pub mod quant;
pub mod random;
pub mod storage;
pub mod tensor;

pub use autocast::{autocast, autocast_dtype, AutocastGuard};
pub use autograd::{no_grad, no_grad_scope, Grads};
#[cfg(feature = "cuda")]
pub use cuda;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use layout::Layout;
pub use ops::attention::{scaled_dot_product_attention, AttentionMask};
pub use ops::lora::{lora_linear, lora_linear_packed};
pub use ops::quant_matmul::packed_linear;
pub use ops::rope::rope_tables;
pub use storage::Device;
pub use tensor::{Tensor, TensorId};
