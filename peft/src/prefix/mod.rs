//! Prefix tuning (Li & Liang 2021) and P-tuning v2 (Liu et al. 2022): trainable key/value prefixes
//! in every attention layer, as PEFT's `PREFIX_TUNING` computes them.
//!
//! - [`PrefixTuningConfig`]: PEFT's config, filled from the model (grouped-query models get
//!   prefixes of the key/value width, PEFT's rule);
//! - [`PrefixEncoder`]: the flat table or the `prefix_projection` reparameterization, reshaped to
//!   per-layer prefixes as PEFT's `get_prompt` does;
//! - [`PrefixModel`]: the base model with the prefixes on every call (KV-cache generation
//!   included), the `modules_to_save` heads, prefix dropout, PEFT's parameter counts;
//! - [`files`]: PEFT's folder both ways, plus the encoder weights beside it for exact resumption.
//!
//! P-tuning v2 is this method without projection (the default), a task-specific `num_virtual_tokens`,
//! optional `prefix_dropout`, and a freshly initialized classifier trained alongside (`SEQ_CLS` on
//! `[CLS]`, `TOKEN_CLS` on every token), which PEFT saves under `modules_to_save`.
pub mod config;
pub mod encoder;
pub mod files;
pub mod model;

pub use config::{PrefixShape, PrefixTuningConfig};
pub use encoder::PrefixEncoder;
pub use model::PrefixModel;
