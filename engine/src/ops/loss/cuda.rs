//! Cross-entropy on the GPU: the fused per-row kernel (loss and logsumexp), a sum over the rows and a
//! scale by 1/count; the backward kernel times the upstream gradient, read on the device (no sync).
//!
//! Unlike the host, a kept row whose logits are all -inf gives NaN here instead of +inf.
use super::OP;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::dense_f32;
use crate::gpu::{with_device, Strided};
use crate::tensor::Tensor;
use cuda::kernels::ops::{Binary, Reduce, Unary};
use std::sync::Arc;

/// Targets as the kernel takes them (i32), with an i32 ignore value no kept target equals.
fn targets_i32(t: &[i64], c: usize, ignore_index: i64) -> Result<(Vec<i32>, i32)> {
    if i32::try_from(c).is_err() {
        return Err(Error::invalid(OP, format!("{c} classes exceed the GPU kernel's i32 targets")));
    }
    // Kept targets are in 0..c (checked by the caller), so -1 is free when ignore_index is not an i32.
    let ignore = i32::try_from(ignore_index).unwrap_or(-1);
    let host = t.iter().map(|&ti| if ti == ignore_index { ignore } else { ti as i32 }).collect();
    Ok((host, ignore))
}

/// Mean cross-entropy of contiguous logits `x` (`[..., c]`, on GPU `ordinal`) against validated host
/// targets `t`, of which `count` are not `ignore_index`.
pub(crate) fn cross_entropy(
    ordinal: u32,
    x: Tensor,
    t: &[i64],
    c: usize,
    ignore_index: i64,
    count: usize,
) -> Result<Tensor> {
    let rows = t.len();
    let (host, ignore) = targets_i32(t, c, ignore_index)?;
    let xb = dense_f32(OP, ordinal, &x)?;
    let (loss, lse, targets) = with_device(OP, ordinal, |d| {
        let targets = d.upload(&host)?;
        let mut lse = d.alloc::<f32>(rows)?;
        let mut total = d.zeros::<f32>(1)?;
        if count > 0 {
            let ce = cuda::ops::CrossEntropy {
                logits: &xb,
                targets: &targets,
                host_targets: &host,
                rows,
                cols: c,
                ignore_index: ignore,
            };
            let mut per_row = d.alloc::<f32>(rows)?;
            ce.forward(d, &mut per_row, &mut lse)?;
            let mut sum = d.alloc::<f32>(1)?;
            cuda::ops::reduce(d, &per_row, &mut sum, 1, rows, 1, Reduce::Sum)?;
            cuda::ops::unary(d, Strided::new(&sum, &[1]), &mut total, &[1], Unary::Scale, 1.0 / count as f32)?;
        }
        Ok((total, lse, targets))
    })?;
    let (lse, targets) = (Arc::new(lse), Arc::new(targets));
    let input = x.clone();
    let node = record(OP, &[&x], move |_, g| {
        if count == 0 {
            return Ok(vec![Some(input.zeros_like()?)]);
        }
        let gb = dense_f32(OP, ordinal, &g.contiguous()?)?;
        let gx = with_device(OP, ordinal, |d| {
            let ce = cuda::ops::CrossEntropy {
                logits: &xb,
                targets: &targets,
                host_targets: &host,
                rows,
                cols: c,
                ignore_index: ignore,
            };
            let mut unit = d.alloc::<f32>(rows * c)?;
            ce.backward(d, &lse, &mut unit, 1.0 / count as f32)?;
            let mut gx = d.alloc::<f32>(rows * c)?;
            let all = [c as isize, 1];
            cuda::ops::binary(
                d,
                Strided::new(&unit, &all),
                Strided::new(&gb, &[0, 0]),
                &mut gx,
                &[rows, c],
                Binary::Mul,
            )?;
            Ok(gx)
        })?;
        Ok(vec![Some(Tensor::from_gpu(gx, ordinal, input.shape(), None))])
    });
    Ok(Tensor::from_gpu(loss, ordinal, &[], node))
}
