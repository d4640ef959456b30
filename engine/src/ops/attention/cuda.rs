//! Attention on the GPU, unfused: scores = scale·Q·Kᵀ (one batched GEMM), the masked softmax kernel
//! in place, then P·V; the probabilities P are kept for the backward (`batch·heads·tq·tk` floats,
//! unlike the host path's one log-sum-exp per row).
//!
//! Grouped-query heads cost nothing extra: with Q, K and V contiguous, the `group` query heads that
//! share kv head `kvh` are `group·tq` consecutive rows, so GEMM batch `z = b·kv_heads + kvh` pairs
//! them with K[b, kvh] by plain batch strides, and the backward's Pᵀ·dO and dSᵀ·Q sum over the group
//! inside the GEMM's inner dim.
//!
//! The softmax kernel needs `tk >= tq` and puts the causal diagonal at `j <= i + (tk - tq)`. The
//! host's rule is the same and also covers `tk < tq` (causal: the first `tq - tk` queries see no
//! key). That case runs with `tq - tk` masked padding key columns in front of the real ones: then
//! the kernel's rule over the padded width is exactly the host's over the real keys.
use super::cpu::Dims;
use super::OP;
use crate::autograd::record;
use crate::error::Result;
use crate::gpu::with_device;
use crate::ops::matmul::cuda::gemm_batches;
use crate::tensor::Tensor;
use cuda::{Buffer, GemmShape};
use std::sync::Arc;

/// The GEMM batching of one call; the scores are `[batch, heads, tq, kl]` with the real keys at
/// columns `kl - tk..kl`.
#[derive(Clone, Copy)]
struct Plan {
    dims: Dims,
    batch: usize,
    kl: usize,
}

impl Plan {
    fn group(&self) -> usize {
        self.dims.heads / self.dims.kv_heads
    }
    /// GEMM batches: one per (batch, kv head).
    fn z(&self) -> usize {
        self.batch * self.dims.kv_heads
    }
    /// Query rows per GEMM batch.
    fn rows(&self) -> usize {
        self.group() * self.dims.tq
    }
    /// A GEMM over all `z` batches; `a`, `b` are (row, col, batch) strides, `c` (row, batch).
    #[allow(clippy::too_many_arguments)]
    fn gemm(&self, m: usize, n: usize, k: usize, a: [usize; 3], b: [usize; 3], c: [usize; 2], alpha: f32) -> GemmShape {
        GemmShape {
            m,
            n,
            k,
            batch: self.z(),
            a_m: a[0],
            a_k: a[1],
            b_k: b[0],
            b_n: b[1],
            c_m: c[0],
            a_batch: a[2],
            b_batch: b[2],
            c_batch: c[1],
            alpha,
            beta: 0.0,
        }
    }
}

/// The buffer of `t` made contiguous (a copy only if it is not) and the element its data starts at.
/// Untracked: only the buffer is used, the gradients are this op's own.
fn operand(t: &Tensor) -> Result<(Arc<Buffer<f32>>, usize)> {
    let t = {
        let _g = crate::autograd::no_grad();
        t.contiguous()?
    };
    Ok((t.gpu_f32(OP)?, t.layout().offset()))
}

/// Forward on GPU `ordinal` for f32 q, k, v (any layout); `keep` is the `[batch, tk]` key padding
/// mask. Records the backward.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    ordinal: u32,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dims: Dims,
    batch: usize,
    keep: Option<&[bool]>,
    causal: bool,
    scale: f32,
) -> Result<Tensor> {
    let Dims { heads, tq, tk, d, dv, .. } = dims;
    let kpad = tq.saturating_sub(tk);
    let plan = Plan { dims, batch, kl: tk + kpad };
    let (kl, rows) = (plan.kl, plan.rows());
    let ((qb, qo), (kb, ko), (vb, vo)) = (operand(q)?, operand(k)?, operand(v)?);
    let key_valid: Option<Vec<u8>> = (keep.is_some() || kpad > 0).then(|| {
        let mut m = vec![0u8; batch * kl];
        for b in 0..batch {
            for j in 0..tk {
                m[b * kl + kpad + j] = keep.is_none_or(|k| k[b * tk + j]) as u8;
            }
        }
        m
    });
    let (out, p) = with_device(OP, ordinal, |dev| {
        let mut s = dev.alloc::<f32>(batch * heads * tq * kl)?;
        let g = plan.gemm(rows, tk, d, [d, 1, rows * d], [1, d, tk * d], [kl, rows * kl], scale);
        gemm_batches(dev, (&qb, qo), (&kb, ko), (&mut s, kpad), &g)?;
        let valid = key_valid.as_deref().map(|m| dev.upload(m)).transpose()?;
        cuda::ops::attention_softmax(dev, &mut s, valid.as_ref(), batch, heads, tq, kl, causal)?;
        let mut out = dev.alloc::<f32>(batch * heads * tq * dv)?;
        let g = plan.gemm(rows, dv, tk, [kl, 1, rows * kl], [dv, 1, tk * dv], [dv, rows * dv], 1.0);
        gemm_batches(dev, (&s, kpad), (&vb, vo), (&mut out, 0), &g)?;
        Ok((out, Arc::new(s)))
    })?;
    let out = Tensor::from_gpu(out, ordinal, &[batch, heads, tq, dv], None);
    let (iq, ik, iv) = (q.clone(), k.clone(), v.clone());
    let node = record(OP, &[q, k, v], move |_, g| {
        let (want_q, want_k, want_v) = (iq.tracks_grad(), ik.tracks_grad(), iv.tracks_grad());
        let (gb, go) = operand(g)?;
        let (sq, sk, sv) = (iq.shape().to_vec(), ik.shape().to_vec(), iv.shape().to_vec());
        let (dq, dk, dvv) = with_device(OP, ordinal, |dev| {
            let mut dv_buf = None;
            if want_v {
                // dV[z] = P[z]ᵀ·dO[z]: the group's query rows are the inner dim.
                let mut o = dev.alloc::<f32>(sv.iter().product())?;
                let g = plan.gemm(tk, dv, rows, [1, kl, rows * kl], [dv, 1, rows * dv], [dv, tk * dv], 1.0);
                gemm_batches(dev, (&p, kpad), (&gb, go), (&mut o, 0), &g)?;
                dv_buf = Some(o);
            }
            let (mut dq_buf, mut dk_buf) = (None, None);
            if want_q || want_k {
                // dP = dO·Vᵀ; the padding columns stay 0 so the softmax backward reads no garbage.
                let n = batch * heads * tq * kl;
                let mut dp = if kpad > 0 { dev.zeros::<f32>(n)? } else { dev.alloc::<f32>(n)? };
                let g = plan.gemm(rows, tk, dv, [dv, 1, rows * dv], [1, dv, tk * dv], [kl, rows * kl], 1.0);
                gemm_batches(dev, (&gb, go), (&vb, vo), (&mut dp, kpad), &g)?;
                let mut ds = dev.alloc::<f32>(n)?;
                cuda::ops::softmax_bwd(dev, &p, &dp, &mut ds, batch * heads * tq, kl, false)?;
                if want_q {
                    let mut o = dev.alloc::<f32>(sq.iter().product())?;
                    let g = plan.gemm(rows, d, tk, [kl, 1, rows * kl], [d, 1, tk * d], [d, rows * d], scale);
                    gemm_batches(dev, (&ds, kpad), (&kb, ko), (&mut o, 0), &g)?;
                    dq_buf = Some(o);
                }
                if want_k {
                    let mut o = dev.alloc::<f32>(sk.iter().product())?;
                    let g = plan.gemm(tk, d, rows, [1, kl, rows * kl], [d, 1, rows * d], [d, tk * d], scale);
                    gemm_batches(dev, (&ds, kpad), (&qb, qo), (&mut o, 0), &g)?;
                    dk_buf = Some(o);
                }
            }
            Ok((dq_buf, dk_buf, dv_buf))
        })?;
        let wrap = |b: Option<Buffer<f32>>, shape: &[usize]| b.map(|b| Tensor::from_gpu(b, ordinal, shape, None));
        Ok(vec![wrap(dq, &sq), wrap(dk, &sk), wrap(dvv, &sv)])
    });
    Ok(out.with_node_opt(node))
}
