//! Parameter-efficient fine-tuning on the engine. The methods arrive with their issues; this crate
//! exists so the workspace has its final shape.
pub use engine;
