//! Fused low-rank-adapted linear: `y = x·Wᵀ + b + s·(x_d·Aᵀ)·Bᵀ` (LoRA; `x_d` is the input after
//! the adapter's dropout, or `x` itself). One output buffer: the low-rank product is accumulated
//! into the base GEMM's result (β = 1), and only the thin `x_d·Aᵀ` is kept for the backward.
//! `W + BA` is never formed. Composed from separate ops the same layer would keep four full-size
//! activations; the training-step benchmark's memory comes mostly from these. On a GPU (`cuda.rs`)
//! the same three products are strided GEMMs accumulating into one output; a packed base (QLoRA) is
//! dequantized on the device into an f32 scratch first (`quant_matmul::cuda`). Under
//! `crate::autocast` every product's operands (the dequantized weight too) are rounded to bf16.
#[cfg(feature = "cuda")]
mod cuda;

use crate::autograd::record;
use crate::cpu::gemm::{sgemm, Parallelism};
use crate::error::{Error, Result};
use crate::quant::PackedMatrix;
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;
use std::sync::Arc;

/// `x` as a `[rows, k]` matrix (a view when the leading dims merge, else a copy).
fn as_rows(x: &Tensor, k: usize) -> Result<Tensor> {
    let rows = x.numel() / k.max(1);
    match x.reshape(&[rows, k]) {
        Ok(v) => Ok(v),
        Err(_) => x.contiguous()?.reshape(&[rows, k]),
    }
}

/// The base weight under the adapter: an f32 tensor (trainable or not), or a frozen packed matrix
/// (QLoRA), whose product is taken tile by tile as in `packed_linear`.
enum Base {
    Dense(Tensor),
    Packed(Arc<dyn PackedMatrix>),
}

/// `x [..., in]`, `weight [out, in]`, `bias [out]`, `a [r, in]`, `b [out, r]`.
pub fn lora_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    scaling: f32,
    x_lora: Option<&Tensor>,
) -> Result<Tensor> {
    let w = weight.float_input(OP)?;
    if w.rank() != 2 {
        return Err(Error::shape(OP, format!("W {:?} must be [out, in]", w.shape())));
    }
    lora_linear_on(x, Base::Dense(w), bias, a, b, scaling, x_lora)
}

/// [`lora_linear`] over a frozen packed `[out, in]` weight (QLoRA): no gradient for the weight.
pub fn lora_linear_packed(
    x: &Tensor,
    weight: &Arc<dyn PackedMatrix>,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    scaling: f32,
    x_lora: Option<&Tensor>,
) -> Result<Tensor> {
    lora_linear_on(x, Base::Packed(weight.clone()), bias, a, b, scaling, x_lora)
}

const OP: &str = "lora_linear";

fn lora_linear_on(
    x: &Tensor,
    base: Base,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    scaling: f32,
    x_lora: Option<&Tensor>,
) -> Result<Tensor> {
    let (x, a, b) = (x.float_input(OP)?, a.float_input(OP)?, b.float_input(OP)?);
    let xd = match x_lora {
        Some(t) => t.float_input(OP)?,
        None => x.clone(),
    };
    let bias = bias.map(|t| t.float_input(OP)).transpose()?;
    let [out_f, in_f] = match &base {
        Base::Dense(w) => [w.shape()[0], w.shape()[1]],
        Base::Packed(p) => p.shape(),
    };
    if a.rank() != 2 || b.rank() != 2 || x.rank() < 1 {
        return Err(Error::shape(
            OP,
            format!("x {:?}, W [{out_f}, {in_f}], A {:?}, B {:?}", x.shape(), a.shape(), b.shape()),
        ));
    }
    let r = a.shape()[0];
    let ok = x.shape()[x.rank() - 1] == in_f
        && xd.shape() == x.shape()
        && a.shape()[1] == in_f
        && b.shape() == [out_f, r]
        && bias.as_ref().is_none_or(|t| t.shape() == [out_f]);
    if !ok {
        return Err(Error::shape(
            OP,
            format!(
                "x {:?} (dropout input {:?}), W [{out_f}, {in_f}], bias {:?}, A {:?}, B {:?}: need x [.., in], W [out, in], A [r, in], B [out, r]",
                x.shape(),
                xd.shape(),
                bias.as_ref().map(|t| t.shape().to_vec()),
                a.shape(),
                b.shape()
            ),
        ));
    }
    let mut devices = vec![&x, &xd, &a, &b];
    devices.extend(bias.as_ref());
    if let Base::Dense(w) = &base {
        devices.push(w);
    }
    let device = common_device(OP, &devices)?;
    // Under autocast every GEMM operand is rounded to bf16, `xa`'s inside matmul (`crate::autocast`).
    let cast = crate::autocast::autocast_dtype();
    let (x2, xd2) = (as_rows(&x, in_f)?, as_rows(&xd, in_f)?);
    // xa = x_d·Aᵀ [n, r], kept for the backward.
    let xa = {
        let _g = crate::autograd::no_grad();
        xd2.matmul(&a.t()?)?.contiguous()?
    };
    let mut shape = x.shape().to_vec();
    let last = shape.len() - 1;
    shape[last] = out_f;
    let out = match device {
        Device::Cpu => {
            let out = match cast {
                Some(dt) => {
                    let r = |t: &Tensor| crate::autocast::round_operand(t, dt);
                    let base = match &base {
                        Base::Dense(w) => Base::Dense(r(w)?),
                        Base::Packed(p) => Base::Packed(p.clone()),
                    };
                    host_forward(&r(&x2)?, &base, bias.as_ref(), &r(&xa)?, &r(&b)?, scaling, out_f, true)?
                }
                None => host_forward(&x2, &base, bias.as_ref(), &xa, &b, scaling, out_f, false)?,
            };
            Tensor::from_op(CpuStorage::F32(out), &shape, None)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(o) => cuda::forward(o, &x2, &base, bias.as_ref(), &xa, &b, scaling, &shape, cast)?,
    };
    let x_shape = x.shape().to_vec();
    let dense_w = match &base {
        Base::Dense(w) => Some(w.clone()),
        Base::Packed(_) => None,
    };
    let inputs: Vec<Tensor> =
        [Some(x.clone()), dense_w, bias.clone(), Some(a.clone()), Some(b.clone()), Some(xd.clone())]
            .into_iter()
            .flatten()
            .collect();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let has_bias = bias.is_some();
    let node = record(OP, &refs, move |_, g| {
        // The backward's GEMMs round their operands as the forward's did.
        let _cast = crate::autocast::set(cast);
        let g2 = as_rows(g, out_f)?;
        let want = |t: &Tensor| t.tracks_grad();
        let gx = match &base {
            _ if !want(&x) => None,
            Base::Dense(w) => Some(g2.matmul(w)?.reshape(&x_shape)?),
            Base::Packed(p) => Some(crate::ops::quant_matmul::input_grad(&g2, p.as_ref(), &x_shape)?),
        };
        // A packed weight is not an input (frozen by construction): no slot in the gradients.
        let gw = match &base {
            Base::Dense(w) => Some(if want(w) { Some(g2.t()?.matmul(&x2)?) } else { None }),
            Base::Packed(_) => None,
        };
        let gbias = match &bias {
            Some(t) if want(t) => Some(g2.sum(&[0], false)?),
            _ => None,
        };
        // g·B [n, r] is shared by the A and x_d gradients.
        let need_gb = want(&a) || want(&xd);
        let g_b = if need_gb { Some(g2.matmul(&b)?) } else { None };
        let ga = match &g_b {
            Some(gb) if want(&a) => Some(gb.t()?.matmul(&xd2)?.mul_scalar(scaling)?),
            _ => None,
        };
        let gbb = if want(&b) { Some(g2.t()?.matmul(&xa)?.mul_scalar(scaling)?) } else { None };
        let gxd = match &g_b {
            Some(gb) if want(&xd) => Some(gb.matmul(&a)?.mul_scalar(scaling)?.reshape(&x_shape)?),
            _ => None,
        };
        let mut grads = vec![gx];
        grads.extend(gw);
        if has_bias {
            grads.push(gbias);
        }
        grads.extend([ga, gbb, gxd]);
        Ok(grads)
    });
    Ok(out.with_node_opt(node))
}

/// The host forward: `x2·Wᵀ` (or the packed product), `+= s·xa·Bᵀ`, `+= bias`, as `[n, out]` rows.
/// `cast`: the operands are rounded to bf16 already; a packed weight's tiles are rounded here.
#[allow(clippy::too_many_arguments)]
fn host_forward(
    x2: &Tensor,
    base: &Base,
    bias: Option<&Tensor>,
    xa: &Tensor,
    b: &Tensor,
    scaling: f32,
    out_f: usize,
    cast: bool,
) -> Result<Vec<f32>> {
    let (n, in_f, r) = (x2.shape()[0], x2.shape()[1], xa.shape()[1]);
    let mut out = crate::cpu::pool::alloc_f32(n * out_f);
    match base {
        Base::Dense(w) => {
            let (xs, ws) = (x2.read_all::<f32>(OP)?, w.read_all::<f32>(OP)?);
            let (lx, lw) = (x2.layout(), w.layout());
            // out = x·Wᵀ: B operand is Wᵀ, i.e. W with its strides swapped.
            sgemm(
                n,
                out_f,
                in_f,
                1.0,
                &xs[lx.offset()..],
                lx.strides()[0],
                lx.strides()[1],
                &ws[lw.offset()..],
                lw.strides()[1],
                lw.strides()[0],
                0.0,
                &mut out,
                out_f,
                1,
                Parallelism::Rayon,
            );
        }
        Base::Packed(p) => {
            let xc = x2.contiguous()?;
            crate::ops::quant_matmul::forward_into(&xc.read::<f32>(OP)?, n, p.as_ref(), &mut out, cast)?;
        }
    }
    let (xas, bs) = (xa.read::<f32>(OP)?, b.read_all::<f32>(OP)?);
    let lb = b.layout();
    // out += s·xa·Bᵀ
    sgemm(
        n,
        out_f,
        r,
        scaling,
        &xas,
        r,
        1,
        &bs[lb.offset()..],
        lb.strides()[1],
        lb.strides()[0],
        1.0,
        &mut out,
        out_f,
        1,
        Parallelism::Rayon,
    );
    if let Some(bias) = bias {
        let bv = bias.contiguous()?.to_vec::<f32>()?;
        for row in out.chunks_mut(out_f) {
            for (o, &bb) in row.iter_mut().zip(&bv) {
                *o += bb;
            }
        }
    }
    Ok(out)
}
