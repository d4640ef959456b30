//! `config.json` as transformers writes it, reduced to what the supported architectures read.
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    BertModel,
    BertForSequenceClassification,
    BertForTokenClassification,
    Gpt2LMHeadModel,
    /// Also Mistral and Qwen2 checkpoints, which have LLaMA's shape (Qwen2 adds q/k/v biases).
    LlamaForCausalLM,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::BertModel => "BertModel",
            Architecture::BertForSequenceClassification => "BertForSequenceClassification",
            Architecture::BertForTokenClassification => "BertForTokenClassification",
            Architecture::Gpt2LMHeadModel => "GPT2LMHeadModel",
            Architecture::LlamaForCausalLM => "LlamaForCausalLM",
        }
    }

    pub fn is_causal_lm(self) -> bool {
        matches!(self, Architecture::Gpt2LMHeadModel | Architecture::LlamaForCausalLM)
    }
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon (BERT, GPT-2) or RMSNorm epsilon (LLaMA).
    pub norm_eps: f32,
    pub hidden_act: String,
    pub rope_theta: f32,
    pub type_vocab_size: usize,
    pub num_labels: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v projections (Qwen2, LLaMA's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (LLaMA's `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Mistral's (and Qwen2's, when `use_sliding_window`) attention window. Sequences within it
    /// compute exactly as full attention; longer ones are refused.
    pub sliding_window: Option<usize>,
    pub pad_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    /// The whole file, for fields read elsewhere.
    pub raw: Value,
}

fn get_usize(v: &Value, keys: &[&str]) -> Option<usize> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_u64)).map(|x| x as usize)
}

fn get_f32(v: &Value, keys: &[&str]) -> Option<f32> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_f64)).map(|x| x as f32)
}

fn token_ids(v: &Value, key: &str) -> Vec<i64> {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_i64).collect(),
        _ => Vec::new(),
    }
}

impl ModelConfig {
    /// Reads `config.json` of a model folder, or the config a `.gguf` file's metadata implies.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        if crate::io::gguf::is_gguf(dir) {
            return crate::io::gguf::GgufFile::open(dir)?.llama_config();
        }
        let path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| Error::File { path: path.display().to_string(), detail: format!("not valid JSON: {e}") })?;
        ModelConfig::from_json(raw).map_err(|e| Error::File { path: path.display().to_string(), detail: e.to_string() })
    }

    pub fn from_json(raw: Value) -> Result<ModelConfig> {
        let bad = |d: String| Error::invalid("config", d);
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        let arch_name = raw
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| match model_type.as_str() {
                "bert" => "BertModel".into(),
                "gpt2" => "GPT2LMHeadModel".into(),
                "llama" => "LlamaForCausalLM".into(),
                _ => String::new(),
            });
        let architecture = match arch_name.as_str() {
            "BertModel" => Architecture::BertModel,
            "BertForSequenceClassification" => Architecture::BertForSequenceClassification,
            "BertForTokenClassification" => Architecture::BertForTokenClassification,
            "GPT2LMHeadModel" => Architecture::Gpt2LMHeadModel,
            "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM" => Architecture::LlamaForCausalLM,
            other => {
                return Err(bad(format!(
                    "unsupported architecture `{other}` (model_type `{model_type}`); supported: BertModel, \
                     BertForSequenceClassification, BertForTokenClassification, GPT2LMHeadModel, LlamaForCausalLM \
                     (and the LLaMA-shaped MistralForCausalLM, Qwen2ForCausalLM)"
                )))
            }
        };
        let need = |keys: &[&str]| get_usize(&raw, keys).ok_or_else(|| bad(format!("missing `{}`", keys[0])));
        let (hidden_size, num_layers, num_heads) = match architecture {
            Architecture::Gpt2LMHeadModel => (need(&["n_embd"])?, need(&["n_layer"])?, need(&["n_head"])?),
            _ => (need(&["hidden_size"])?, need(&["num_hidden_layers"])?, need(&["num_attention_heads"])?),
        };
        if num_heads == 0 || hidden_size % num_heads != 0 && get_usize(&raw, &["head_dim"]).is_none() {
            return Err(bad(format!("hidden size {hidden_size} is not divisible by {num_heads} heads")));
        }
        let num_kv_heads = get_usize(&raw, &["num_key_value_heads"]).unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(bad(format!("{num_heads} heads are not a multiple of {num_kv_heads} key/value heads")));
        }
        let head_dim = get_usize(&raw, &["head_dim"]).unwrap_or(hidden_size / num_heads);
        let intermediate_size = match architecture {
            Architecture::Gpt2LMHeadModel => get_usize(&raw, &["n_inner"]).unwrap_or(4 * hidden_size),
            _ => need(&["intermediate_size"])?,
        };
        let is_qwen2 = arch_name == "Qwen2ForCausalLM";
        if architecture == Architecture::LlamaForCausalLM {
            if let Some(scaling) = raw.get("rope_scaling").filter(|v| !v.is_null()) {
                let kind =
                    scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str).unwrap_or("?");
                if kind != "default" {
                    return Err(bad(format!("rope_scaling of type `{kind}` is not supported")));
                }
            }
        }
        let attention_bias = raw.get("attention_bias").and_then(Value::as_bool).unwrap_or(false);
        let num_labels = raw
            .get("id2label")
            .and_then(Value::as_object)
            .map(|m| m.len())
            .or_else(|| get_usize(&raw, &["num_labels"]))
            .unwrap_or(2);
        let default_tie = architecture == Architecture::Gpt2LMHeadModel;
        Ok(ModelConfig {
            architecture,
            vocab_size: need(&["vocab_size"])?,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            intermediate_size,
            max_position_embeddings: get_usize(&raw, &["max_position_embeddings", "n_positions"]).unwrap_or(usize::MAX),
            norm_eps: get_f32(&raw, &["layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps"]).unwrap_or(1e-5),
            hidden_act: raw
                .get("hidden_act")
                .or_else(|| raw.get("activation_function"))
                .and_then(Value::as_str)
                .unwrap_or("gelu")
                .to_string(),
            rope_theta: get_f32(&raw, &["rope_theta"]).unwrap_or(10000.0),
            type_vocab_size: get_usize(&raw, &["type_vocab_size"]).unwrap_or(0),
            num_labels,
            tie_word_embeddings: raw.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(default_tie),
            qkv_bias: attention_bias || is_qwen2,
            o_bias: attention_bias,
            mlp_bias: raw.get("mlp_bias").and_then(Value::as_bool).unwrap_or(false),
            sliding_window: match arch_name.as_str() {
                "MistralForCausalLM" => get_usize(&raw, &["sliding_window"]),
                "Qwen2ForCausalLM" if raw.get("use_sliding_window").and_then(Value::as_bool) == Some(true) => {
                    get_usize(&raw, &["sliding_window"])
                }
                _ => None,
            },
            pad_token_id: raw.get("pad_token_id").and_then(Value::as_i64),
            bos_token_id: raw.get("bos_token_id").and_then(Value::as_i64),
            eos_token_ids: token_ids(&raw, "eos_token_id"),
            model_type,
            raw,
        })
    }
}
