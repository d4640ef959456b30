//! Neural-network layers with PyTorch's parameter names, shapes and initialisations.
//!
//! Each layer holds its parameters as tensors; trainable ones are autograd variables (made with
//! `requires_grad()`), frozen ones plain tensors. [`Module`] lists them by name, toggles training
//! and loads values from a name → tensor map (a PyTorch state dict read from disk).
pub mod dropout;
pub mod embedding;
pub mod hooked;
pub mod linear;
pub mod lstm;
pub mod norm;
pub mod residual_hook;

pub use dropout::Dropout;
pub use embedding::Embedding;
pub use hooked::{HookedLinear, LinearHook};
pub use linear::Linear;
pub use lstm::{Lstm, LstmConfig};
pub use norm::{LayerNorm, RmsNorm};
pub use residual_hook::{BlockNorm, ResidualHook, ResidualHooks, Sublayer};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Parameter bookkeeping shared by every layer.
pub trait Module {
    /// `(name, tensor)` for every parameter, trainable or not, with PyTorch's names, in PyTorch's
    /// registration order.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// The parameter handles themselves, in the order of `named_parameters`, so that they can be
    /// swapped (frozen / made trainable).
    fn parameters_mut(&mut self) -> Vec<&mut Tensor>;

    /// Every parameter, in the order of `named_parameters` (the list to give an optimizer: frozen
    /// parameters have no gradient and are skipped).
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// The parameters that gradients are computed for.
    fn trainable_parameters(&self) -> Vec<Tensor> {
        self.parameters().into_iter().filter(|t| t.is_variable()).collect()
    }

    /// Total number of parameter elements.
    fn num_parameters(&self) -> usize {
        self.named_parameters().iter().map(|(_, t)| t.numel()).sum()
    }

    /// Makes every parameter trainable (an autograd variable) or frozen (a constant). The values are
    /// shared, not copied. A parameter that changes state gets a new tensor handle (and id), so
    /// fetch `parameters()` again afterwards.
    fn set_trainable(&mut self, trainable: bool) -> Result<()> {
        for p in self.parameters_mut() {
            if trainable && !p.is_variable() {
                *p = p.requires_grad()?;
            } else if !trainable && p.tracks_grad() {
                *p = p.detach();
            }
        }
        Ok(())
    }

    /// Freezes every parameter (`set_trainable(false)`).
    fn freeze(&mut self) -> Result<()> {
        self.set_trainable(false)
    }

    /// Makes every parameter trainable (`set_trainable(true)`).
    fn unfreeze(&mut self) -> Result<()> {
        self.set_trainable(true)
    }

    /// Copies values into the parameters from `tensors` (name → tensor, any float dtype, converted
    /// to f32), in place: every handle on a parameter sees the new values. With `strict`, every
    /// parameter must be present and every entry of `tensors` must name a parameter, as PyTorch's
    /// `load_state_dict(strict=True)`. Shapes must match exactly.
    fn load_parameters(&self, tensors: &HashMap<String, Tensor>, strict: bool) -> Result<()> {
        let named = self.named_parameters();
        if strict {
            let missing: Vec<&str> =
                named.iter().filter(|(n, _)| !tensors.contains_key(n)).map(|(n, _)| n.as_str()).collect();
            let mut unexpected: Vec<&str> =
                tensors.keys().filter(|k| !named.iter().any(|(n, _)| n == *k)).map(|k| k.as_str()).collect();
            unexpected.sort_unstable();
            if !missing.is_empty() || !unexpected.is_empty() {
                return Err(Error::invalid(
                    "load_parameters",
                    format!("missing parameters {missing:?}, unexpected entries {unexpected:?}"),
                ));
            }
        }
        for (name, p) in &named {
            let Some(src) = tensors.get(name) else { continue };
            if src.shape() != p.shape() {
                return Err(Error::shape(
                    "load_parameters",
                    format!("{name}: the source has shape {:?}, the parameter {:?}", src.shape(), p.shape()),
                ));
            }
            if !src.dtype().is_float() {
                return Err(Error::DType { op: "load_parameters", expected: DType::F32, got: src.dtype() });
            }
            p.assign(&src.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }
}

/// Prepends `prefix.` to each name (for models built from several layers: `"encoder.weight"`).
pub fn prefixed(prefix: &str, params: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    params.into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)).collect()
}

/// A seed for the `k`-th random tensor of a layer built from `seed` (so that a layer's tensors are
/// independent draws while the layer stays reproducible from one number).
pub(crate) fn sub_seed(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A trainable or frozen handle on `t`, as asked.
pub(crate) fn param(t: Tensor, trainable: bool) -> Result<Tensor> {
    if trainable {
        t.requires_grad()
    } else {
        Ok(t.detach())
    }
}
