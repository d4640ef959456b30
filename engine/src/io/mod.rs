//! Reading and writing model files.
pub mod safetensors;

pub use safetensors::{save_safetensors, SafeTensors, WeightFiles};
