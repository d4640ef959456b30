//! Optimizer steps, their state and gradient norms on the GPU: parameters are updated in place
//! (`update_gpu_f32`) by the `adamw` / `sgd` launchers from gradients on the same device; state
//! buffers live on the parameter's device, copied on write when a cloned optimizer shares them.
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::dense_f32;
use crate::gpu::{strides_of, update_gpu_f32, with_device, Strided};
use crate::storage::common_device;
use crate::tensor::Tensor;
use cuda::kernels::ops::{Reduce, Unary};
use std::sync::Arc;

/// A state buffer on GPU `ordinal`.
pub(crate) type DeviceBuf = Arc<cuda::Buffer<f32>>;

pub(crate) fn zeros(op: &'static str, ordinal: u32, n: usize) -> Result<DeviceBuf> {
    Ok(Arc::new(with_device(op, ordinal, |d| d.zeros::<f32>(n))?))
}

pub(crate) fn upload(op: &'static str, ordinal: u32, v: &[f32]) -> Result<DeviceBuf> {
    Ok(Arc::new(with_device(op, ordinal, |d| d.upload(v))?))
}

pub(crate) fn download(op: &'static str, ordinal: u32, b: &cuda::Buffer<f32>) -> Result<Vec<f32>> {
    with_device(op, ordinal, |d| d.download(b))
}

/// `b` for writing: a private copy first when another optimizer clone still shares it.
fn unique<'a>(op: &'static str, ordinal: u32, b: &'a mut DeviceBuf) -> Result<&'a mut cuda::Buffer<f32>> {
    if Arc::get_mut(b).is_none() {
        *b = Arc::new(with_device(op, ordinal, |d| d.duplicate(b))?);
    }
    Arc::get_mut(b).ok_or_else(|| Error::invalid(op, "a fresh copy of the optimizer state is still shared"))
}

/// Runs `f(device, param, grad)` on GPU `ordinal` after the checks the host path makes (f32
/// parameter, gradient of its shape, contiguous), plus: the gradient is on the same GPU, and the
/// parameter is its storage's whole buffer (the launchers update whole buffers).
fn with_param_and_grad(
    op: &'static str,
    index: usize,
    ordinal: u32,
    param: &Tensor,
    grad: &Tensor,
    f: impl FnOnce(&cuda::Device, &mut cuda::Buffer<f32>, &cuda::Buffer<f32>) -> cuda::Result<()>,
) -> Result<()> {
    super::check_param_and_grad(op, index, param, grad)?;
    common_device(op, &[param, grad])?;
    let n = param.numel();
    if !param.is_contiguous() || param.layout().offset() != 0 || param.gpu_f32(op)?.len() != n {
        return Err(Error::invalid(
            op,
            format!(
                "parameter {index} (shape {:?}) is a view into a larger GPU buffer; optimizers on the GPU update whole buffers",
                param.shape()
            ),
        ));
    }
    let g = grad.to_dtype(DType::F32)?;
    let mut gb = dense_f32(op, ordinal, &g)?;
    if g.same_storage(param) {
        // The parameter's buffer is about to be written: the gradient must not be that buffer.
        gb = Arc::new(with_device(op, ordinal, |d| d.duplicate(&gb))?);
    }
    update_gpu_f32(param, op, |o, p| with_device(op, o, |d| f(d, p, &gb)))
}

/// One AdamW update of parameter `index` (step `h.step`, 1-based) with its moments `m`, `v`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adamw_step(
    op: &'static str,
    index: usize,
    ordinal: u32,
    param: &Tensor,
    grad: &Tensor,
    m: &mut DeviceBuf,
    v: &mut DeviceBuf,
    h: &cuda::ops::AdamW,
) -> Result<()> {
    let (m, v) = (unique(op, ordinal, m)?, unique(op, ordinal, v)?);
    with_param_and_grad(op, index, ordinal, param, grad, |d, p, g| cuda::ops::adamw(d, p, g, m, v, h))
}

/// SGD's hyper-parameters for one parameter's update.
pub(crate) struct SgdStep {
    pub(crate) lr: f32,
    pub(crate) momentum: f32,
    pub(crate) dampening: f32,
    pub(crate) weight_decay: f32,
    pub(crate) nesterov: bool,
    /// The momentum buffer is new (it becomes the first direction, undamped).
    pub(crate) first: bool,
}

/// One SGD update of parameter `index`; `buf` is its momentum buffer (`None` without momentum).
/// The kernel knows plain momentum only: dampening runs it on `(1 − dampening)·g` with weight decay
/// `(1 − dampening)·wd`, whose direction is `(1 − dampening)·d`; Nesterov runs it three times (the
/// buffer update at lr 0, then `p −= lr·d`, then `p −= lr·momentum·buf`).
pub(crate) fn sgd_step(
    op: &'static str,
    index: usize,
    ordinal: u32,
    param: &Tensor,
    grad: &Tensor,
    buf: Option<&mut DeviceBuf>,
    h: &SgdStep,
) -> Result<()> {
    let buf = buf.map(|b| unique(op, ordinal, b)).transpose()?;
    with_param_and_grad(op, index, ordinal, param, grad, |d, p, g| {
        let Some(b) = buf else {
            return cuda::ops::sgd(d, p, g, None, h.lr, 0.0, h.weight_decay, false);
        };
        let damp1 = 1.0 - h.dampening;
        let scaled;
        let (gd, wd) = if !h.first && damp1 != 1.0 {
            let mut s = d.alloc::<f32>(g.len())?;
            cuda::ops::unary(d, Strided::new(g, &[1]), &mut s, &[g.len()], Unary::Scale, damp1)?;
            scaled = s;
            (&scaled, h.weight_decay * damp1)
        } else {
            (g, h.weight_decay)
        };
        if !h.nesterov {
            return cuda::ops::sgd(d, p, gd, Some(b), h.lr, h.momentum, wd, h.first);
        }
        cuda::ops::sgd(d, p, gd, Some(&mut *b), 0.0, h.momentum, wd, h.first)?;
        cuda::ops::sgd(d, p, g, None, h.lr, 0.0, h.weight_decay, false)?;
        cuda::ops::sgd(d, p, b, None, h.lr * h.momentum, 0.0, 0.0, false)
    })
}

/// Σ g² of an f32 tensor on GPU `ordinal` (any layout): squares into a buffer padded with zeros to
/// whole rows of `ROW`, row sums, then the sum of those; one scalar comes back.
pub(crate) fn sum_squares(op: &'static str, ordinal: u32, g: &Tensor) -> Result<f64> {
    const ROW: usize = 1024;
    let n = g.numel();
    if n == 0 {
        return Ok(0.0);
    }
    let gb = g.gpu_f32(op)?;
    let strides = strides_of(g.layout());
    let rows = n.div_ceil(ROW);
    let total = with_device(op, ordinal, |d| {
        let mut sq = d.zeros::<f32>(rows * ROW)?;
        let x = Strided { buf: &gb, offset: g.layout().offset(), strides: &strides };
        cuda::ops::unary(d, x, &mut sq, g.shape(), Unary::Square, 0.0)?;
        let mut partial = d.alloc::<f32>(rows)?;
        cuda::ops::reduce(d, &sq, &mut partial, rows, ROW, 1, Reduce::Sum)?;
        let mut total = d.alloc::<f32>(1)?;
        cuda::ops::reduce(d, &partial, &mut total, 1, rows, 1, Reduce::Sum)?;
        d.download(&total)
    })?;
    total.first().map(|&s| f64::from(s)).ok_or_else(|| Error::invalid(op, "the GPU sum came back empty"))
}
