//! Hugging Face architectures computed exactly as transformers computes them, loaded from a model
//! folder (`config.json` + safetensors). Every module keeps its Hugging Face parameter path
//! (`model.layers.0.self_attn.q_proj`), so adapter keys map one to one.
//!
//! The hooks parameter-efficient methods need:
//! - every Linear is a [`HookedLinear`] reachable by path ([`Model::visit_linears`]);
//! - [`ForwardInput::inputs_embeds`]: embeddings given directly (soft prompts before the tokens);
//! - [`ForwardInput::prefix`]: per-layer key/value prefixes, the attention mask extended to cover them;
//! - the classification head (`classifier`) is an ordinary trainable layer.
pub mod bert;
pub mod config;
mod common;
pub mod gpt2;
pub mod llama;

pub use config::{Architecture, ModelConfig};

use crate::error::{Error, Result};
use crate::nn::HookedLinear;
use crate::tensor::Tensor;
use std::path::Path;

/// Per-layer key/value prefix: `key`, `value` of shape `[batch, kv_heads, prefix_len, head_dim]`.
#[derive(Clone, Debug)]
pub struct KvPrefix {
    pub key: Tensor,
    pub value: Tensor,
}

/// Keys and values of the positions already processed, per layer (generation).
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub layers: Vec<Option<KvPrefix>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache { layers: vec![None; num_layers] }
    }
    /// Number of cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map(|kv| kv.key.shape()[2]).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a forward pass reads. Exactly one of `input_ids` / `inputs_embeds` is required.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardInput<'a> {
    /// i64 `[batch, seq]`.
    pub input_ids: Option<&'a Tensor>,
    /// f32 `[batch, seq, hidden]`, used instead of looking up `input_ids`.
    pub inputs_embeds: Option<&'a Tensor>,
    /// `[batch, cached + seq]`, 1 = attend, 0 = padding (Hugging Face's mask, without prefixes: the
    /// model prepends ones for prefix positions itself). `None` = attend everywhere.
    pub attention_mask: Option<&'a Tensor>,
    /// BERT segment ids, i64 `[batch, seq]`; zeros when absent.
    pub token_type_ids: Option<&'a Tensor>,
    /// i64 `[batch, seq]` or `[seq]`. When absent: `cached..cached+seq` for GPT-2 and LLaMA (shifted
    /// past left padding as transformers' `generate` does when a mask is given), `0..seq` for BERT.
    pub position_ids: Option<&'a Tensor>,
    /// One prefix per layer, seen by every position (prefix tuning, P-tuning v2).
    pub prefix: Option<&'a [KvPrefix]>,
}

/// What a forward pass returns.
#[derive(Clone, Debug)]
pub struct ModelOutput {
    /// The last hidden states `[batch, seq, hidden]` (after the final norm for decoders).
    pub hidden: Tensor,
    /// `[batch, seq, vocab]` for causal LMs, `[batch, labels]` for sequence classification,
    /// `[batch, seq, labels]` for token classification; `None` for a bare encoder.
    pub logits: Option<Tensor>,
}

impl ModelOutput {
    /// The output transformers' model class returns first, with its name.
    pub fn main(&self) -> (&'static str, &Tensor) {
        match &self.logits {
            Some(l) => ("logits", l),
            None => ("last_hidden_state", &self.hidden),
        }
    }
}

/// A loaded model of any supported architecture.
pub trait Model: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// Runs the model. With `cache`, keys and values of this call are appended to it and earlier
    /// ones are attended to (decoders only).
    fn forward(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Result<ModelOutput>;

    /// The input embeddings of token ids, `[batch, seq, hidden]` (what `inputs_embeds` replaces).
    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor>;

    /// Every parameter with its Hugging Face path, as `state_dict()` names it (tied weights once).
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// Calls `f` with the path and layer of every Linear (`encoder.layer.0.attention.self.query`).
    fn visit_linears(&mut self, f: &mut dyn FnMut(&str, &mut HookedLinear) -> Result<()>) -> Result<()>;

    /// Paths of every Linear, in model order.
    fn linear_paths(&mut self) -> Vec<String> {
        let mut paths = Vec::new();
        let _ = self.visit_linears(&mut |p, _| {
            paths.push(p.to_string());
            Ok(())
        });
        paths
    }

    /// Paths of the output head(s) that "all-linear" excludes (`lm_head`, `classifier`).
    fn head_paths(&self) -> Vec<String>;
}

/// Loads a model folder: `config.json` picks the architecture, weights come from
/// `model.safetensors` or a sharded index.
pub fn load(dir: impl AsRef<Path>) -> Result<Box<dyn Model>> {
    let dir = dir.as_ref();
    let config = ModelConfig::from_dir(dir)?;
    let weights = crate::io::WeightFiles::open(dir)?;
    match config.architecture {
        Architecture::BertModel | Architecture::BertForSequenceClassification | Architecture::BertForTokenClassification => {
            Ok(Box::new(bert::Bert::load(config, &weights)?))
        }
        Architecture::Gpt2LMHeadModel => Ok(Box::new(gpt2::Gpt2::load(config, &weights)?)),
        Architecture::LlamaForCausalLM => Ok(Box::new(llama::Llama::load(config, &weights)?)),
    }
}

/// The `[batch, seq]` shape of an input, from the ids or the embeddings.
pub(crate) fn batch_seq(input: &ForwardInput) -> Result<(usize, usize)> {
    match (input.input_ids, input.inputs_embeds) {
        (Some(ids), None) if ids.rank() == 2 => Ok((ids.shape()[0], ids.shape()[1])),
        (None, Some(e)) if e.rank() == 3 => Ok((e.shape()[0], e.shape()[1])),
        (Some(ids), None) => Err(Error::shape("forward", format!("input_ids must be [batch, seq], got {:?}", ids.shape()))),
        (None, Some(e)) => Err(Error::shape("forward", format!("inputs_embeds must be [batch, seq, hidden], got {:?}", e.shape()))),
        _ => Err(Error::invalid("forward", "give exactly one of input_ids and inputs_embeds")),
    }
}
