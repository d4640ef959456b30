//! The LoRA linear forward on the GPU: up to three strided GEMMs into one output buffer, each later
//! one accumulating (β = 1): the bias broadcast as `ones[n, 1]·bias[1, out]`, then `x·Wᵀ`, then
//! `s·xa·Bᵀ`. Transposed weights and views are read through their strides; nothing is copied. A
//! packed base's product is `quant_matmul::cuda::accumulate_forward` (dequantize, then the same GEMM).
//! Under autocast the operands are first cast to bf16 (contiguous copies) and the products run on
//! the tensor cores (`gemm_half_at`); the bias stays an f32 rank-1 product.
use super::Base;
use crate::error::Result;
use crate::gpu::{with_device, GpuBuf};
use crate::layout::Layout;
use crate::ops::matmul::cuda::{gemm_at, Operand};
use crate::tensor::Tensor;
use cuda::GemmShape;

const OP: &str = "lora_linear";

/// `x2 [n, in]·Wᵀ + bias + scaling·xa [n, r]·Bᵀ` as a contiguous tensor of `shape` (`n·out` elements).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    ordinal: u32,
    x2: &Tensor,
    base: &Base,
    bias: Option<&Tensor>,
    xa: &Tensor,
    b: &Tensor,
    scaling: f32,
    shape: &[usize],
    cast: Option<crate::DType>,
) -> Result<Tensor> {
    let (n, in_f) = (x2.shape()[0], x2.shape()[1]);
    let (out_f, r) = (b.shape()[0], xa.shape()[1]);
    // A GEMM operand's buffer and layout: the tensor's own, or its bf16 rounding under autocast.
    let operand = |t: &Tensor| -> Result<(GpuBuf, Layout)> {
        let t = match cast {
            Some(dt) => crate::autocast::round_operand(t, dt)?,
            None => t.clone(),
        };
        Ok((t.gpu_buf(OP)?, t.layout().clone()))
    };
    let ((xbuf, lx), (abuf, la), (bbuf, lb)) = (operand(x2)?, operand(xa)?, operand(b)?);
    let (xop, aop, bop) = (Operand::of(OP, &xbuf)?, Operand::of(OP, &abuf)?, Operand::of(OP, &bbuf)?);
    // The dense weight's buffer and layout, or the packed weight (checked to be on this GPU).
    let dense = match base {
        Base::Dense(w) => Some(operand(w)?),
        Base::Packed(p) => {
            crate::ops::quant_matmul::cuda::check_on(OP, p.as_ref(), ordinal)?;
            None
        }
    };
    let wop = dense.as_ref().map(|(buf, l)| Operand::of(OP, buf).map(|o| (o, l))).transpose()?;
    let bias = bias.map(|t| Ok::<_, crate::error::Error>((t.gpu_f32(OP)?, t.layout().clone()))).transpose()?;
    // A product `[n, k]·[k, out]` into the output: A's (row, col) strides, B's, offsets, α and β.
    let shape_of = |k: usize, a: [usize; 2], b: [usize; 2], alpha: f32, beta: f32| GemmShape {
        m: n,
        n: out_f,
        k,
        batch: 1,
        a_m: a[0],
        a_k: a[1],
        b_k: b[0],
        b_n: b[1],
        c_m: out_f,
        a_batch: 0,
        b_batch: 0,
        c_batch: 0,
        alpha,
        beta,
    };
    let out = with_device(OP, ordinal, |d| {
        // With no bias and an empty inner dim, nothing would write the output: start from zeros.
        let mut out = if bias.is_none() && in_f == 0 { d.zeros::<f32>(n * out_f)? } else { d.alloc::<f32>(n * out_f)? };
        let mut beta = if bias.is_none() && in_f == 0 { 1.0 } else { 0.0 };
        if let Some((bbias, lbias)) = &bias {
            let mut ones = d.alloc::<f32>(n)?;
            cuda::ops::fill(d, &mut ones, n, 1.0)?;
            let g = shape_of(1, [1, 1], [0, lbias.strides()[0]], 1.0, 0.0);
            cuda::ops::gemm_f32_at(d, &ones, 0, bbias, lbias.offset(), &mut out, 0, &g)?;
            beta = 1.0;
        }
        let xs = [lx.strides()[0], lx.strides()[1]];
        match (wop, base) {
            (Some((wop, lw)), _) if in_f > 0 => {
                // Wᵀ is W [out, in] with its strides swapped.
                let g = shape_of(in_f, xs, [lw.strides()[1], lw.strides()[0]], 1.0, beta);
                gemm_at(d, xop, lx.offset(), wop, lw.offset(), &mut out, 0, &g)?;
            }
            (None, Base::Packed(p)) => {
                crate::ops::quant_matmul::cuda::accumulate_forward(
                    d,
                    xop,
                    lx.offset(),
                    xs,
                    n,
                    p.as_ref(),
                    &mut out,
                    beta,
                )?;
            }
            _ => {}
        }
        if r > 0 {
            let g = shape_of(r, [la.strides()[0], la.strides()[1]], [lb.strides()[1], lb.strides()[0]], scaling, 1.0);
            gemm_at(d, aop, la.offset(), bop, lb.offset(), &mut out, 0, &g)?;
        }
        Ok(out)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, shape, None))
}
