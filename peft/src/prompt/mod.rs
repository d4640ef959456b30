//! Soft prompts: prompt tuning (Lester et al. 2021) and P-tuning (Liu et al. 2021), in PEFT's
//! configs and files. See [`PromptModel`] for how the prompt enters the model.
pub mod config;
pub mod encoder;
pub mod model;
pub mod template;

pub use config::{PromptConfig, PromptEncoderConfig, PromptTuningConfig};
pub use model::{PromptModel, ENCODER_FILE};
