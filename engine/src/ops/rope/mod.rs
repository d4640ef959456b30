//! Rotary position embedding in the Hugging Face LLaMA convention ("rotate_half": the head dim is
//! split into two halves, not interleaved pairs): the cos/sin tables, and a fused rotation with its
//! backward. On a GPU the rotation runs through `cuda.rs`; the tables are computed on the host and
//! moved to the positions' device.
#[cfg(feature = "cuda")]
mod cuda;

use crate::autograd::{needs_grad, record};
use crate::cpu::strided::MIN_PAR_ELEMS;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// The cos and sin tables for `positions` (i64 `[t]` or `[batch, t]`; f32 positions are accepted
/// too), each `[t, head_dim]` or `[batch, t, head_dim]`, computed in f32 exactly as transformers'
/// `LlamaRotaryEmbedding` (default rope type, scaling 1): `inv_freq[i] = 1 / theta^((2i) /
/// head_dim)` for `i < head_dim / 2`, `freq = position · inv_freq[i]`, duplicated over both halves
/// of the head dim (`emb = cat(freqs, freqs)`), then `cos(emb)`, `sin(emb)`. The tables are made
/// on the host and returned on the device `positions` are on.
pub fn rope_tables(positions: &Tensor, head_dim: usize, theta: f32) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rope_tables";
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(Error::shape(OP, format!("head_dim must be even and > 0, got {head_dim}")));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::invalid(OP, format!("theta must be finite and > 0, got {theta}")));
    }
    if !matches!(positions.rank(), 1 | 2) {
        return Err(Error::shape(OP, format!("positions must be [t] or [batch, t], got {:?}", positions.shape())));
    }
    let device = positions.device();
    let host = positions.detach().to_device(Device::Cpu)?;
    let pos: Vec<f32> = match host.dtype() {
        DType::I64 => host.to_vec::<i64>()?.iter().map(|&p| p as f32).collect(),
        DType::F32 => host.to_vec::<f32>()?,
        other => return Err(Error::DType { op: OP, expected: DType::I64, got: other }),
    };
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
    let n = pos.len() * head_dim;
    let (mut cos, mut sin) = (vec![0.0f32; n], vec![0.0f32; n]);
    for ((c, s), &p) in cos.chunks_exact_mut(head_dim).zip(sin.chunks_exact_mut(head_dim)).zip(&pos) {
        for (i, &f) in inv_freq.iter().enumerate() {
            let a = p * f;
            let (ca, sa) = (a.cos(), a.sin());
            (c[i], c[i + half], s[i], s[i + half]) = (ca, ca, sa, sa);
        }
    }
    let mut shape = positions.shape().to_vec();
    shape.push(head_dim);
    Ok((Tensor::from_vec(cos, &shape)?.to_device(device)?, Tensor::from_vec(sin, &shape)?.to_device(device)?))
}

/// `out = x·cos + rotate_half(x)·sin` over rows of `x` (or, with `transpose`, the adjoint map
/// `x·cos + rotate_halfᵀ(x·sin)`, the backward). `x` is `[batch, heads, t, hd]` at any strides;
/// `cos`/`sin` are contiguous rows of `hd`, row `ti` (or `bi·t + ti` when `per_batch`).
fn rotate(x: &[f32], xl: &Layout, cos: &[f32], sin: &[f32], per_batch: bool, transpose: bool) -> Vec<f32> {
    let sh = xl.shape();
    let (heads, t, hd) = (sh[1], sh[2], sh[3]);
    let st = xl.strides();
    let half = hd / 2;
    let mut out = vec![0.0f32; xl.numel()];
    if out.is_empty() {
        return out;
    }
    let rows_per_task = (MIN_PAR_ELEMS / hd).max(1);
    out.par_chunks_mut(rows_per_task * hd).enumerate().for_each(|(task, chunk)| {
        for (r, o) in chunk.chunks_exact_mut(hd).enumerate() {
            let row = task * rows_per_task + r;
            let (ti, hi, bi) = (row % t, (row / t) % heads, row / (t * heads));
            let base = xl.offset() + bi * st[0] + hi * st[1] + ti * st[2];
            let xs = |i: usize| x[base + i * st[3]];
            let tr = if per_batch { bi * t + ti } else { ti } * hd;
            let (c, s) = (&cos[tr..tr + hd], &sin[tr..tr + hd]);
            for i in 0..half {
                let (x1, x2) = (xs(i), xs(i + half));
                if transpose {
                    o[i] = x1 * c[i] + x2 * s[i + half];
                    o[i + half] = x2 * c[i + half] - x1 * s[i];
                } else {
                    o[i] = x1 * c[i] - x2 * s[i];
                    o[i + half] = x2 * c[i + half] + x1 * s[i + half];
                }
            }
        }
    });
    out
}

impl Tensor {
    /// Rotary position embedding, Hugging Face LLaMA's `apply_rotary_pos_emb` for one tensor:
    /// `x·cos + rotate_half(x)·sin` with `rotate_half(x) = cat(−x[.., hd/2..], x[.., ..hd/2])`.
    /// `self` is `[batch, heads, t, head_dim]` (any strides); `cos`/`sin` come from
    /// [`rope_tables`]: `[t, head_dim]` (broadcast over batch and heads) or `[batch, t, head_dim]`
    /// (batch 1 or equal to x's; broadcast over heads). Gradients flow to `self` only; the tables
    /// must not require gradients.
    pub fn rope(&self, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        const OP: &str = "rope";
        let x = self.float_input(OP)?;
        if x.rank() != 4 {
            return Err(Error::shape(OP, format!("x must be [batch, heads, t, head_dim], got {:?}", x.shape())));
        }
        let (batch, t, hd) = (x.shape()[0], x.shape()[2], x.shape()[3]);
        if hd % 2 != 0 {
            return Err(Error::shape(OP, format!("head_dim must be even, got {hd} (x {:?})", x.shape())));
        }
        if cos.shape() != sin.shape() {
            return Err(Error::shape(OP, format!("cos {:?} and sin {:?} differ", cos.shape(), sin.shape())));
        }
        let per_batch = match cos.shape() {
            [ct, cd] if *ct == t && *cd == hd => false,
            [1, ct, cd] if *ct == t && *cd == hd => false,
            [cb, ct, cd] if *cb == batch && *ct == t && *cd == hd => true,
            other => {
                return Err(Error::shape(
                    OP,
                    format!("cos/sin {other:?} do not fit x {:?}: need [t, hd] or [batch, t, hd]", x.shape()),
                ))
            }
        };
        if needs_grad(&[cos, sin]) {
            return Err(Error::invalid(OP, "gradients for cos/sin are not supported: detach the tables"));
        }
        let (cos, sin) = (cos.float_input(OP)?.contiguous()?, sin.float_input(OP)?.contiguous()?);
        let out = match common_device(OP, &[&x, &cos, &sin])? {
            Device::Cpu => {
                let out = {
                    let (xd, cd, sd) = (x.read_all::<f32>(OP)?, cos.read::<f32>(OP)?, sin.read::<f32>(OP)?);
                    rotate(&xd, x.layout(), &cd, &sd, per_batch, false)
                };
                Tensor::from_op(CpuStorage::F32(out), x.shape(), None)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::rotate(o, &x, &cos, &sin, per_batch, false)?,
        };
        let node = record(OP, &[&x], move |_, g| {
            let g = g.contiguous()?;
            let gx = match common_device(OP, &[&g, &cos])? {
                Device::Cpu => {
                    let gx = {
                        let (gd, cd, sd) = (g.read_all::<f32>(OP)?, cos.read::<f32>(OP)?, sin.read::<f32>(OP)?);
                        rotate(&gd, g.layout(), &cd, &sd, per_batch, true)
                    };
                    Tensor::from_vec(gx, g.shape())?
                }
                #[cfg(feature = "cuda")]
                Device::Cuda(o) => cuda::rotate(o, &g, &cos, &sin, per_batch, true)?,
            };
            Ok(vec![Some(gx)])
        });
        Ok(out.with_node_opt(node))
    }
}
