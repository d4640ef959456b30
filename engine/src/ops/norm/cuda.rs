//! LayerNorm and RMSNorm on the GPU through `cuda::ops::Norm`: the forward saves each row's mean
//! (LayerNorm only) and 1/std on the device, the backward gives dx and accumulates dw/db into zeros.
use crate::error::{Error, Result};
use crate::gpu::{dense_f32, with_device};
use crate::tensor::Tensor;
use std::sync::Arc;

/// What the GPU forward keeps for the backward.
pub(crate) struct Saved {
    mean: Option<Arc<cuda::Buffer<f32>>>,
    rstd: Arc<cuda::Buffer<f32>>,
}

/// The tensors a norm reads: x `[rows, cols]` row-major, and the optional weight and bias `[cols]`.
pub(crate) struct Inputs<'a> {
    pub(crate) x: &'a Tensor,
    pub(crate) w: Option<&'a Tensor>,
    pub(crate) b: Option<&'a Tensor>,
    pub(crate) cols: usize,
    pub(crate) eps: f32,
    pub(crate) centered: bool,
}

fn buffers(op: &'static str, ordinal: u32, t: Option<&Tensor>) -> Result<Option<Arc<cuda::Buffer<f32>>>> {
    t.map(|t| dense_f32(op, ordinal, t)).transpose()
}

/// y (shape of x) and the saved row statistics.
pub(crate) fn forward(op: &'static str, ordinal: u32, i: &Inputs) -> Result<(Tensor, Saved)> {
    let rows = i.x.numel().checked_div(i.cols).unwrap_or(0);
    let (x, w, b) = (dense_f32(op, ordinal, i.x)?, buffers(op, ordinal, i.w)?, buffers(op, ordinal, i.b)?);
    let (y, mean, rstd) = with_device(op, ordinal, |d| {
        let mut y = d.alloc::<f32>(i.x.numel())?;
        let mut mean = if i.centered { Some(d.alloc::<f32>(rows)?) } else { None };
        let mut rstd = d.alloc::<f32>(rows)?;
        if rows > 0 {
            let norm = launcher(rows, i.cols, i.eps, i.centered, w.as_deref(), b.as_deref());
            norm.forward(d, &x, &mut y, mean.as_mut(), &mut rstd)?;
        }
        Ok((y, mean, rstd))
    })?;
    let saved = Saved { mean: mean.map(Arc::new), rstd: Arc::new(rstd) };
    Ok((Tensor::from_gpu(y, ordinal, i.x.shape(), None), saved))
}

fn launcher<'a>(
    rows: usize,
    cols: usize,
    eps: f32,
    centered: bool,
    weight: Option<&'a cuda::Buffer<f32>>,
    bias: Option<&'a cuda::Buffer<f32>>,
) -> cuda::ops::Norm<'a> {
    cuda::ops::Norm { rows, cols, eps, rms: !centered, weight, bias }
}

/// dx (shape of x), and dw / db (`[cols]`) when `want_w` / `want_b`.
pub(crate) fn backward(
    op: &'static str,
    ordinal: u32,
    i: &Inputs,
    saved: &Saved,
    g: &Tensor,
    want_w: bool,
    want_b: bool,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    if g.shape() != i.x.shape() {
        return Err(Error::shape(op, format!("gradient {:?} for an output of {:?}", g.shape(), i.x.shape())));
    }
    let rows = i.x.numel().checked_div(i.cols).unwrap_or(0);
    let (x, w, gb) = (dense_f32(op, ordinal, i.x)?, buffers(op, ordinal, i.w)?, dense_f32(op, ordinal, g)?);
    let (dx, dw, db) = with_device(op, ordinal, |d| {
        let mut dx = d.alloc::<f32>(i.x.numel())?;
        let mut dw = if want_w { Some(d.zeros::<f32>(i.cols)?) } else { None };
        let mut db = if want_b { Some(d.zeros::<f32>(i.cols)?) } else { None };
        if rows > 0 {
            // The kernel's bias is only read by the forward.
            let norm = launcher(rows, i.cols, i.eps, i.centered, w.as_deref(), None);
            norm.backward(d, &x, saved.mean.as_deref(), &saved.rstd, &gb, &mut dx, dw.as_mut(), db.as_mut())?;
        }
        Ok((dx, dw, db))
    })?;
    let param = |b: Option<cuda::Buffer<f32>>| b.map(|b| Tensor::from_gpu(b, ordinal, &[i.cols], None));
    Ok((Tensor::from_gpu(dx, ordinal, i.x.shape(), None), param(dw), param(db)))
}
