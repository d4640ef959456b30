//! BERT (`BertModel`, `BertForSequenceClassification`, `BertForTokenClassification`), as transformers
//! computes it: post-norm encoder layers, learned absolute positions, token types, tanh pooler.
use super::common::{
    activation, attend, key_mask, merge_heads, positions, prefix_len, split_heads, visit_module, Loader,
};
use super::{batch_seq, Architecture, ForwardInput, KvCache, Model, ModelConfig, ModelOutput};
use crate::error::{Error, Result};
use crate::io::WeightFiles;
use crate::nn::{BlockNorm, Embedding, HookedLinear, LayerNorm, Linear, Module, ResidualHook, ResidualHooks, Sublayer};
use crate::tensor::Tensor;
use std::sync::Arc;

pub struct BertLayer {
    pub query: HookedLinear,
    pub key: HookedLinear,
    pub value: HookedLinear,
    pub attention_output: HookedLinear,
    pub attention_norm: LayerNorm,
    pub intermediate: HookedLinear,
    pub output: HookedLinear,
    pub output_norm: LayerNorm,
}

pub struct Bert {
    config: ModelConfig,
    /// `bert.` for the task models, empty for `BertModel`: module paths as transformers names them.
    prefix: String,
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Option<Embedding>,
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<BertLayer>,
    pub pooler: Option<HookedLinear>,
    pub classifier: Option<HookedLinear>,
    /// Parameters the checkpoint lacked and that were freshly initialized (e.g. a new classifier),
    /// as transformers warns about them.
    pub newly_initialized: Vec<String>,
    /// Where each layer adds its attention / feed-forward output to the residual (adapters).
    pub residual_hooks: ResidualHooks,
}

impl Bert {
    pub fn load(config: ModelConfig, weights: &WeightFiles) -> Result<Bert> {
        let task = config.architecture != Architecture::BertModel;
        let prefix = if task { "bert." } else { "" }.to_string();
        // The file may or may not carry the `bert.` prefix (a bare encoder fine-tuned for a task).
        let file_prefix = if weights.contains("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        let l = Loader { weights, prefix: file_prefix.to_string() };
        let (h, c) = (config.hidden_size, &config);
        if c.num_kv_heads != c.num_heads || c.head_dim * c.num_heads != h {
            return Err(Error::invalid("bert", "BERT needs num_heads · head_dim = hidden_size"));
        }
        let emb = |name: &str, rows: usize| -> Result<Embedding> { Embedding::from_tensor(l.get(name, &[rows, h])?) };
        let token_type_embeddings = if c.type_vocab_size > 0 {
            Some(emb("embeddings.token_type_embeddings.weight", c.type_vocab_size)?)
        } else {
            None
        };
        let max_pos = l
            .weights
            .info(&l.name("embeddings.position_embeddings.weight"))
            .map(|i| i.shape[0])
            .ok_or_else(|| Error::invalid("bert", "missing embeddings.position_embeddings.weight"))?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(BertLayer {
                query: l.linear(&format!("{p}.attention.self.query"), h, h, true)?,
                key: l.linear(&format!("{p}.attention.self.key"), h, h, true)?,
                value: l.linear(&format!("{p}.attention.self.value"), h, h, true)?,
                attention_output: l.linear(&format!("{p}.attention.output.dense"), h, h, true)?,
                attention_norm: l.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, c.norm_eps)?,
                intermediate: l.linear(&format!("{p}.intermediate.dense"), h, c.intermediate_size, true)?,
                output: l.linear(&format!("{p}.output.dense"), c.intermediate_size, h, true)?,
                output_norm: l.layer_norm(&format!("{p}.output.LayerNorm"), h, c.norm_eps)?,
            });
        }
        let mut newly_initialized = Vec::new();
        let std = c.raw.get("initializer_range").and_then(|v| v.as_f64()).unwrap_or(0.02) as f32;
        // transformers' `_init_weights`: Linear weight N(0, initializer_range), bias 0.
        let fresh = |path: &str, in_f: usize, out_f: usize, seed: u64, new: &mut Vec<String>| -> Result<HookedLinear> {
            new.push(format!(
                "{prefix_path}{path}.weight",
                prefix_path = if path == "classifier" { "" } else { &prefix }
            ));
            let w = Tensor::randn(&[out_f, in_f], 0.0, std, seed)?;
            Ok(HookedLinear::new(Linear::from_tensors(w, Some(Tensor::zeros(&[out_f], crate::DType::F32)))?))
        };
        let wants_pooler = c.architecture != Architecture::BertForTokenClassification;
        let pooler = if !wants_pooler {
            None
        } else if l.has("pooler.dense.weight") {
            Some(l.linear("pooler.dense", h, h, true)?)
        } else {
            Some(fresh("pooler.dense", h, h, 0x9001, &mut newly_initialized)?)
        };
        let classifier = if !task {
            None
        } else if weights.contains("classifier.weight") {
            let cl = Loader { weights, prefix: String::new() };
            let labels = weights.info("classifier.weight").map(|i| i.shape[0]).unwrap_or(c.num_labels);
            Some(cl.linear("classifier", h, labels, true)?)
        } else {
            Some(fresh("classifier", h, c.num_labels, 0xc1a5, &mut newly_initialized)?)
        };
        Ok(Bert {
            word_embeddings: emb("embeddings.word_embeddings.weight", c.vocab_size)?,
            position_embeddings: emb("embeddings.position_embeddings.weight", max_pos)?,
            token_type_embeddings,
            embeddings_norm: l.layer_norm("embeddings.LayerNorm", h, c.norm_eps)?,
            layers,
            pooler,
            classifier,
            newly_initialized,
            residual_hooks: ResidualHooks::default(),
            prefix,
            config,
        })
    }

    fn layer_forward(
        &self,
        index: usize,
        layer: &BertLayer,
        x: &Tensor,
        prefix: Option<&super::KvPrefix>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let q = split_heads(&layer.query.forward(x)?, c.num_heads, c.head_dim)?;
        let k = split_heads(&layer.key.forward(x)?, c.num_heads, c.head_dim)?;
        let v = split_heads(&layer.value.forward(x)?, c.num_heads, c.head_dim)?;
        let ctx = merge_heads(&attend(&q, k, v, prefix, None, mask, false)?)?;
        let hooks = &self.residual_hooks;
        let attn_norm = Some(BlockNorm::Layer(&layer.attention_norm));
        let attn = hooks.apply(index, Sublayer::Attention, &layer.attention_output.forward(&ctx)?, x, attn_norm)?;
        let inter = activation(&c.hidden_act, &layer.intermediate.forward(&attn)?)?;
        let out_norm = Some(BlockNorm::Layer(&layer.output_norm));
        hooks.apply(index, Sublayer::FeedForward, &layer.output.forward(&inter)?, &attn, out_norm)
    }
}

impl Model for Bert {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Result<ModelOutput> {
        if cache.is_some() {
            return Err(Error::invalid("bert", "BERT is an encoder: it has no key/value cache"));
        }
        let c = &self.config;
        let (b, t) = batch_seq(input)?;
        let p = prefix_len(input, c.num_layers, c.num_heads, c.head_dim, b)?;
        let words = match input.inputs_embeds {
            Some(e) => e.clone(),
            None => self.embed_tokens(input.input_ids.ok_or_else(|| Error::invalid("bert", "no input"))?)?,
        };
        let pos = positions(input, b, t, p)?;
        let mut x = words.add(&self.position_embeddings.forward(&pos)?)?;
        if let Some(tt) = &self.token_type_embeddings {
            let types = match input.token_type_ids {
                Some(ids) => ids.clone(),
                None => Tensor::zeros(&[b, t], crate::DType::I64),
            };
            x = x.add(&tt.forward(&types)?)?;
        }
        x = self.embeddings_norm.forward(&x)?;
        let mask = key_mask(input, b, p, t)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(i, layer, &x, input.prefix.map(|pr| &pr[i]), mask.as_ref())?;
        }
        let logits = match (c.architecture, &self.classifier) {
            (Architecture::BertForSequenceClassification, Some(cl)) => {
                let pooler = self.pooler.as_ref().ok_or_else(|| Error::invalid("bert", "no pooler"))?;
                let first = x.narrow(1, 0, 1)?.squeeze(1)?;
                Some(cl.forward(&pooler.forward(&first)?.tanh()?)?)
            }
            (Architecture::BertForTokenClassification, Some(cl)) => Some(cl.forward(&x)?),
            _ => None,
        };
        Ok(ModelOutput { hidden: x, logits })
    }

    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        self.word_embeddings.forward(ids)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let p = &self.prefix;
        let mut out = Vec::new();
        let mut add = |name: String, params: Vec<(String, Tensor)>| {
            out.extend(params.into_iter().map(|(n, t)| (format!("{name}.{n}"), t)));
        };
        add(format!("{p}embeddings.word_embeddings"), self.word_embeddings.named_parameters());
        add(format!("{p}embeddings.position_embeddings"), self.position_embeddings.named_parameters());
        if let Some(tt) = &self.token_type_embeddings {
            add(format!("{p}embeddings.token_type_embeddings"), tt.named_parameters());
        }
        add(format!("{p}embeddings.LayerNorm"), self.embeddings_norm.named_parameters());
        for (i, l) in self.layers.iter().enumerate() {
            let q = format!("{p}encoder.layer.{i}");
            add(format!("{q}.attention.self.query"), l.query.named_parameters());
            add(format!("{q}.attention.self.key"), l.key.named_parameters());
            add(format!("{q}.attention.self.value"), l.value.named_parameters());
            add(format!("{q}.attention.output.dense"), l.attention_output.named_parameters());
            add(format!("{q}.attention.output.LayerNorm"), l.attention_norm.named_parameters());
            add(format!("{q}.intermediate.dense"), l.intermediate.named_parameters());
            add(format!("{q}.output.dense"), l.output.named_parameters());
            add(format!("{q}.output.LayerNorm"), l.output_norm.named_parameters());
        }
        if let Some(pl) = &self.pooler {
            add(format!("{p}pooler.dense"), pl.named_parameters());
        }
        if let Some(cl) = &self.classifier {
            add("classifier".to_string(), cl.named_parameters());
        }
        out
    }

    fn visit_parameters(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        let p = self.prefix.clone();
        visit_module(&format!("{p}embeddings.word_embeddings"), &mut self.word_embeddings, f)?;
        visit_module(&format!("{p}embeddings.position_embeddings"), &mut self.position_embeddings, f)?;
        if let Some(tt) = &mut self.token_type_embeddings {
            visit_module(&format!("{p}embeddings.token_type_embeddings"), tt, f)?;
        }
        visit_module(&format!("{p}embeddings.LayerNorm"), &mut self.embeddings_norm, f)?;
        for (i, l) in self.layers.iter_mut().enumerate() {
            let q = format!("{p}encoder.layer.{i}");
            visit_module(&format!("{q}.attention.self.query"), &mut l.query, f)?;
            visit_module(&format!("{q}.attention.self.key"), &mut l.key, f)?;
            visit_module(&format!("{q}.attention.self.value"), &mut l.value, f)?;
            visit_module(&format!("{q}.attention.output.dense"), &mut l.attention_output, f)?;
            visit_module(&format!("{q}.attention.output.LayerNorm"), &mut l.attention_norm, f)?;
            visit_module(&format!("{q}.intermediate.dense"), &mut l.intermediate, f)?;
            visit_module(&format!("{q}.output.dense"), &mut l.output, f)?;
            visit_module(&format!("{q}.output.LayerNorm"), &mut l.output_norm, f)?;
        }
        if let Some(pl) = &mut self.pooler {
            visit_module(&format!("{p}pooler.dense"), pl, f)?;
        }
        if let Some(cl) = &mut self.classifier {
            visit_module("classifier", cl, f)?;
        }
        Ok(())
    }

    fn visit_linears(&mut self, f: &mut dyn FnMut(&str, &mut HookedLinear) -> Result<()>) -> Result<()> {
        let p = self.prefix.clone();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let q = format!("{p}encoder.layer.{i}");
            f(&format!("{q}.attention.self.query"), &mut l.query)?;
            f(&format!("{q}.attention.self.key"), &mut l.key)?;
            f(&format!("{q}.attention.self.value"), &mut l.value)?;
            f(&format!("{q}.attention.output.dense"), &mut l.attention_output)?;
            f(&format!("{q}.intermediate.dense"), &mut l.intermediate)?;
            f(&format!("{q}.output.dense"), &mut l.output)?;
        }
        if let Some(pl) = &mut self.pooler {
            f(&format!("{p}pooler.dense"), pl)?;
        }
        if let Some(cl) = &mut self.classifier {
            f("classifier", cl)?;
        }
        Ok(())
    }

    fn head_paths(&self) -> Vec<String> {
        self.classifier.iter().map(|_| "classifier".to_string()).collect()
    }

    fn set_residual_hook(&mut self, layer: usize, site: Sublayer, hook: Option<Arc<dyn ResidualHook>>) -> Result<()> {
        self.residual_hooks.set(layer, site, hook, self.layers.len())
    }
}
