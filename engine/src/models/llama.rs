//! LLaMA (`LlamaForCausalLM`, and the LLaMA-shaped Mistral/Qwen2): pre-norm decoder with RMSNorm,
//! rotary positions (rotate-half convention), grouped-query attention and a SwiGLU MLP.
use super::common::{attend, key_mask, merge_heads, positions, prefix_len, split_heads, visit_module, Loader};
use super::{batch_seq, ForwardInput, KvCache, KvPrefix, Model, ModelConfig, ModelOutput};
use crate::error::{Error, Result};
use crate::io::WeightFiles;
use crate::nn::{Embedding, HookedLinear, Linear, Module, ResidualHook, ResidualHooks, RmsNorm, Sublayer};
use crate::ops::rope::rope_tables;
use crate::tensor::Tensor;
use std::sync::Arc;

pub struct LlamaLayer {
    pub input_layernorm: RmsNorm,
    pub q_proj: HookedLinear,
    pub k_proj: HookedLinear,
    pub v_proj: HookedLinear,
    pub o_proj: HookedLinear,
    pub post_attention_layernorm: RmsNorm,
    pub gate_proj: HookedLinear,
    pub up_proj: HookedLinear,
    pub down_proj: HookedLinear,
}

/// Picks one projection out of a layer (for visiting the Linears by name).
type LayerField = fn(&mut LlamaLayer) -> &mut HookedLinear;

pub struct Llama {
    config: ModelConfig,
    pub embed_tokens: Embedding,
    pub layers: Vec<LlamaLayer>,
    pub norm: RmsNorm,
    pub lm_head: HookedLinear,
    /// Where each layer adds its attention / MLP output to the residual (adapters).
    pub residual_hooks: ResidualHooks,
}

impl Llama {
    pub fn load(config: ModelConfig, weights: &WeightFiles) -> Result<Llama> {
        let l = Loader { weights, prefix: "model.".into() };
        let c = &config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q_out, kv_out) = (c.num_heads * hd, c.num_kv_heads * hd);
        let rms = |name: &str| -> Result<RmsNorm> { RmsNorm::from_tensor(l.get(name, &[h])?, c.norm_eps) };
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("layers.{i}");
            layers.push(LlamaLayer {
                input_layernorm: rms(&format!("{p}.input_layernorm.weight"))?,
                q_proj: l.linear(&format!("{p}.self_attn.q_proj"), h, q_out, c.qkv_bias)?,
                k_proj: l.linear(&format!("{p}.self_attn.k_proj"), h, kv_out, c.qkv_bias)?,
                v_proj: l.linear(&format!("{p}.self_attn.v_proj"), h, kv_out, c.qkv_bias)?,
                o_proj: l.linear(&format!("{p}.self_attn.o_proj"), q_out, h, c.o_bias)?,
                post_attention_layernorm: rms(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_proj: l.linear(&format!("{p}.mlp.gate_proj"), h, c.intermediate_size, c.mlp_bias)?,
                up_proj: l.linear(&format!("{p}.mlp.up_proj"), h, c.intermediate_size, c.mlp_bias)?,
                down_proj: l.linear(&format!("{p}.mlp.down_proj"), c.intermediate_size, h, c.mlp_bias)?,
            });
        }
        let embed_tokens = Embedding::from_tensor(l.get("embed_tokens.weight", &[c.vocab_size, h])?)?;
        let lm_head = if !c.tie_word_embeddings && weights.contains("lm_head.weight") {
            Loader { weights, prefix: String::new() }.linear("lm_head", h, c.vocab_size, false)?
        } else if c.tie_word_embeddings {
            HookedLinear::new(Linear::from_tensors(embed_tokens.weight.clone(), None)?)
        } else {
            return Err(Error::invalid(
                "llama",
                "tie_word_embeddings is false but the checkpoint has no lm_head.weight",
            ));
        };
        Ok(Llama {
            norm: rms("norm.weight")?,
            embed_tokens,
            layers,
            lm_head,
            residual_hooks: ResidualHooks::default(),
            config,
        })
    }

    fn layer_names(i: usize) -> [(String, LayerField); 7] {
        let p = format!("model.layers.{i}");
        [
            (format!("{p}.self_attn.q_proj"), |l| &mut l.q_proj),
            (format!("{p}.self_attn.k_proj"), |l| &mut l.k_proj),
            (format!("{p}.self_attn.v_proj"), |l| &mut l.v_proj),
            (format!("{p}.self_attn.o_proj"), |l| &mut l.o_proj),
            (format!("{p}.mlp.gate_proj"), |l| &mut l.gate_proj),
            (format!("{p}.mlp.up_proj"), |l| &mut l.up_proj),
            (format!("{p}.mlp.down_proj"), |l| &mut l.down_proj),
        ]
    }
}

impl Model for Llama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward(&self, input: &ForwardInput, mut cache: Option<&mut KvCache>) -> Result<ModelOutput> {
        let c = &self.config;
        let (b, t) = batch_seq(input)?;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let p = prefix_len(input, c.num_layers, nkv, hd, b)?;
        let cached = cache.as_ref().map(|k| k.len()).unwrap_or(0);
        if let Some(w) = c.sliding_window {
            if p + cached + t > w {
                return Err(Error::invalid(
                    "llama",
                    format!(
                        "{} positions exceed the sliding attention window of {w}, which is not implemented",
                        p + cached + t
                    ),
                ));
            }
        }
        if let Some(k) = cache.as_deref_mut() {
            if k.layers.len() != c.num_layers {
                *k = KvCache::new(c.num_layers);
            }
        }
        let mut x = match input.inputs_embeds {
            Some(e) => e.clone(),
            None => self.embed_tokens(input.input_ids.ok_or_else(|| Error::invalid("llama", "no input"))?)?,
        };
        let pos = positions(input, b, t, p + cached)?;
        // The tables are made where the positions are (the host) and used where the activations are.
        let (cos, sin) = rope_tables(&pos, hd, c.rope_theta)?;
        let (cos, sin) = (cos.to_device_of(&x)?, sin.to_device_of(&x)?);
        let mask = key_mask(input, b, p, cached + t)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let hn = layer.input_layernorm.forward(&x)?;
            let q = split_heads(&layer.q_proj.forward(&hn)?, nh, hd)?.rope(&cos, &sin)?;
            let k = split_heads(&layer.k_proj.forward(&hn)?, nkv, hd)?.rope(&cos, &sin)?;
            let v = split_heads(&layer.v_proj.forward(&hn)?, nkv, hd)?;
            let slot = cache.as_deref_mut().map(|k| &mut k.layers[i]);
            let prefix: Option<&KvPrefix> = input.prefix.map(|pr| &pr[i]);
            let ctx = merge_heads(&attend(&q, k, v, prefix, slot, mask.as_ref(), true)?)?;
            x = self.residual_hooks.apply(i, Sublayer::Attention, &layer.o_proj.forward(&ctx)?, &x, None)?;
            let hn = layer.post_attention_layernorm.forward(&x)?;
            let gated = layer.gate_proj.forward(&hn)?.silu()?.mul(&layer.up_proj.forward(&hn)?)?;
            x = self.residual_hooks.apply(i, Sublayer::FeedForward, &layer.down_proj.forward(&gated)?, &x, None)?;
        }
        let hidden = self.norm.forward(&x)?;
        let logits = self.lm_head.forward(&hidden)?;
        Ok(ModelOutput { hidden, logits: Some(logits) })
    }

    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let mut add = |name: String, params: Vec<(String, Tensor)>| {
            out.extend(params.into_iter().map(|(n, t)| (format!("{name}.{n}"), t)));
        };
        add("model.embed_tokens".into(), self.embed_tokens.named_parameters());
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            add(format!("{p}.self_attn.q_proj"), l.q_proj.named_parameters());
            add(format!("{p}.self_attn.k_proj"), l.k_proj.named_parameters());
            add(format!("{p}.self_attn.v_proj"), l.v_proj.named_parameters());
            add(format!("{p}.self_attn.o_proj"), l.o_proj.named_parameters());
            add(format!("{p}.mlp.gate_proj"), l.gate_proj.named_parameters());
            add(format!("{p}.mlp.up_proj"), l.up_proj.named_parameters());
            add(format!("{p}.mlp.down_proj"), l.down_proj.named_parameters());
            add(format!("{p}.input_layernorm"), l.input_layernorm.named_parameters());
            add(format!("{p}.post_attention_layernorm"), l.post_attention_layernorm.named_parameters());
        }
        add("model.norm".into(), self.norm.named_parameters());
        if !self.lm_head.base.weight.same_storage(&self.embed_tokens.weight) {
            add("lm_head".into(), self.lm_head.named_parameters());
        }
        out
    }

    fn visit_parameters(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        visit_module("model.embed_tokens", &mut self.embed_tokens, f)?;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, get) in Llama::layer_names(i) {
                visit_module(&name, get(layer), f)?;
            }
            let p = format!("model.layers.{i}");
            visit_module(&format!("{p}.input_layernorm"), &mut layer.input_layernorm, f)?;
            visit_module(&format!("{p}.post_attention_layernorm"), &mut layer.post_attention_layernorm, f)?;
        }
        visit_module("model.norm", &mut self.norm, f)?;
        if !self.lm_head.base.weight.same_storage(&self.embed_tokens.weight) {
            visit_module("lm_head", &mut self.lm_head, f)?;
        }
        Ok(())
    }

    fn visit_linears(&mut self, f: &mut dyn FnMut(&str, &mut HookedLinear) -> Result<()>) -> Result<()> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, get) in Llama::layer_names(i) {
                f(&name, get(layer))?;
            }
        }
        f("lm_head", &mut self.lm_head)
    }

    fn head_paths(&self) -> Vec<String> {
        vec!["lm_head".into()]
    }

    fn set_residual_hook(&mut self, layer: usize, site: Sublayer, hook: Option<Arc<dyn ResidualHook>>) -> Result<()> {
        self.residual_hooks.set(layer, site, hook, self.layers.len())
    }
}
