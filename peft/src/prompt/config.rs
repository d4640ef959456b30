//! PEFT's `PromptTuningConfig` and `PromptEncoderConfig` (P-tuning) as `adapter_config.json` holds
//! them. Field names and defaults are PEFT's; keys PEFT does not know are kept and reported as
//! warnings, as `LoraConfig` does. One key is ours: `prompt_tuning_init_uniform_bound` (see
//! [`PromptTuningConfig`]); PEFT drops unknown keys with a warning, so its files still load there.
use engine::models::ModelConfig;
use engine::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The fields every PEFT prompt-learning config has (`PromptLearningConfig`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PromptLearningFields {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub inference_mode: bool,
    /// Required (PEFT's default is `None`, which fails there too).
    pub num_virtual_tokens: usize,
    /// The model's hidden size; filled in from the model when absent, as PEFT does.
    #[serde(default)]
    pub token_dim: Option<usize>,
    /// 1 for decoder-only and encoder-only models (2 only for encoder-decoder models, which we lack).
    #[serde(default)]
    pub num_transformer_submodules: Option<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<usize>,
    #[serde(default)]
    pub num_layers: Option<usize>,
    /// Heads trained and saved whole (PEFT adds `classifier`, `score` for sequence classification).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub auto_mapping: Option<Value>,
}

impl PromptLearningFields {
    /// PEFT's defaults for a `peft_type` config with `num_virtual_tokens` virtual tokens.
    pub fn new(peft_type: &str, num_virtual_tokens: usize) -> PromptLearningFields {
        PromptLearningFields {
            peft_type: peft_type.to_string(),
            task_type: None,
            base_model_name_or_path: None,
            revision: None,
            inference_mode: false,
            num_virtual_tokens,
            token_dim: None,
            num_transformer_submodules: None,
            num_attention_heads: None,
            num_layers: None,
            modules_to_save: None,
            auto_mapping: None,
        }
    }

    pub(crate) fn validate(&self, expected_type: &str) -> Result<()> {
        let bad = |d: String| Err(Error::invalid("adapter_config", d));
        if self.peft_type != expected_type {
            return bad(format!("peft_type is `{}`, expected `{expected_type}`", self.peft_type));
        }
        if self.num_virtual_tokens == 0 {
            return bad("num_virtual_tokens must be at least 1".into());
        }
        if let Some(n) = self.num_transformer_submodules {
            if n != 1 {
                return bad(format!(
                    "num_transformer_submodules = {n}: only 1 (decoder-only or encoder-only models) is supported"
                ));
            }
        }
        if self.token_dim == Some(0) {
            return bad("token_dim must be positive".into());
        }
        Ok(())
    }

    /// Fills `token_dim`, `num_layers`, `num_attention_heads` and `num_transformer_submodules` from the
    /// model as PEFT's `_prepare_prompt_learning_config` does; a `token_dim` that is not the model's
    /// hidden size is an error.
    pub fn complete_for(&mut self, model: &ModelConfig) -> Result<()> {
        let dim = *self.token_dim.get_or_insert(model.hidden_size);
        if dim != model.hidden_size {
            return Err(Error::invalid(
                "adapter_config",
                format!("token_dim {dim} is not the model's hidden size {}", model.hidden_size),
            ));
        }
        self.num_layers.get_or_insert(model.num_layers);
        self.num_attention_heads.get_or_insert(model.num_heads);
        self.num_transformer_submodules.get_or_insert(1);
        Ok(())
    }
}

/// `prompt_tuning_init`: how the soft prompt starts.
pub const PROMPT_TUNING_INITS: [&str; 3] = ["RANDOM", "SAMPLE_VOCAB", "TEXT"];

fn d_init() -> String {
    "RANDOM".into()
}

/// PEFT's `PromptTuningConfig` (Lester et al. 2021).
///
/// `prompt_tuning_init`: `RANDOM` draws the table as PEFT does (`nn.Embedding`'s N(0, 1)); with our
/// extra key `prompt_tuning_init_uniform_bound: b` it is drawn from U(−b, b) instead — the paper's
/// choice is 0.5. `SAMPLE_VOCAB` copies rows of the word-embedding table at random token ids;
/// `TEXT` tokenizes `prompt_tuning_init_text` (special tokens added, as PEFT's tokenizer call does)
/// and copies those rows, the ids repeated or cut to `num_virtual_tokens`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PromptTuningConfig {
    #[serde(flatten)]
    pub common: PromptLearningFields,
    #[serde(default = "d_init")]
    pub prompt_tuning_init: String,
    #[serde(default)]
    pub prompt_tuning_init_text: Option<String>,
    /// The tokenizer folder for `TEXT` (default: `base_model_name_or_path`).
    #[serde(default)]
    pub tokenizer_name_or_path: Option<String>,
    #[serde(default)]
    pub tokenizer_kwargs: Option<Value>,
    /// Ours: `RANDOM` draws U(−bound, bound) instead of N(0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tuning_init_uniform_bound: Option<f32>,
    /// Every other key of the file, kept so that saving writes it back.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn d_encoder_type() -> String {
    "MLP".into()
}
fn d_encoder_layers() -> usize {
    2
}

/// PEFT's `PromptEncoderConfig` (P-tuning, Liu et al. 2021).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PromptEncoderConfig {
    #[serde(flatten)]
    pub common: PromptLearningFields,
    /// `MLP` (Linear-ReLU-Linear-ReLU-Linear) or `LSTM` (bidirectional LSTM, then Linear-ReLU-Linear).
    #[serde(default = "d_encoder_type")]
    pub encoder_reparameterization_type: String,
    /// Width of the encoder; default `token_dim` (PEFT has no usable default).
    #[serde(default)]
    pub encoder_hidden_size: Option<usize>,
    /// LSTM layers (PEFT's MLP ignores it: always three Linears).
    #[serde(default = "d_encoder_layers")]
    pub encoder_num_layers: usize,
    /// Dropout between the LSTM's layers (PEFT passes it to `nn.LSTM`; the MLP has none).
    #[serde(default)]
    pub encoder_dropout: f32,
    /// Ours: virtual tokens around and between the input's segments, `[a0, a1, …, ak]` (see
    /// [`super::template`]); absent = all before the input, as PEFT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Vec<usize>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Keys that describe the file rather than the computation.
const INFORMATIONAL: &[&str] = &["peft_version"];

pub(crate) fn unknown_key_warnings(other: &BTreeMap<String, Value>) -> Vec<String> {
    other
        .keys()
        .filter(|k| !INFORMATIONAL.contains(&k.as_str()))
        .map(|k| format!("adapter_config: unknown key `{k}` ignored"))
        .collect()
}

pub(crate) fn with_version(v: Value) -> Value {
    let mut v = v;
    if let Value::Object(m) = &mut v {
        m.entry("peft_version").or_insert(Value::String("0.21.2".into()));
    }
    v
}

impl PromptTuningConfig {
    /// Parses and checks a config; returns it with warnings about keys PEFT does not know either.
    pub fn from_json(v: Value) -> Result<(PromptTuningConfig, Vec<String>)> {
        let c: PromptTuningConfig = serde_json::from_value(v)
            .map_err(|e| Error::invalid("adapter_config", format!("not a prompt tuning config: {e}")))?;
        let warnings = c.validate()?;
        Ok((c, warnings))
    }

    pub fn validate(&self) -> Result<Vec<String>> {
        self.common.validate("PROMPT_TUNING")?;
        let bad = |d: String| Err(Error::invalid("adapter_config", d));
        if !PROMPT_TUNING_INITS.contains(&self.prompt_tuning_init.as_str()) {
            return bad(format!(
                "prompt_tuning_init `{}` must be one of {}",
                self.prompt_tuning_init,
                PROMPT_TUNING_INITS.join(", ")
            ));
        }
        if self.prompt_tuning_init == "TEXT" && self.prompt_tuning_init_text.as_deref().is_none_or(str::is_empty) {
            return bad("prompt_tuning_init TEXT needs prompt_tuning_init_text".into());
        }
        if let Some(b) = self.prompt_tuning_init_uniform_bound {
            if !(b.is_finite() && b > 0.0) {
                return bad(format!("prompt_tuning_init_uniform_bound {b} must be a positive number"));
            }
            if self.prompt_tuning_init != "RANDOM" {
                return bad("prompt_tuning_init_uniform_bound only applies to prompt_tuning_init RANDOM".into());
            }
        }
        Ok(unknown_key_warnings(&self.other))
    }

    /// The JSON PEFT writes (`peft_version` added).
    pub fn to_json(&self) -> Value {
        with_version(serde_json::to_value(self).unwrap_or(Value::Object(Map::new())))
    }
}

impl PromptEncoderConfig {
    pub fn from_json(v: Value) -> Result<(PromptEncoderConfig, Vec<String>)> {
        let c: PromptEncoderConfig = serde_json::from_value(v)
            .map_err(|e| Error::invalid("adapter_config", format!("not a P-tuning config: {e}")))?;
        let warnings = c.validate()?;
        Ok((c, warnings))
    }

    pub fn validate(&self) -> Result<Vec<String>> {
        self.common.validate("P_TUNING")?;
        let bad = |d: String| Err(Error::invalid("adapter_config", d));
        if !matches!(self.encoder_reparameterization_type.as_str(), "MLP" | "LSTM") {
            return bad(format!(
                "encoder_reparameterization_type `{}` must be MLP or LSTM",
                self.encoder_reparameterization_type
            ));
        }
        if self.encoder_hidden_size == Some(0) {
            return bad("encoder_hidden_size must be positive".into());
        }
        if self.encoder_num_layers == 0 {
            return bad("encoder_num_layers must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.encoder_dropout) {
            return bad(format!("encoder_dropout {} is outside [0, 1)", self.encoder_dropout));
        }
        if let Some(t) = &self.template {
            let total: usize = t.iter().sum();
            if t.is_empty() || total != self.common.num_virtual_tokens {
                return bad(format!(
                    "template {t:?} must list virtual-token counts adding up to num_virtual_tokens ({})",
                    self.common.num_virtual_tokens
                ));
            }
        }
        Ok(unknown_key_warnings(&self.other))
    }

    /// The encoder width (`encoder_hidden_size`, else `token_dim`).
    pub fn hidden_size(&self) -> Result<usize> {
        self.encoder_hidden_size
            .or(self.common.token_dim)
            .ok_or_else(|| Error::invalid("adapter_config", "encoder_hidden_size and token_dim are both unset"))
    }

    pub fn to_json(&self) -> Value {
        with_version(serde_json::to_value(self).unwrap_or(Value::Object(Map::new())))
    }
}

/// Either prompt-learning config this module implements.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptConfig {
    Tuning(PromptTuningConfig),
    Encoder(PromptEncoderConfig),
}

impl PromptConfig {
    /// Parses a config by its `peft_type` (PROMPT_TUNING or P_TUNING); returns unknown-key warnings.
    pub fn from_json(v: Value) -> Result<(PromptConfig, Vec<String>)> {
        match v.get("peft_type").and_then(Value::as_str) {
            Some("PROMPT_TUNING") => PromptTuningConfig::from_json(v).map(|(c, w)| (PromptConfig::Tuning(c), w)),
            Some("P_TUNING") => PromptEncoderConfig::from_json(v).map(|(c, w)| (PromptConfig::Encoder(c), w)),
            other => Err(Error::invalid(
                "adapter_config",
                format!("peft_type {other:?} is not a prompt method (PROMPT_TUNING or P_TUNING)"),
            )),
        }
    }

    pub fn from_file(path: &Path) -> Result<(PromptConfig, Vec<String>)> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::File { path: path.display().to_string(), detail: format!("not valid JSON: {e}") })?;
        PromptConfig::from_json(v).map_err(|e| Error::File { path: path.display().to_string(), detail: e.to_string() })
    }

    pub fn common(&self) -> &PromptLearningFields {
        match self {
            PromptConfig::Tuning(c) => &c.common,
            PromptConfig::Encoder(c) => &c.common,
        }
    }

    pub fn common_mut(&mut self) -> &mut PromptLearningFields {
        match self {
            PromptConfig::Tuning(c) => &mut c.common,
            PromptConfig::Encoder(c) => &mut c.common,
        }
    }

    pub fn peft_type(&self) -> &'static str {
        match self {
            PromptConfig::Tuning(_) => "PROMPT_TUNING",
            PromptConfig::Encoder(_) => "P_TUNING",
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            PromptConfig::Tuning(c) => c.to_json(),
            PromptConfig::Encoder(c) => c.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_round_trip() {
        let (c, w) = PromptConfig::from_json(json!({"peft_type": "P_TUNING", "num_virtual_tokens": 4})).unwrap();
        assert!(w.is_empty());
        let PromptConfig::Encoder(e) = &c else { panic!("not P-tuning") };
        assert_eq!((e.encoder_reparameterization_type.as_str(), e.encoder_num_layers), ("MLP", 2));
        let (back, _) = PromptConfig::from_json(c.to_json()).unwrap();
        assert_eq!(back.to_json(), c.to_json());
    }

    #[test]
    fn bad_values_are_refused_and_unknown_keys_warned() {
        let bad = [
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 0}),
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2, "prompt_tuning_init": "ZEROS"}),
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2, "prompt_tuning_init": "TEXT"}),
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2, "num_transformer_submodules": 2}),
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 2, "encoder_reparameterization_type": "GRU"}),
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 2, "encoder_dropout": 1.0}),
            json!({"peft_type": "LORA", "num_virtual_tokens": 2}),
        ];
        for v in bad {
            assert!(PromptConfig::from_json(v.clone()).is_err(), "{v}");
        }
        let (_, w) =
            PromptConfig::from_json(json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2, "colour": 1}))
                .unwrap();
        assert_eq!(w, vec!["adapter_config: unknown key `colour` ignored".to_string()]);
    }
}
