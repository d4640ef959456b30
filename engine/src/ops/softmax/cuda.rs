//! Softmax and log-softmax over the last dim of a contiguous `[rows, n]` tensor on the GPU, and
//! their backward, one row per block.
//!
//! The kernel turns a row of only -inf into NaN (exp(-inf − -inf)); `mask_empty_rows` then writes
//! what the host gives there (0, or -inf for log-softmax). A row of only -inf and NaN gives 0 / -inf
//! here but NaN on the host.
use crate::error::Result;
use crate::gpu::dense_f32;
use crate::gpu::Strided;
use crate::tensor::Tensor;
use cuda::kernels::ops::{Binary, Reduce, Unary};
use cuda::{Buffer, Device};

/// `y` with the rows whose input maximum is -inf replaced by 0 (softmax) or -inf (log-softmax).
fn mask_empty_rows(
    d: &Device,
    x: &Buffer<f32>,
    y: Buffer<f32>,
    rows: usize,
    n: usize,
    log: bool,
) -> cuda::Result<Buffer<f32>> {
    let (one_per_row, full, per_row) = ([rows], [n as isize, 1], [1isize, 0]);
    let mut m = d.alloc::<f32>(rows)?;
    cuda::ops::reduce(d, x, &mut m, rows, n, 1, Reduce::Max)?;
    // m + inf is inf (> 0) unless m is -inf (NaN).
    let mut shifted = d.alloc::<f32>(rows)?;
    cuda::ops::unary(d, Strided::new(&m, &[1]), &mut shifted, &one_per_row, Unary::AddScalar, f32::INFINITY)?;
    let one = d.upload(&[1.0f32])?;
    let mut keep = d.alloc::<f32>(rows)?;
    cuda::ops::binary(
        d,
        Strided::new(&shifted, &[1]),
        Strided::new(&one, &[0]),
        &mut keep,
        &one_per_row,
        Binary::ReluBwd,
    )?;
    let shape = [rows, n];
    let mut kept = d.alloc::<f32>(rows * n)?;
    cuda::ops::binary(d, Strided::new(&keep, &per_row), Strided::new(&y, &full), &mut kept, &shape, Binary::ReluBwd)?;
    if !log {
        return Ok(kept);
    }
    // −inf on the dropped rows: (1 − keep) selects −inf there and a literal 0 on kept rows, added.
    let mut not_keep = d.alloc::<f32>(rows)?;
    cuda::ops::unary(d, Strided::new(&keep, &[1]), &mut not_keep, &one_per_row, Unary::Scale, -1.0)?;
    let mut dropped = d.alloc::<f32>(rows)?;
    cuda::ops::unary(d, Strided::new(&not_keep, &[1]), &mut dropped, &one_per_row, Unary::AddScalar, 1.0)?;
    let minus_inf = d.upload(&[f32::NEG_INFINITY])?;
    let mut fill = d.alloc::<f32>(rows)?;
    cuda::ops::binary(
        d,
        Strided::new(&dropped, &[1]),
        Strided::new(&minus_inf, &[0]),
        &mut fill,
        &one_per_row,
        Binary::ReluBwd,
    )?;
    let mut out = d.alloc::<f32>(rows * n)?;
    cuda::ops::binary(d, Strided::new(&kept, &full), Strided::new(&fill, &per_row), &mut out, &shape, Binary::Add)?;
    Ok(out)
}

/// Row count of a tensor with rows of length `n` (0 when there are no elements).
fn rows(t: &Tensor, n: usize) -> usize {
    t.numel().checked_div(n).unwrap_or(0)
}

pub(crate) fn forward(op: &'static str, ordinal: u32, x: &Tensor, n: usize, log: bool) -> Result<Tensor> {
    let xb = dense_f32(op, ordinal, x)?;
    let r = rows(x, n);
    let y = crate::gpu::with_device(op, ordinal, |d| {
        let mut y = d.alloc::<f32>(x.numel())?;
        if r > 0 {
            cuda::ops::softmax(d, &xb, &mut y, r, n, log)?;
            return mask_empty_rows(d, &xb, y, r, n, log);
        }
        Ok(y)
    })?;
    Ok(Tensor::from_gpu(y, ordinal, x.shape(), None))
}

/// The input gradient from the forward output `y` and its contiguous gradient `g`.
pub(crate) fn backward(op: &'static str, ordinal: u32, y: &Tensor, g: &Tensor, n: usize, log: bool) -> Result<Tensor> {
    let (yb, gb) = (dense_f32(op, ordinal, y)?, dense_f32(op, ordinal, g)?);
    let r = rows(y, n);
    let dx = crate::gpu::with_device(op, ordinal, |d| {
        let mut dx = d.alloc::<f32>(y.numel())?;
        if r > 0 {
            cuda::ops::softmax_bwd(d, &yb, &gb, &mut dx, r, n, log)?;
        }
        Ok(dx)
    })?;
    Ok(Tensor::from_gpu(dx, ordinal, y.shape(), None))
}
