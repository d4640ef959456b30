//! GPT-2 (`GPT2LMHeadModel`): pre-norm decoder, learned positions, fused q/k/v projection. Its Conv1D
//! weights are stored `[in, out]`; each becomes a Linear whose `[out, in]` weight is a transposed view
//! of the file's tensor (no copy). The LM head is tied to the token embeddings.
use super::common::{
    activation, attend, key_mask, merge_heads, positions, prefix_len, split_heads, visit_module, Loader,
};
use super::{batch_seq, ForwardInput, KvCache, KvPrefix, Model, ModelConfig, ModelOutput};
use crate::error::{Error, Result};
use crate::io::WeightFiles;
use crate::nn::{Embedding, HookedLinear, LayerNorm, Linear, Module, ResidualHook, ResidualHooks, Sublayer};
use crate::tensor::Tensor;
use std::sync::Arc;

pub struct Gpt2Block {
    pub ln_1: LayerNorm,
    pub c_attn: HookedLinear,
    pub attn_c_proj: HookedLinear,
    pub ln_2: LayerNorm,
    pub c_fc: HookedLinear,
    pub mlp_c_proj: HookedLinear,
}

pub struct Gpt2 {
    config: ModelConfig,
    pub wte: Embedding,
    pub wpe: Embedding,
    pub blocks: Vec<Gpt2Block>,
    pub ln_f: LayerNorm,
    /// Tied to `wte` (same tensor).
    pub lm_head: HookedLinear,
    /// Where each block adds its attention / MLP output to the residual (adapters).
    pub residual_hooks: ResidualHooks,
}

/// A Conv1D `[in, out]` weight as a Linear (transposed view) with its bias.
fn conv1d(l: &Loader, path: &str, in_f: usize, out_f: usize) -> Result<HookedLinear> {
    let w = l.get(&format!("{path}.weight"), &[in_f, out_f])?;
    let b = l.get(&format!("{path}.bias"), &[out_f])?;
    Ok(HookedLinear::new(Linear::from_tensors(w.t()?, Some(b))?))
}

/// Named parameters of a Conv1D layer as transformers stores them (`weight` back to `[in, out]`).
fn conv1d_params(layer: &HookedLinear) -> Vec<(String, Tensor)> {
    layer
        .named_parameters()
        .into_iter()
        .map(|(n, t)| if n == "weight" { (n, t.t().unwrap_or(t)) } else { (n, t) })
        .collect()
}

impl Gpt2 {
    pub fn load(config: ModelConfig, weights: &WeightFiles) -> Result<Gpt2> {
        let file_prefix = if weights.contains("transformer.wte.weight") { "transformer." } else { "" };
        let l = Loader { weights, prefix: file_prefix.to_string() };
        let (h, c) = (config.hidden_size, &config);
        let n_pos = l
            .weights
            .info(&l.name("wpe.weight"))
            .map(|i| i.shape[0])
            .ok_or_else(|| Error::invalid("gpt2", "missing wpe.weight"))?;
        let wte = Embedding::from_tensor(l.get("wte.weight", &[c.vocab_size, h])?)?;
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("h.{i}");
            blocks.push(Gpt2Block {
                ln_1: l.layer_norm(&format!("{p}.ln_1"), h, c.norm_eps)?,
                c_attn: conv1d(&l, &format!("{p}.attn.c_attn"), h, 3 * h)?,
                attn_c_proj: conv1d(&l, &format!("{p}.attn.c_proj"), h, h)?,
                ln_2: l.layer_norm(&format!("{p}.ln_2"), h, c.norm_eps)?,
                c_fc: conv1d(&l, &format!("{p}.mlp.c_fc"), h, c.intermediate_size)?,
                mlp_c_proj: conv1d(&l, &format!("{p}.mlp.c_proj"), c.intermediate_size, h)?,
            });
        }
        let lm_head = if weights.contains("lm_head.weight") && !c.tie_word_embeddings {
            Loader { weights, prefix: String::new() }.linear("lm_head", h, c.vocab_size, false)?
        } else {
            HookedLinear::new(Linear::from_tensors(wte.weight.clone(), None)?)
        };
        Ok(Gpt2 {
            wpe: Embedding::from_tensor(l.get("wpe.weight", &[n_pos, h])?)?,
            ln_f: l.layer_norm("ln_f", h, c.norm_eps)?,
            wte,
            blocks,
            lm_head,
            residual_hooks: ResidualHooks::default(),
            config,
        })
    }
}

impl Model for Gpt2 {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward(&self, input: &ForwardInput, mut cache: Option<&mut KvCache>) -> Result<ModelOutput> {
        let c = &self.config;
        let (b, t) = batch_seq(input)?;
        let (nh, hd) = (c.num_heads, c.head_dim);
        let p = prefix_len(input, c.num_layers, nh, hd, b)?;
        let cached = cache.as_ref().map(|k| k.len()).unwrap_or(0);
        if let Some(k) = cache.as_deref_mut() {
            if k.layers.len() != c.num_layers {
                *k = KvCache::new(c.num_layers);
            }
        }
        let words = match input.inputs_embeds {
            Some(e) => e.clone(),
            None => self.embed_tokens(input.input_ids.ok_or_else(|| Error::invalid("gpt2", "no input"))?)?,
        };
        let pos = positions(input, b, t, p + cached)?;
        let mut x = words.add(&self.wpe.forward(&pos)?)?;
        let mask = key_mask(input, b, p, cached + t)?;
        for (i, blk) in self.blocks.iter().enumerate() {
            let qkv = blk.c_attn.forward(&blk.ln_1.forward(&x)?)?;
            let h = c.hidden_size;
            let q = split_heads(&qkv.narrow(2, 0, h)?, nh, hd)?;
            let k = split_heads(&qkv.narrow(2, h, h)?, nh, hd)?;
            let v = split_heads(&qkv.narrow(2, 2 * h, h)?, nh, hd)?;
            let slot = cache.as_deref_mut().map(|k| &mut k.layers[i]);
            let prefix: Option<&KvPrefix> = input.prefix.map(|pr| &pr[i]);
            let ctx = merge_heads(&attend(&q, k, v, prefix, slot, mask.as_ref(), true)?)?;
            x = self.residual_hooks.apply(i, Sublayer::Attention, &blk.attn_c_proj.forward(&ctx)?, &x, None)?;
            let ff = activation(&c.hidden_act, &blk.c_fc.forward(&blk.ln_2.forward(&x)?)?)?;
            x = self.residual_hooks.apply(i, Sublayer::FeedForward, &blk.mlp_c_proj.forward(&ff)?, &x, None)?;
        }
        let hidden = self.ln_f.forward(&x)?;
        let logits = self.lm_head.forward(&hidden)?;
        Ok(ModelOutput { hidden, logits: Some(logits) })
    }

    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        self.wte.forward(ids)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let mut add = |name: String, params: Vec<(String, Tensor)>| {
            out.extend(params.into_iter().map(|(n, t)| (format!("{name}.{n}"), t)));
        };
        add("transformer.wte".into(), self.wte.named_parameters());
        add("transformer.wpe".into(), self.wpe.named_parameters());
        for (i, blk) in self.blocks.iter().enumerate() {
            let p = format!("transformer.h.{i}");
            add(format!("{p}.ln_1"), blk.ln_1.named_parameters());
            add(format!("{p}.attn.c_attn"), conv1d_params(&blk.c_attn));
            add(format!("{p}.attn.c_proj"), conv1d_params(&blk.attn_c_proj));
            add(format!("{p}.ln_2"), blk.ln_2.named_parameters());
            add(format!("{p}.mlp.c_fc"), conv1d_params(&blk.c_fc));
            add(format!("{p}.mlp.c_proj"), conv1d_params(&blk.mlp_c_proj));
        }
        add("transformer.ln_f".into(), self.ln_f.named_parameters());
        if !self.lm_head.base.weight.same_storage(&self.wte.weight) {
            add("lm_head".into(), self.lm_head.named_parameters());
        }
        out
    }

    fn visit_parameters(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        visit_module("transformer.wte", &mut self.wte, f)?;
        visit_module("transformer.wpe", &mut self.wpe, f)?;
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            let p = format!("transformer.h.{i}");
            visit_module(&format!("{p}.ln_1"), &mut blk.ln_1, f)?;
            visit_module(&format!("{p}.attn.c_attn"), &mut blk.c_attn, f)?;
            visit_module(&format!("{p}.attn.c_proj"), &mut blk.attn_c_proj, f)?;
            visit_module(&format!("{p}.ln_2"), &mut blk.ln_2, f)?;
            visit_module(&format!("{p}.mlp.c_fc"), &mut blk.c_fc, f)?;
            visit_module(&format!("{p}.mlp.c_proj"), &mut blk.mlp_c_proj, f)?;
        }
        visit_module("transformer.ln_f", &mut self.ln_f, f)?;
        if !self.lm_head.base.weight.same_storage(&self.wte.weight) {
            visit_module("lm_head", &mut self.lm_head, f)?;
        }
        Ok(())
    }

    fn visit_linears(&mut self, f: &mut dyn FnMut(&str, &mut HookedLinear) -> Result<()>) -> Result<()> {
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            let p = format!("transformer.h.{i}");
            f(&format!("{p}.attn.c_attn"), &mut blk.c_attn)?;
            f(&format!("{p}.attn.c_proj"), &mut blk.attn_c_proj)?;
            f(&format!("{p}.mlp.c_fc"), &mut blk.c_fc)?;
            f(&format!("{p}.mlp.c_proj"), &mut blk.mlp_c_proj)?;
        }
        f("lm_head", &mut self.lm_head)
    }

    fn head_paths(&self) -> Vec<String> {
        vec!["lm_head".into()]
    }

    fn set_residual_hook(&mut self, layer: usize, site: Sublayer, hook: Option<Arc<dyn ResidualHook>>) -> Result<()> {
        self.residual_hooks.set(layer, site, hook, self.blocks.len())
    }
}
