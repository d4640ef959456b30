//! Reading and writing model files.
pub mod gguf;
pub mod safetensors;

pub use safetensors::{save_safetensors, SafeTensors, WeightFiles};
