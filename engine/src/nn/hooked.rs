//! A Linear layer whose forward can be taken over by a hook: the seam through which parameter-
//! efficient methods (LoRA, 4-bit bases) change a pretrained model without the model knowing.
use super::{Linear, Module};
use crate::error::Result;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Replaces a Linear's forward. It receives the base layer so that it can compute `base(x)` itself
/// (LoRA adds to it; a quantized base computes it differently).
pub trait LinearHook: Send + Sync + std::fmt::Debug {
    fn forward(&self, base: &Linear, x: &Tensor) -> Result<Tensor>;

    /// Trainable tensors the hook owns, with names relative to the layer (e.g. `lora_A.weight`).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

#[derive(Clone, Debug)]
pub struct HookedLinear {
    pub base: Linear,
    pub hook: Option<Arc<dyn LinearHook>>,
}

impl HookedLinear {
    pub fn new(base: Linear) -> Self {
        HookedLinear { base, hook: None }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.hook {
            Some(h) => h.forward(&self.base, x),
            None => self.base.forward(x),
        }
    }
}

impl Module for HookedLinear {
    /// The base layer's parameters (`weight`, `bias`): what the model's own state dict holds. The
    /// hook's tensors are listed by `hook.named_parameters()`.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.base.named_parameters()
    }
    fn parameters_mut(&mut self) -> Vec<&mut Tensor> {
        self.base.parameters_mut()
    }
}
