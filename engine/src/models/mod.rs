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
pub mod chat_template;
mod common;
pub mod config;
pub mod gpt2;
pub mod llama;
pub mod sampling;
pub mod tokenizer;

pub use config::{Architecture, ModelConfig};

use crate::error::{Error, Result};
use crate::nn::{HookedLinear, ResidualHook, Sublayer};
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

    /// Calls `f` with the name (as `named_parameters` gives it) and handle of every parameter, so that
    /// a caller can make it trainable or frozen (e.g. PEFT's `bias = "all"`). GPT-2's Conv1D weights
    /// are visited as their `[out, in]` views.
    fn visit_parameters(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()>;

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

    /// Installs (`Some`) or removes (`None`) the hook that combines the output of `site` in block
    /// `layer` with its residual (bottleneck adapters). Without a hook the model computes as before.
    fn set_residual_hook(
        &mut self,
        layer: usize,
        site: Sublayer,
        hook: Option<std::sync::Arc<dyn ResidualHook>>,
    ) -> Result<()> {
        let _ = (layer, site, hook);
        Err(Error::invalid(
            "set_residual_hook",
            format!("{} does not support sublayer residual hooks", self.config().architecture.name()),
        ))
    }
}

/// Loads a model folder: `config.json` picks the architecture, weights come from
/// `model.safetensors` or a sharded index. A `.gguf` file (llama.cpp's, LLaMA architecture) loads
/// as the Hugging Face model it was converted from, dequantized to f32.
/// Moves every parameter of `model` to `device`, in place (tied weights and views move together; see
/// `Tensor::move_storage`). Inputs stay where the caller makes them: token ids and masks may stay on
/// the host. Packed (4-bit) Linear weights are not parameters and move first, through
/// `quant::to_device`: bitsandbytes NF4/FP4 codes and scales are uploaded (the host copy stays for
/// checkpoints and merging); GGUF blocks have no GPU kernel and are an error naming the layer.
pub fn move_to_device(model: &mut dyn Model, device: crate::Device) -> Result<()> {
    model.visit_linears(&mut |path, l| {
        if let Some(p) = &l.base.packed {
            let moved = crate::quant::to_device(p, device)
                .map_err(|e| Error::invalid("move_to_device", format!("`{path}`: {e}")))?;
            l.base.packed = Some(moved);
        }
        Ok(())
    })?;
    model.visit_parameters(&mut |_, t| t.move_storage(device))
}

pub fn load(dir: impl AsRef<Path>) -> Result<Box<dyn Model>> {
    load_as(dir, None, None)
}

/// Loads a model folder as another architecture of the same family, as transformers'
/// `BertForSequenceClassification.from_pretrained(<a BertModel folder>)` does: weights the task
/// head needs but the checkpoint lacks are freshly initialized. `num_labels` sets the head size.
pub fn load_as(
    dir: impl AsRef<Path>,
    architecture: Option<Architecture>,
    num_labels: Option<usize>,
) -> Result<Box<dyn Model>> {
    let dir = dir.as_ref();
    let mut config = ModelConfig::from_dir(dir)?;
    if let Some(arch) = architecture {
        let family = |a: Architecture| match a {
            Architecture::BertModel
            | Architecture::BertForSequenceClassification
            | Architecture::BertForTokenClassification => 0,
            Architecture::Gpt2LMHeadModel => 1,
            Architecture::LlamaForCausalLM => 2,
        };
        if family(arch) != family(config.architecture) {
            return Err(Error::invalid(
                "load",
                format!("cannot load a {} checkpoint as {}", config.architecture.name(), arch.name()),
            ));
        }
        config.architecture = arch;
    }
    if let Some(n) = num_labels {
        config.num_labels = n;
    }
    let weights = if crate::io::gguf::is_gguf(dir) {
        let file = crate::io::gguf::GgufFile::open(dir)?;
        crate::io::WeightFiles::from_tensors(dir, file.llama_weights()?)
    } else {
        crate::io::WeightFiles::open(dir)?
    };
    match config.architecture {
        Architecture::BertModel
        | Architecture::BertForSequenceClassification
        | Architecture::BertForTokenClassification => Ok(Box::new(bert::Bert::load(config, &weights)?)),
        Architecture::Gpt2LMHeadModel => Ok(Box::new(gpt2::Gpt2::load(config, &weights)?)),
        Architecture::LlamaForCausalLM => Ok(Box::new(llama::Llama::load(config, &weights)?)),
    }
}

/// Writes a model as a Hugging Face folder (`config.json` with its architecture and label count,
/// `model.safetensors`), so that transformers' `from_pretrained` loads it. Files are written
/// atomically; other files of `source_dir` (tokenizer, generation config) are copied along (from a
/// `.gguf` source: its tokenizer, written as `tokenizer.json` and `tokenizer_config.json`).
pub fn save_pretrained(model: &dyn Model, dir: impl AsRef<Path>, source_dir: Option<&Path>) -> Result<()> {
    let tensors: Vec<(String, Tensor)> =
        model.named_parameters().into_iter().map(|(n, t)| Ok((n, t.detach().contiguous()?))).collect::<Result<_>>()?;
    save_pretrained_tensors(model, &tensors, dir.as_ref(), source_dir, &[])
}

/// [`save_pretrained`] with the weights given (`tensors`, e.g. a 4-bit layout) and entries to add to
/// config.json (e.g. `quantization_config`).
pub fn save_pretrained_tensors(
    model: &dyn Model,
    tensors: &[(String, Tensor)],
    dir: &Path,
    source_dir: Option<&Path>,
    extra_config: &[(&str, serde_json::Value)],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    crate::io::save_safetensors(dir.join("model.safetensors"), tensors, Some(&meta))?;
    let c = model.config();
    let mut raw = c.raw.clone();
    if let Some(obj) = raw.as_object_mut() {
        obj.insert("architectures".into(), serde_json::json!([c.architecture.name()]));
        for (k, v) in extra_config {
            obj.insert(k.to_string(), v.clone());
        }
        if matches!(
            c.architecture,
            Architecture::BertForSequenceClassification | Architecture::BertForTokenClassification
        ) {
            let id2label: serde_json::Map<String, serde_json::Value> =
                (0..c.num_labels).map(|i| (i.to_string(), serde_json::json!(format!("LABEL_{i}")))).collect();
            let label2id: serde_json::Map<String, serde_json::Value> =
                (0..c.num_labels).map(|i| (format!("LABEL_{i}"), serde_json::json!(i))).collect();
            obj.entry("id2label").or_insert(serde_json::Value::Object(id2label));
            obj.entry("label2id").or_insert(serde_json::Value::Object(label2id));
        }
    }
    let json = serde_json::to_vec_pretty(&raw).map_err(|e| Error::invalid("save_pretrained", e.to_string()))?;
    crate::io::safetensors::write_atomic(&dir.join("config.json"), &json)?;
    if let Some(src) = source_dir.filter(|s| crate::io::gguf::is_gguf(s)) {
        write_gguf_tokenizer(src, dir)?;
    } else if let Some(src) = source_dir {
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.txt",
            "generation_config.json",
        ] {
            let from = src.join(name);
            if from.exists() {
                let bytes =
                    std::fs::read(&from).map_err(|e| Error::Io { path: from.display().to_string(), source: e })?;
                crate::io::safetensors::write_atomic(&dir.join(name), &bytes)?;
            }
        }
    }
    Ok(())
}

/// The tokenizer a `.gguf` file stores, as `tokenizer.json` + `tokenizer_config.json` (BOS/EOS,
/// chat template) in `dir`, so the folder saved from a GGUF model is complete.
fn write_gguf_tokenizer(gguf: &Path, dir: &Path) -> Result<()> {
    let file = crate::io::gguf::GgufFile::open(gguf)?;
    let json = |v: &serde_json::Value| {
        serde_json::to_vec_pretty(v).map_err(|e| Error::invalid("save_pretrained", e.to_string()))
    };
    let tokenizer = file.tokenizer_json()?;
    crate::io::safetensors::write_atomic(&dir.join("tokenizer.json"), &json(&tokenizer)?)?;
    let token = |key: &str| {
        let id = file.get(key).and_then(crate::io::gguf::GgufValue::as_u64)?;
        let vocab = tokenizer["model"]["vocab"].as_object()?;
        vocab.iter().find(|(_, v)| v.as_u64() == Some(id)).map(|(k, _)| k.clone())
    };
    let mut config = serde_json::json!({"tokenizer_class": "PreTrainedTokenizerFast"});
    for (key, name) in [
        ("tokenizer.ggml.bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token"),
    ] {
        if let Some(t) = token(key) {
            config[name] = serde_json::json!(t);
        }
    }
    if let Some(t) = file.chat_template() {
        config["chat_template"] = serde_json::json!(t);
    }
    crate::io::safetensors::write_atomic(&dir.join("tokenizer_config.json"), &json(&config)?)
}

/// The `[batch, seq]` shape of an input, from the ids or the embeddings.
pub(crate) fn batch_seq(input: &ForwardInput) -> Result<(usize, usize)> {
    match (input.input_ids, input.inputs_embeds) {
        (Some(ids), None) if ids.rank() == 2 => Ok((ids.shape()[0], ids.shape()[1])),
        (None, Some(e)) if e.rank() == 3 => Ok((e.shape()[0], e.shape()[1])),
        (Some(ids), None) => {
            Err(Error::shape("forward", format!("input_ids must be [batch, seq], got {:?}", ids.shape())))
        }
        (None, Some(e)) => {
            Err(Error::shape("forward", format!("inputs_embeds must be [batch, seq, hidden], got {:?}", e.shape())))
        }
        _ => Err(Error::invalid("forward", "give exactly one of input_ids and inputs_embeds")),
    }
}
