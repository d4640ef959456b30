//! Optimizers, gradient clipping and learning-rate schedules, with PyTorch's semantics.
//!
//! Optimizers update parameter tensors in place (every handle on the same storage sees the new
//! values) from the gradients that `backward()` returned. Their per-parameter state is keyed by the
//! parameter's *position* in the list passed to `step`, as PyTorch's `state_dict` does, so it can be
//! exported and loaded into a fresh process whose tensors have different ids: pass the same list, in
//! the same order, at every step. Parameters without a gradient are skipped and their state is left
//! untouched (frozen parameters may stay in the list).
//!
//! A parameter on a GPU is updated there (`cuda.rs`), from a gradient on the same GPU, and its state
//! lives on that GPU; exporting the state (`state`, `state_tensors`) downloads it.
pub mod adamw;
pub mod clip;
#[cfg(feature = "cuda")]
mod cuda;
pub mod schedule;
pub mod sgd;

pub use adamw::{AdamW, AdamWParamState, AdamWState};
pub use clip::{clip_grad_norm, grad_norm};
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdState};

use crate::autograd::Grads;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::Device;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// One per-parameter state buffer (a moment, a momentum buffer), kept on the parameter's device.
#[derive(Clone, Debug)]
pub(crate) enum Moment {
    Host(Vec<f32>),
    /// On GPU `ordinal`; clones of an optimizer share it until one of them writes (copy on write).
    #[cfg(feature = "cuda")]
    Gpu {
        ordinal: u32,
        buf: cuda::DeviceBuf,
    },
}

impl Moment {
    /// `n` zeros on `device`.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))] // `op` names GPU errors only
    pub(crate) fn zeros(op: &'static str, device: Device, n: usize) -> Result<Moment> {
        match device {
            Device::Cpu => Ok(Moment::Host(vec![0.0; n])),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => Ok(Moment::Gpu { ordinal, buf: cuda::zeros(op, ordinal, n)? }),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Moment::Host(v) => v.len(),
            #[cfg(feature = "cuda")]
            Moment::Gpu { buf, .. } => buf.len(),
        }
    }

    /// The values on the host (a download for a GPU buffer).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))] // `op` names GPU errors only
    pub(crate) fn to_host(&self, op: &'static str) -> Result<Vec<f32>> {
        match self {
            Moment::Host(v) => Ok(v.clone()),
            #[cfg(feature = "cuda")]
            Moment::Gpu { ordinal, buf } => cuda::download(op, *ordinal, buf),
        }
    }

    /// Moves the buffer to `device` if it is elsewhere (a parameter that moved, a loaded state).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))] // `op` names GPU errors only
    pub(crate) fn move_to(&mut self, op: &'static str, device: Device) -> Result<()> {
        match (&*self, device) {
            (Moment::Host(_), Device::Cpu) => Ok(()),
            #[cfg(feature = "cuda")]
            (Moment::Gpu { ordinal, .. }, Device::Cuda(o)) if *ordinal == o => Ok(()),
            #[cfg(feature = "cuda")]
            (_, Device::Cuda(o)) => {
                let v = self.to_host(op)?;
                *self = Moment::Gpu { ordinal: o, buf: cuda::upload(op, o, &v)? };
                Ok(())
            }
            #[cfg(feature = "cuda")]
            (Moment::Gpu { .. }, Device::Cpu) => {
                *self = Moment::Host(self.to_host(op)?);
                Ok(())
            }
        }
    }

    /// The host values for writing; fails if the buffer is on a GPU (call `move_to` first).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))] // `op` names GPU errors only
    pub(crate) fn host_mut(&mut self, op: &'static str) -> Result<&mut Vec<f32>> {
        match self {
            Moment::Host(v) => Ok(v),
            #[cfg(feature = "cuda")]
            Moment::Gpu { ordinal, .. } => {
                Err(Error::invalid(op, format!("optimizer state is on cuda:{ordinal}, the parameter on the host")))
            }
        }
    }
}

/// What every optimizer offers a training loop.
pub trait Optimizer {
    /// One update of `params` from `grads`.
    fn step(&mut self, params: &[Tensor], grads: &Grads) -> Result<()>;
    /// The current learning rate.
    fn lr(&self) -> f32;
    /// Sets the learning rate (what an LR schedule does before each step).
    fn set_lr(&mut self, lr: f32);
}

/// Parameters with more elements than this are updated in parallel chunks.
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;
/// Chunk size of the parallel update (a multiple of the SIMD width, so chunk boundaries never change
/// which elements are computed together; the result does not depend on the thread count).
pub(crate) const PAR_CHUNK: usize = 1 << 13;

/// Runs `f(param, grad)` on the elements of a parameter and its gradient, after checking that both
/// are f32 of the same shape and that the parameter is contiguous. A gradient that shares storage
/// with the parameter is copied first (the write lock on the parameter would otherwise deadlock).
/// A trainable parameter is f32 and its gradient has its shape (either device).
pub(crate) fn check_param_and_grad(op: &'static str, index: usize, param: &Tensor, grad: &Tensor) -> Result<()> {
    if param.dtype() != DType::F32 {
        return Err(Error::invalid(
            op,
            format!("parameter {index} has dtype {:?}; only f32 parameters can be trained", param.dtype()),
        ));
    }
    if grad.shape() != param.shape() {
        return Err(Error::shape(
            op,
            format!("gradient of parameter {index} has shape {:?}, the parameter {:?}", grad.shape(), param.shape()),
        ));
    }
    Ok(())
}

pub(crate) fn with_param_and_grad(
    op: &'static str,
    index: usize,
    param: &Tensor,
    grad: &Tensor,
    f: impl FnOnce(&mut [f32], &[f32]),
) -> Result<()> {
    check_param_and_grad(op, index, param, grad)?;
    if !param.is_contiguous() {
        return Err(Error::invalid(
            op,
            format!("parameter {index} (shape {:?}) is a non-contiguous view; optimizers update contiguous tensors in place", param.shape()),
        ));
    }
    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
    if grad.same_storage(param) {
        let g = grad.to_vec::<f32>()?;
        return param.update_in_place::<f32>(|p| f(p, &g));
    }
    let g = grad.read::<f32>(op)?;
    param.update_in_place::<f32>(|p| f(p, &g))
}

/// Checks that a state buffer saved for parameter `index` still fits it.
pub(crate) fn check_state_len(op: &'static str, index: usize, param: &Tensor, len: usize) -> Result<()> {
    if len != param.numel() {
        return Err(Error::shape(
            op,
            format!(
                "state of parameter {index} holds {len} elements but the parameter has shape {:?} ({} elements); \
                 pass the same parameter list, in the same order, at every step",
                param.shape(),
                param.numel()
            ),
        ));
    }
    Ok(())
}

/// One parallel work item: matching chunks of a parameter, its gradient and its state buffers.
type Chunk<'a, const N: usize> = (&'a mut [f32], &'a [f32], [&'a mut [f32]; N]);

/// Applies `f` over matching chunks of a parameter, its gradient and `N` state buffers of the same
/// length, in parallel when they are large. Each element is computed by the same scalar code however
/// the chunks fall, so the result does not depend on the thread count.
pub(crate) fn for_chunks<const N: usize>(
    p: &mut [f32],
    g: &[f32],
    state: [&mut [f32]; N],
    f: impl Fn(&mut [f32], &[f32], [&mut [f32]; N]) + Sync + Send,
) {
    debug_assert!(state.iter().all(|s| s.len() == p.len()) && g.len() == p.len());
    if p.len() <= PAR_THRESHOLD {
        f(p, g, state);
        return;
    }
    // Split every buffer at the same chunk boundaries, then hand each chunk group to a task.
    let mut rest: [&mut [f32]; N] = state;
    let mut groups: Vec<Chunk<'_, N>> = Vec::new();
    let (mut pr, mut gr) = (p, g);
    while !pr.is_empty() {
        let n = PAR_CHUNK.min(pr.len());
        let (ph, pt) = pr.split_at_mut(n);
        let (gh, gt) = gr.split_at(n);
        let mut heads: [&mut [f32]; N] = std::array::from_fn(|_| <&mut [f32]>::default());
        for (h, r) in heads.iter_mut().zip(rest.iter_mut()) {
            let (a, b) = std::mem::take(r).split_at_mut(n);
            *h = a;
            *r = b;
        }
        groups.push((ph, gh, heads));
        pr = pt;
        gr = gt;
    }
    groups.into_par_iter().for_each(|(p, g, s)| f(p, g, s));
}
