//! A LLaMA-architecture GGUF file as the Hugging Face model it was converted from: the
//! `config.json` rebuilt from `llama.*` metadata, and the weights under their Hugging Face names
//! (`blk.0.attn_q.weight` → `model.layers.0.self_attn.q_proj.weight`), dequantized to f32.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders the rows of the
//! Q and K projections for its interleaved RoPE: within each head, Hugging Face row `j·(d/2) + i`
//! (half j of the rotate-half layout, i < d/2) becomes row `2i + j`. [`unpermute_rows`] undoes it,
//! so the model computes exactly what transformers computes with the Hugging Face weights.
use super::packed::GgufMatrix;
use super::{GgmlType, GgufFile, GgufValue};
use crate::dtype::DType;
use crate::error::Result;
use crate::io::WeightFiles;
use crate::models::llama::Llama;
use crate::models::{Model, ModelConfig};
use crate::nn::Linear;
use crate::quant::PackedMatrix;
use crate::tensor::Tensor;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

impl GgufFile {
    /// The architecture prefix of the metadata keys (`general.architecture`), checked to be `llama`.
    fn llama_arch(&self) -> Result<&str> {
        let arch = self.require("general.architecture")?.as_str().unwrap_or("");
        if arch != "llama" {
            return Err(
                self.err(format!("general.architecture is `{arch}`; only `llama` GGUF files can be loaded as models"))
            );
        }
        Ok(arch)
    }

    fn usize_of(&self, key: &str) -> Result<usize> {
        self.require(key)?
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| self.err(format!("metadata `{key}` is not a non-negative integer")))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.err(format!("metadata `{key}` is not a number"))),
        }
    }

    /// The Hugging Face `config.json` of the model (`LlamaForCausalLM`), from the `llama.*` keys.
    pub fn llama_config_json(&self) -> Result<serde_json::Value> {
        let a = self.llama_arch()?;
        let key = |k: &str| format!("{a}.{k}");
        let hidden = self.usize_of(&key("embedding_length"))?;
        let heads = self.usize_of(&key("attention.head_count"))?;
        let kv_heads = match self.get(&key("attention.head_count_kv")) {
            Some(_) => self.usize_of(&key("attention.head_count_kv"))?,
            None => heads,
        };
        if heads == 0 || kv_heads == 0 {
            return Err(self.err("attention.head_count and head_count_kv must be positive"));
        }
        let head_dim = match self.get(&key("attention.key_length")) {
            Some(_) => self.usize_of(&key("attention.key_length"))?,
            None => hidden / heads,
        };
        if let Some(rope_dim) = self.get(&key("rope.dimension_count")) {
            if rope_dim.as_u64() != Some(head_dim as u64) {
                return Err(self.err(format!(
                    "rope.dimension_count {rope_dim:?} differs from the head dimension {head_dim}: partial rotary \
                     embeddings are not supported"
                )));
            }
        }
        if let Some(kind) = self.get(&key("rope.scaling.type")).and_then(GgufValue::as_str) {
            if kind != "none" {
                return Err(self.err(format!("rope.scaling.type `{kind}` is not supported")));
            }
        }
        if self.info("rope_freqs.weight").is_some() {
            return Err(self.err("the file has rope_freqs.weight (LLaMA-3 RoPE scaling), which is not supported"));
        }
        let vocab = match self.get(&key("vocab_size")) {
            Some(_) => self.usize_of(&key("vocab_size"))?,
            None => self
                .info("token_embd.weight")
                .map(|t| t.shape()[0])
                .ok_or_else(|| self.err("no llama.vocab_size and no token_embd.weight"))?,
        };
        let token = |k: &str| self.get(k).and_then(GgufValue::as_u64);
        Ok(json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": hidden,
            "num_hidden_layers": self.usize_of(&key("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "intermediate_size": self.usize_of(&key("feed_forward_length"))?,
            "vocab_size": vocab,
            "max_position_embeddings": self.get(&key("context_length")).and_then(GgufValue::as_u64),
            "rms_norm_eps": self.opt_f64(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            "rope_theta": self.opt_f64(&key("rope.freq_base"))?.unwrap_or(10000.0),
            "hidden_act": "silu",
            "tie_word_embeddings": self.info("output.weight").is_none(),
            "bos_token_id": token("tokenizer.ggml.bos_token_id"),
            "eos_token_id": token("tokenizer.ggml.eos_token_id"),
            "pad_token_id": token("tokenizer.ggml.padding_token_id"),
        }))
    }

    /// The model's [`ModelConfig`] (from [`GgufFile::llama_config_json`]).
    pub fn llama_config(&self) -> Result<ModelConfig> {
        ModelConfig::from_json(self.llama_config_json()?).map_err(|e| self.err(e.to_string()))
    }

    /// Every tensor under its Hugging Face name, as f32 `[out, in]` matrices and vectors, with the
    /// Q/K rows in Hugging Face's order. A tensor with no Hugging Face counterpart is an error.
    pub fn llama_weights(&self) -> Result<HashMap<String, Tensor>> {
        let config = self.llama_config()?;
        let mut out = HashMap::new();
        for (name, _) in self.tensors() {
            let hf = hf_name(name)
                .ok_or_else(|| self.err(format!("tensor `{name}` has no counterpart in a Hugging Face LLaMA model")))?;
            let t = self.dense_hf_tensor(name, qk_heads(&hf, &config))?;
            out.insert(hf, t);
        }
        Ok(out)
    }

    /// A tensor as f32, its rows unpermuted over `heads` when it is a Q or K weight or bias.
    fn dense_hf_tensor(&self, name: &str, heads: Option<usize>) -> Result<Tensor> {
        let t = self.tensor_f32(name)?;
        match heads {
            Some(h) => unpermute_rows(&t, h).map_err(|e| self.err(format!("tensor `{name}`: {e}"))),
            None => Ok(t),
        }
    }
}

/// Loads a LLaMA GGUF file for QLoRA: the Linear weights stored in a block type (Q4_1, Q4_K, ...)
/// stay in the memory-mapped file as frozen [`GgufMatrix`] weights, dequantized tile by tile
/// inside each matmul; embeddings, norms and float-typed weights are f32 as in
/// [`GgufFile::llama_weights`]. Computes the same model as `engine::models::load` of the file.
pub fn load_llama_packed(path: &Path) -> Result<Box<dyn Model>> {
    let file = GgufFile::open(path)?;
    let config = file.llama_config()?;
    let mut dense = HashMap::new();
    let mut packed: HashMap<String, Arc<dyn PackedMatrix>> = HashMap::new();
    for (name, info) in file.tensors() {
        let hf = hf_name(name)
            .ok_or_else(|| file.err(format!("tensor `{name}` has no counterpart in a Hugging Face LLaMA model")))?;
        let heads = qk_heads(&hf, &config);
        let is_block_type = ![GgmlType::F32, GgmlType::F16, GgmlType::BF16].contains(&info.ggml_type);
        let linear = hf.strip_suffix(".weight").filter(|m| m.ends_with("_proj") || *m == "lm_head");
        match linear {
            Some(module) if is_block_type && info.dims.len() == 2 => {
                packed.insert(module.to_string(), Arc::new(GgufMatrix::new(&file, name, heads)?));
                // A shape-only stand-in (one value, broadcast) until the packed weight replaces it.
                dense.insert(hf, Tensor::zeros(&[1, 1], DType::F32).broadcast_as(&info.shape())?);
            }
            _ => {
                dense.insert(hf, file.dense_hf_tensor(name, heads)?);
            }
        }
    }
    let mut model = Llama::load(config, &WeightFiles::from_tensors(path, dense))?;
    model.visit_linears(&mut |path, hooked| {
        if let Some(m) = packed.remove(path) {
            let bias = hooked.base.bias.clone();
            hooked.base = Linear::from_packed(m, bias)?;
        }
        Ok(())
    })?;
    if let Some(left) = packed.keys().next() {
        return Err(file.err(format!("the model has no Linear `{left}` for the packed weight")));
    }
    Ok(Box::new(model))
}

/// The heads over which llama.cpp permuted the rows of a Q or K weight or bias, else `None`.
fn qk_heads(hf: &str, config: &ModelConfig) -> Option<usize> {
    if hf.contains(".q_proj.") {
        Some(config.num_heads)
    } else if hf.contains(".k_proj.") {
        Some(config.num_kv_heads)
    } else {
        None
    }
}

/// The Hugging Face name of a llama.cpp LLaMA tensor name.
pub fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    if param != "weight" && param != "bias" {
        return None;
    }
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{param}"))
}

/// Undoes llama.cpp's Q/K row permutation: rows (a `[heads·d, in]` matrix or a `[heads·d]` bias)
/// in the order `head, i, half` become `head, half, i`.
pub fn unpermute_rows(t: &Tensor, heads: usize) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    let rows = shape[0];
    let cols: usize = shape[1..].iter().product();
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(crate::error::Error::shape(
            "gguf",
            format!("{rows} rows cannot be split into {heads} heads of an even size"),
        ));
    }
    let half = rows / heads / 2;
    let src = t.contiguous()?.to_vec::<f32>()?;
    let mut dst = vec![0f32; src.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = (h * 2 * half + 2 * i + j) * cols;
                let to = (h * 2 * half + j * half + i) * cols;
                dst[to..to + cols].copy_from_slice(&src[from..from + cols]);
            }
        }
    }
    Tensor::from_vec(dst, &shape)
}
