//! Gradient clipping by global L2 norm, as `torch.nn.utils.clip_grad_norm_`.
use crate::autograd::{no_grad, Grads};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorId};
use std::collections::HashSet;

/// The gradients of `params` that exist in `grads`, each parameter once.
fn present<'a>(grads: &'a Grads, params: &'a [Tensor]) -> impl Iterator<Item = (&'a Tensor, &'a Tensor)> {
    let mut seen: HashSet<TensorId> = HashSet::new();
    params.iter().filter(move |p| seen.insert(p.id())).filter_map(move |p| grads.get(p).map(|g| (p, g)))
}

/// The global L2 norm of the gradients of `params` (those that have one), accumulated in f64. A
/// gradient on a GPU is summed there in f32 (squares, then sums of rows of 1024) and only its sum
/// of squares comes back, so the norm can differ from the host's in the last bits.
pub fn grad_norm(grads: &Grads, params: &[Tensor]) -> Result<f32> {
    const OP: &str = "grad_norm";
    let mut total = 0.0f64;
    for (_, g) in present(grads, params) {
        let g = g.to_dtype(DType::F32)?;
        #[cfg(feature = "cuda")]
        if let crate::storage::Device::Cuda(o) = g.device() {
            total += super::cuda::sum_squares(OP, o, &g)?;
            continue;
        }
        let g = g.contiguous()?;
        let v = g.read::<f32>(OP)?;
        total += v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
    }
    Ok(total.sqrt() as f32)
}

/// Scales the gradients of `params` so that their global L2 norm is at most `max_norm`, like
/// `torch.nn.utils.clip_grad_norm_`: with `norm` the total norm, every gradient is multiplied by
/// `max_norm / (norm + 1e-6)` when that factor is below 1. Returns the norm before clipping.
///
/// Gradients are replaced by scaled copies, never modified in place (two parameters may share one
/// gradient tensor). A non-finite norm is returned as is and leaves the gradients untouched, so the
/// caller can skip the step (PyTorch would turn every gradient into NaN).
pub fn clip_grad_norm(grads: &mut Grads, params: &[Tensor], max_norm: f32) -> Result<f32> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::invalid("clip_grad_norm", format!("max_norm must be >= 0, got {max_norm}")));
    }
    let norm = grad_norm(grads, params)?;
    if !norm.is_finite() {
        return Ok(norm);
    }
    let coef = (max_norm as f64 / (norm as f64 + 1e-6)) as f32;
    if coef < 1.0 {
        let _g = no_grad();
        let scaled: Vec<(Tensor, Tensor)> =
            present(grads, params).map(|(p, g)| Ok((p.clone(), g.mul_scalar(coef)?))).collect::<Result<_>>()?;
        for (p, g) in scaled {
            grads.insert(&p, g);
        }
    }
    Ok(norm)
}
