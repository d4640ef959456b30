//! Scaled dot-product attention with causal and key-padding masks and grouped-query heads:
//! forward, hand-written backward for q, k and v, and (in `cpu.rs`) the fused kernels.
//!
//! The forward never materializes the `[batch, heads, tq, tk]` scores: each task scores one block
//! of query rows, masks, takes a stable softmax and multiplies by V. For the backward it saves one
//! log-sum-exp per query row (`batch · heads · tq` floats) and the backward recomputes the
//! probabilities from it. On a GPU (`cuda.rs`) it is GEMM, masked-softmax kernel, GEMM, keeping the
//! probabilities for the backward.
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use self::cpu::{Dims, Masking, Needs, View4};
use crate::autograd::record;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;

const OP: &str = "scaled_dot_product_attention";

/// Which keys each query may attend to, and the score scale.
///
/// - `causal`: query `i` sees key `j` iff `j ≤ i + (tk − tq)` (aligned to the bottom-right corner
///   of the score matrix). With `tq == tk` that is the usual lower triangle; with `P` prefix
///   keys/values concatenated in front (`tk = P + tq`) every query sees all prefixes plus its
///   causal past; with a KV cache (`tq = 1`, `tk = past + 1`) the new token sees everything.
/// - `key_padding`: `[batch, tk]` of u8, i64 or f32 (Hugging Face's `attention_mask`): nonzero =
///   attend, 0 = masked key. Combined with `causal` by "and".
/// - `scale`: multiplies q·kᵀ; `None` means `1/√d`.
///
/// A query row with no visible key at all (e.g. a left-padded position under a causal mask) gets
/// an output of zeros and passes zero gradient to q, k and v — never NaN.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionMask<'a> {
    pub causal: bool,
    pub key_padding: Option<&'a Tensor>,
    pub scale: Option<f32>,
}

impl<'a> AttentionMask<'a> {
    /// Every query sees every key; scale `1/√d`.
    pub fn none() -> Self {
        Self::default()
    }

    /// The bottom-right aligned causal mask; scale `1/√d`.
    pub fn causal() -> Self {
        AttentionMask { causal: true, ..Self::default() }
    }

    /// Adds a `[batch, tk]` key-padding mask (nonzero = attend).
    pub fn with_key_padding(self, key_padding: &'a Tensor) -> Self {
        AttentionMask { key_padding: Some(key_padding), ..self }
    }

    /// Replaces the default `1/√d` scale.
    pub fn with_scale(self, scale: f32) -> Self {
        AttentionMask { scale: Some(scale), ..self }
    }
}

fn view<'a>(data: &'a [f32], t: &Tensor) -> View4<'a> {
    let s = t.layout().strides();
    View4 { data, offset: t.layout().offset(), strides: [s[0], s[1], s[2], s[3]] }
}

/// `softmax(scale · q·kᵀ + mask) · v`, per batch and head.
///
/// Shapes: q `[batch, heads, tq, d]`, k `[batch, kv_heads, tk, d]`, v `[batch, kv_heads, tk, dv]`
/// with `heads` a multiple of `kv_heads` (grouped-query attention: query head `h` reads kv head
/// `h / (heads / kv_heads)`, as LLaMA's `repeat_kv`); the result is `[batch, heads, tq, dv]`.
/// Inputs may be any strided views (e.g. transposed projections): they are read in place.
/// f32, bf16 and f16 inputs are accepted (computed in f32); gradients flow to f32 inputs.
/// See [`AttentionMask`] for the masking rules, including fully masked rows (output 0).
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
    let (q, k, v) = (q.float_input(OP)?, k.float_input(OP)?, v.float_input(OP)?);
    for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
        if t.rank() != 4 {
            return Err(Error::shape(OP, format!("{name} must be [batch, heads, time, dim], got {:?}", t.shape())));
        }
    }
    let (sq, sk, sv) = (q.shape().to_vec(), k.shape().to_vec(), v.shape().to_vec());
    let (batch, heads, tq, d) = (sq[0], sq[1], sq[2], sq[3]);
    let (kv_heads, tk, dv) = (sk[1], sk[2], sv[3]);
    let shapes = || format!("q {sq:?}, k {sk:?}, v {sv:?}");
    if sk[0] != batch || sv[0] != batch || sv[1] != kv_heads || sv[2] != tk || sk[3] != d {
        return Err(Error::shape(
            OP,
            format!("{}: need q [b, h, tq, d], k [b, hk, tk, d], v [b, hk, tk, dv]", shapes()),
        ));
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(Error::shape(
            OP,
            format!("{}: {heads} query heads are not a multiple of {kv_heads} kv heads", shapes()),
        ));
    }
    if d == 0 {
        return Err(Error::shape(OP, format!("{}: head dim is 0", shapes())));
    }
    let keep: Option<Vec<bool>> = match mask.key_padding {
        None => None,
        Some(m) => {
            if m.shape() != [batch, tk] {
                return Err(Error::shape(
                    OP,
                    format!("key_padding must be [batch, tk] = [{batch}, {tk}], got {:?}", m.shape()),
                ));
            }
            if !matches!(m.dtype(), DType::U8 | DType::I64 | DType::F32 | DType::BF16 | DType::F16) {
                return Err(Error::invalid(OP, format!("key_padding of dtype {:?}", m.dtype())));
            }
            // Read on the host (a GPU mask is copied back): the kernels take it as one byte per key.
            Some(m.detach().to_device(Device::Cpu)?.to_vec_f32()?.iter().map(|&x| x != 0.0).collect())
        }
    };
    let scale = mask.scale.unwrap_or(1.0 / (d as f32).sqrt());
    if !scale.is_finite() {
        return Err(Error::invalid(OP, format!("scale {scale} is not finite")));
    }
    let causal = mask.causal;
    let device = common_device(OP, &[&q, &k, &v])?;
    let out_shape = [batch, heads, tq, dv];
    let n_out: usize = out_shape.iter().product();

    if n_out == 0 || tk == 0 {
        // Nothing to compute (or no key at all: every row is fully masked): zeros, zero gradients.
        let (iq, ik, iv) = (q.clone(), k.clone(), v.clone());
        let node = record(OP, &[&q, &k, &v], move |_, _| {
            let zero = |t: &Tensor| -> Result<Option<Tensor>> {
                t.tracks_grad().then(|| Tensor::zeros_on(t.shape(), DType::F32, t.device())).transpose()
            };
            Ok(vec![zero(&iq)?, zero(&ik)?, zero(&iv)?])
        });
        return Ok(Tensor::zeros_on(&out_shape, DType::F32, device)?.with_node_opt(node));
    }

    let dims = Dims { heads, kv_heads, tq, tk, d, dv };
    #[cfg(feature = "cuda")]
    if let Device::Cuda(o) = device {
        return cuda::attention(o, &q, &k, &v, dims, batch, keep.as_deref(), causal, scale);
    }
    let mut out = vec![0.0f32; n_out];
    let mut lse = vec![0.0f32; batch * heads * tq];
    {
        let (qd, kd, vd) = (q.read_all::<f32>(OP)?, k.read_all::<f32>(OP)?, v.read_all::<f32>(OP)?);
        let masking = Masking { causal, keep: keep.as_deref(), scale };
        cpu::forward(view(&qd, &q), view(&kd, &k), view(&vd, &v), dims, masking, &mut out, &mut lse);
    }

    let (iq, ik, iv) = (q.clone(), k.clone(), v.clone());
    let node = record(OP, &[&q, &k, &v], move |_, g| {
        let needs = Needs { q: iq.tracks_grad(), k: ik.tracks_grad(), v: iv.tracks_grad() };
        let g = g.contiguous()?;
        let mut dq = vec![0.0f32; batch * heads * tq * d];
        let mut dk_heads = vec![0.0f32; batch * heads * tk * d];
        let mut dv_heads = vec![0.0f32; batch * heads * tk * dv];
        {
            let gd = g.read::<f32>(OP)?;
            let (qd, kd, vd) = (iq.read_all::<f32>(OP)?, ik.read_all::<f32>(OP)?, iv.read_all::<f32>(OP)?);
            let masking = Masking { causal, keep: keep.as_deref(), scale };
            cpu::backward(
                view(&qd, &iq),
                view(&kd, &ik),
                view(&vd, &iv),
                dims,
                masking,
                &gd,
                &lse,
                needs,
                &mut dq,
                &mut dk_heads,
                &mut dv_heads,
            );
        }
        let group = heads / kv_heads;
        let per_kv = |per_head: Vec<f32>, n: usize| {
            if group == 1 {
                per_head
            } else {
                cpu::sum_groups(&per_head, group, tk * n)
            }
        };
        let dq = if needs.q { Some(Tensor::from_vec(dq, &sq)?) } else { None };
        let dk = if needs.k { Some(Tensor::from_vec(per_kv(dk_heads, d), &sk)?) } else { None };
        let dv = if needs.v { Some(Tensor::from_vec(per_kv(dv_heads, dv), &sv)?) } else { None };
        Ok(vec![dq, dk, dv])
    });
    Ok(Tensor::from_op(CpuStorage::F32(out), &out_shape, node))
}
