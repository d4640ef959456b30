//! Parameter-efficient fine-tuning on the engine: PEFT-compatible configs and adapter files, the
//! injection machinery, and the methods (LoRA so far).
pub mod bottleneck;
pub mod config;
pub mod eval;
pub mod lora;
pub mod loss;
pub mod method;
pub mod peft_model;
pub mod prefix;
pub mod prompt;
pub mod targets;
pub mod train;

pub use config::{LoraConfig, TargetModules};
pub use engine;
pub use method::AdapterModel;
pub use peft_model::PeftModel;
