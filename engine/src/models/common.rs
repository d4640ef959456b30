//! Pieces the architectures share: weight lookup with shape checks, activations, the attention
//! call with prefixes, cache and padding mask, and position ids.
use super::{ForwardInput, KvPrefix};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::WeightFiles;
use crate::nn::{HookedLinear, LayerNorm, Linear, Module};
use crate::ops::attention::{scaled_dot_product_attention, AttentionMask};
use crate::tensor::Tensor;

/// Reads weights by Hugging Face name under an optional prefix (`bert.`), checking shapes.
pub(crate) struct Loader<'a> {
    pub weights: &'a WeightFiles,
    pub prefix: String,
}

impl Loader<'_> {
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
    pub fn has(&self, name: &str) -> bool {
        self.weights.contains(&self.name(name))
    }
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.get(&self.name(name), shape)
    }
    /// A Linear; its weight may be stored in bitsandbytes' 4-bit layout (a checkpoint transformers
    /// saved with `load_in_4bit`), which is then kept packed.
    pub fn linear(&self, path: &str, in_f: usize, out_f: usize, bias: bool) -> Result<HookedLinear> {
        let b = if bias { Some(self.get(&format!("{path}.bias"), &[out_f])?) } else { None };
        let weight_name = self.name(&format!("{path}.weight"));
        if let Some(q) = crate::quant::read_bnb4_weight(self.weights, &weight_name)? {
            if q.shape != [out_f, in_f] {
                return Err(Error::shape(
                    "load",
                    format!("4-bit `{weight_name}` has shape {:?}, the config implies [{out_f}, {in_f}]", q.shape),
                ));
            }
            return Ok(HookedLinear::new(Linear::from_packed(std::sync::Arc::new(q), b)?));
        }
        let w = self.get(&format!("{path}.weight"), &[out_f, in_f])?;
        Ok(HookedLinear::new(Linear::from_tensors(w, b)?))
    }
    pub fn layer_norm(&self, path: &str, dim: usize, eps: f32) -> Result<LayerNorm> {
        LayerNorm::from_tensors(
            Some(self.get(&format!("{path}.weight"), &[dim])?),
            Some(self.get(&format!("{path}.bias"), &[dim])?),
            eps,
        )
    }
}

/// `hidden_act` / `activation_function` of a config.
pub(crate) fn activation(name: &str, x: &Tensor) -> Result<Tensor> {
    match name {
        "gelu" => x.gelu(),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => x.gelu_tanh(),
        "relu" => x.relu(),
        "silu" | "swish" => x.silu(),
        "tanh" => x.tanh(),
        other => Err(Error::invalid("activation", format!("unsupported activation `{other}`"))),
    }
}

/// `[b, t, h·d]` → `[b, h, t, d]` (a view).
pub(crate) fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (b, t) = (x.shape()[0], x.shape()[1]);
    x.reshape(&[b, t, heads, head_dim])?.transpose(1, 2)
}

/// `[b, h, t, d]` → `[b, t, h·d]`.
pub(crate) fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let s = x.shape().to_vec();
    x.transpose(1, 2)?.contiguous()?.reshape(&[s[0], s[2], s[1] * s[3]])
}

/// The attention of one layer. `k`, `v` are this call's keys/values `[b, kv_heads, t, d]`; the
/// layer's prefix and cached positions go in front. With a cache slot, the slot is updated to the
/// cached + new keys/values (prefixes are not cached: they are given again on every call).
pub(crate) fn attend(
    q: &Tensor,
    k: Tensor,
    v: Tensor,
    prefix: Option<&KvPrefix>,
    cache_slot: Option<&mut Option<KvPrefix>>,
    mask: Option<&Tensor>,
    causal: bool,
) -> Result<Tensor> {
    let (mut k, mut v) = (k, v);
    if let Some(slot) = cache_slot {
        if let Some(past) = slot.as_ref() {
            k = Tensor::cat(&[&past.key, &k], 2)?;
            v = Tensor::cat(&[&past.value, &v], 2)?;
        }
        *slot = Some(KvPrefix { key: k.clone(), value: v.clone() });
    }
    if let Some(p) = prefix {
        let b = k.shape()[0];
        let (pk, pv) = (expand_batch(&p.key, b)?, expand_batch(&p.value, b)?);
        k = Tensor::cat(&[&pk, &k], 2)?;
        v = Tensor::cat(&[&pv, &v], 2)?;
    }
    let mut m = AttentionMask { causal, key_padding: None, scale: None };
    if let Some(mask) = mask {
        m.key_padding = Some(mask);
    }
    scaled_dot_product_attention(q, &k, &v, &m)
}

/// A prefix given for batch 1 is shared by the whole batch.
fn expand_batch(t: &Tensor, batch: usize) -> Result<Tensor> {
    if t.shape()[0] == batch {
        return Ok(t.clone());
    }
    let mut s = t.shape().to_vec();
    s[0] = batch;
    t.broadcast_as(&s)
}

/// Checks the per-layer prefixes and returns their length (0 without).
pub(crate) fn prefix_len(
    input: &ForwardInput,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    batch: usize,
) -> Result<usize> {
    let Some(prefix) = input.prefix else { return Ok(0) };
    if prefix.len() != layers {
        return Err(Error::shape("forward", format!("{} prefixes given for {layers} layers", prefix.len())));
    }
    let p = prefix[0].key.shape().get(2).copied().unwrap_or(0);
    for (i, kv) in prefix.iter().enumerate() {
        for t in [&kv.key, &kv.value] {
            let s = t.shape();
            if s.len() != 4 || (s[0] != batch && s[0] != 1) || s[1] != kv_heads || s[2] != p || s[3] != head_dim {
                return Err(Error::shape(
                    "forward",
                    format!(
                        "prefix of layer {i} has shape {s:?}, expected [{batch} or 1, {kv_heads}, {p}, {head_dim}]"
                    ),
                ));
            }
        }
    }
    Ok(p)
}

/// The key padding mask over `[prefix | cached | new]` positions, f32 `[b, p + total]`, or `None` when
/// everything is attended to.
pub(crate) fn key_mask(input: &ForwardInput, batch: usize, prefix: usize, total: usize) -> Result<Option<Tensor>> {
    let Some(mask) = input.attention_mask else { return Ok(None) };
    if mask.shape() != [batch, total] {
        return Err(Error::shape(
            "forward",
            format!(
                "attention_mask has shape {:?}, expected [{batch}, {total}] (cached + new positions)",
                mask.shape()
            ),
        ));
    }
    let mask = mask.to_dtype(DType::F32)?;
    if prefix == 0 {
        return Ok(Some(mask));
    }
    Ok(Some(Tensor::cat(&[&Tensor::full_on(1.0, &[batch, prefix], DType::F32, mask.device())?, &mask], 1)?))
}

/// Position ids: given, or `offset..offset+seq` for every row (transformers' default, where the
/// offset counts cached positions and prefixes, which transformers sees as cached).
pub(crate) fn positions(input: &ForwardInput, batch: usize, seq: usize, offset: usize) -> Result<Tensor> {
    match input.position_ids {
        Some(p) if p.rank() == 1 && p.shape()[0] == seq => p.unsqueeze(0)?.broadcast_as(&[batch, seq])?.contiguous(),
        Some(p) if p.shape() == [batch, seq] => Ok(p.clone()),
        Some(p) => {
            Err(Error::shape("forward", format!("position_ids has shape {:?}, expected [{batch}, {seq}]", p.shape())))
        }
        None => {
            let row: Vec<i64> = (offset as i64..(offset + seq) as i64).collect();
            Tensor::from_vec(row, &[1, seq])?.broadcast_as(&[batch, seq])?.contiguous()
        }
    }
}

/// Visits a layer's own parameters (not a hook's) under `prefix`, in `named_parameters` order.
pub(crate) fn visit_module(
    prefix: &str,
    m: &mut dyn Module,
    f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
) -> Result<()> {
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    for (n, t) in names.iter().zip(m.parameters_mut()) {
        f(&format!("{prefix}.{n}"), t)?;
    }
    Ok(())
}
