//! Fused cross-entropy: log-sum-exp per row in the forward, `(softmax − onehot) / count` in the
//! backward, without materializing the log-softmax.
//!
//! Semantics are PyTorch's `F.cross_entropy(logits, targets, reduction="mean", ignore_index=…)`
//! with the classes on the last dim, except:
//! - when every target is ignored (or there are no rows), PyTorch returns NaN (0/0); this returns
//!   0.0 with a zero gradient, so a batch made only of padding does not poison a training run;
//! - a row whose logits are all -inf has loss +inf (its target has probability 0) instead of NaN.
#[cfg(feature = "cuda")]
mod cuda;

use crate::autograd::record;
use crate::cpu::pool::{alloc_f32, alloc_f32_zeroed};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::softmax::cpu::{exp_sum, for_each_row, map1, map_rows, max};
use crate::storage::{CpuStorage, Device};
use crate::tensor::Tensor;
use wide::f32x8;

const OP: &str = "cross_entropy";

/// The multi-dimensional index of flat position `i` in `shape` (for error messages).
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d].max(1);
        i /= shape[d].max(1);
    }
    idx
}

/// Per-row `(max, ln Σ exp(x − max))`, kept apart so `x − max` stays exact for large logits.
/// `None` for ignored rows.
fn row_stats(x: &[f32], targets: &[i64], c: usize, ignore_index: i64) -> Vec<Option<(f32, f32)>> {
    map_rows(targets.len(), c, |r| {
        if targets[r] == ignore_index {
            return None;
        }
        let xr = &x[r * c..(r + 1) * c];
        let m = max(xr);
        if m == f32::NEG_INFINITY {
            return Some((m, 0.0));
        }
        Some((m, exp_sum(xr, m).ln()))
    })
}

/// Gradient of the mean loss times `scale` (= upstream gradient / count): per kept row
/// `(softmax − onehot) · scale`, zero on ignored rows.
fn backward_rows(x: &[f32], targets: &[i64], stats: &[Option<(f32, f32)>], c: usize, scale: f32) -> Vec<f32> {
    // Every row is written below (the pool may hand back a used buffer).
    let mut gx = alloc_f32(x.len());
    for_each_row(&mut gx, c, |r, o| {
        let Some((m, ls)) = stats[r] else {
            o.fill(0.0);
            return;
        };
        if m == f32::NEG_INFINITY {
            o.fill(0.0);
        } else {
            let xr = &x[r * c..(r + 1) * c];
            let (mv, lv, sv) = (f32x8::splat(m), f32x8::splat(ls), f32x8::splat(scale));
            map1(xr, o, |v| ((v - mv) - lv).exp() * sv, |v| ((v - m) - ls).exp() * scale);
        }
        o[targets[r] as usize] -= scale;
    });
    gx
}

impl Tensor {
    /// Mean cross-entropy of logits `[..., C]` against i64 class `targets` of the leading shape
    /// `[...]`, ignoring targets equal to -100: PyTorch's `F.cross_entropy` with the defaults.
    /// See [`Tensor::cross_entropy_with`].
    pub fn cross_entropy(&self, targets: &Tensor) -> Result<Tensor> {
        self.cross_entropy_with(targets, -100)
    }

    /// Mean of `−log softmax(logits)[target]` over the positions whose target is not
    /// `ignore_index`, as a 0-dim tensor. Logits are `[..., C]` (any leading dims, classes last);
    /// `targets` are i64 with exactly the leading shape. A target outside `[0, C)` that is not
    /// `ignore_index` is an error. When every target is ignored the loss is 0.0 with a zero
    /// gradient (PyTorch gives NaN). Gradients flow to the logits only.
    pub fn cross_entropy_with(&self, targets: &Tensor, ignore_index: i64) -> Result<Tensor> {
        if self.rank() == 0 {
            return Err(Error::shape(OP, "logits must have a class dim, got a 0-dim tensor"));
        }
        if targets.dtype() != DType::I64 {
            return Err(Error::DType { op: OP, expected: DType::I64, got: targets.dtype() });
        }
        let (lead, c) = (&self.shape()[..self.rank() - 1], self.shape()[self.rank() - 1]);
        if targets.shape() != lead {
            return Err(Error::shape(
                OP,
                format!(
                    "targets of shape {:?} do not match logits of shape {:?} (expected targets of shape {lead:?})",
                    targets.shape(),
                    self.shape()
                ),
            ));
        }
        // Targets may live on either device; the range check and the count need them on the host.
        let t = targets.to_device(Device::Cpu)?.to_vec::<i64>()?;
        for (i, &ti) in t.iter().enumerate() {
            if ti != ignore_index && (ti < 0 || ti >= c as i64) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "target {ti} at position {:?} is out of range for {c} classes \
                         (expected 0..{c}, or the ignore_index {ignore_index})",
                        unravel(i, lead)
                    ),
                ));
            }
        }
        let count = t.iter().filter(|&&ti| ti != ignore_index).count();
        let x = self.float_input(OP)?.contiguous()?;
        match x.device() {
            Device::Cpu => Ok(cross_entropy_host(x, t, c, ignore_index, count)?),
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::cross_entropy(o, x, &t, c, ignore_index, count),
        }
    }
}

/// The loss on the host of contiguous logits `x` with validated targets `t`, `count` of them kept.
fn cross_entropy_host(x: Tensor, t: Vec<i64>, c: usize, ignore_index: i64, count: usize) -> Result<Tensor> {
    let (stats, loss) = {
        let xd = x.read::<f32>(OP)?;
        let stats = row_stats(&xd, &t, c, ignore_index);
        let mut total = 0.0f64;
        for (r, s) in stats.iter().enumerate() {
            if let Some((m, ls)) = *s {
                let xt = xd[r * c + t[r] as usize];
                total += if m == f32::NEG_INFINITY { f64::INFINITY } else { (m - xt) as f64 + ls as f64 };
            }
        }
        (stats, if count == 0 { 0.0 } else { (total / count as f64) as f32 })
    };
    let input = x.clone();
    let node = record(OP, &[&x], move |_, g| {
        let scale = if count == 0 { 0.0 } else { g.to_scalar()? / count as f32 };
        let gx = if count == 0 {
            alloc_f32_zeroed(input.numel())
        } else {
            backward_rows(&input.read::<f32>(OP)?, &t, &stats, c, scale)
        };
        Ok(vec![Some(Tensor::from_vec(gx, input.shape())?)])
    });
    Ok(Tensor::from_op(CpuStorage::F32(vec![loss]), &[], node))
}
