//! PEFT's `PrefixTuningConfig` (`adapter_config.json` of a `PREFIX_TUNING` adapter), filled from
//! the base model as PEFT's `_prepare_prompt_learning_config` fills it, plus one field of ours:
//! `prefix_dropout` (P-tuning v2's dropout on the prefixes; written only when set, and PEFT
//! ignores it with a warning).
use crate::prompt::config::{unknown_key_warnings, with_version, PromptLearningFields};
use engine::models::ModelConfig;
use engine::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// PEFT's `PrefixTuningConfig`: the prompt-learning fields (`num_virtual_tokens`, `token_dim`,
/// `num_attention_heads`, `num_layers`, `modules_to_save`, …) and its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefixTuningConfig {
    #[serde(flatten)]
    pub common: PromptLearningFields,
    /// `null` (random: N(0, 1) table, PyTorch's Linear init) or `"zero"`.
    #[serde(default)]
    pub init_weights: Option<String>,
    /// Hidden width of the reparameterization MLP.
    #[serde(default)]
    pub encoder_hidden_size: Option<usize>,
    /// embedding → Linear → tanh → Linear (Li & Liang's reparameterization) instead of the flat table.
    #[serde(default)]
    pub prefix_projection: bool,
    /// Ours: dropout on the prefixes while training (P-tuning v2), 0 = off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_dropout: f32,
    /// Every other key of the file, kept so that saving writes it back.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A prefix config's numbers once filled from the model: what the prefix encoder and the reshape need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixShape {
    pub num_virtual_tokens: usize,
    pub num_layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub encoder_hidden_size: usize,
}

impl PrefixShape {
    /// `token_dim`: one layer's key (or value) width.
    pub fn token_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    /// The last dimension of PEFT's table: `num_layers · 2 · token_dim`.
    pub fn table_width(&self) -> usize {
        self.num_layers * 2 * self.token_dim()
    }
}

impl PrefixTuningConfig {
    /// A config with PEFT's defaults and `num_virtual_tokens` virtual tokens.
    pub fn new(num_virtual_tokens: usize) -> PrefixTuningConfig {
        PrefixTuningConfig {
            common: PromptLearningFields::new("PREFIX_TUNING", num_virtual_tokens),
            init_weights: None,
            encoder_hidden_size: None,
            prefix_projection: false,
            prefix_dropout: 0.0,
            other: BTreeMap::new(),
        }
    }

    /// Parses and checks a config; returns it with warnings about keys PEFT does not know either.
    pub fn from_json(v: Value) -> Result<(PrefixTuningConfig, Vec<String>)> {
        let c: PrefixTuningConfig = serde_json::from_value(v)
            .map_err(|e| Error::invalid("adapter_config", format!("not a prefix-tuning config: {e}")))?;
        let warnings = c.validate()?;
        Ok((c, warnings))
    }

    pub fn from_file(path: &Path) -> Result<(PrefixTuningConfig, Vec<String>)> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::File { path: path.display().to_string(), detail: format!("not valid JSON: {e}") })?;
        PrefixTuningConfig::from_json(v)
            .map_err(|e| Error::File { path: path.display().to_string(), detail: e.to_string() })
    }

    /// Checks the values; returns warnings about unknown keys.
    pub fn validate(&self) -> Result<Vec<String>> {
        self.common.validate("PREFIX_TUNING")?;
        let c = &self.common;
        let bad = |d: String| Err(Error::invalid("adapter_config", d));
        for (name, v) in [
            ("num_attention_heads", c.num_attention_heads),
            ("num_layers", c.num_layers),
            ("encoder_hidden_size", self.encoder_hidden_size),
        ] {
            if v == Some(0) {
                return bad(format!("{name} must be positive"));
            }
        }
        if let (Some(d), Some(h)) = (c.token_dim, c.num_attention_heads) {
            if d % h != 0 {
                return bad(format!("token_dim {d} is not a multiple of num_attention_heads {h}"));
            }
        }
        if let Some(w) = &self.init_weights {
            if w != "zero" {
                return bad(format!("init_weights `{w}` is not supported (null or \"zero\")"));
            }
        }
        if !(0.0..1.0).contains(&self.prefix_dropout) {
            return bad(format!("prefix_dropout {} is outside [0, 1)", self.prefix_dropout));
        }
        if let Some(t) = &c.task_type {
            if !matches!(t.as_str(), "CAUSAL_LM" | "SEQ_CLS" | "TOKEN_CLS" | "FEATURE_EXTRACTION") {
                return bad(format!(
                    "task_type `{t}` is not supported (CAUSAL_LM, SEQ_CLS, TOKEN_CLS, FEATURE_EXTRACTION)"
                ));
            }
        }
        Ok(unknown_key_warnings(&self.other))
    }

    /// Fills the model-dependent fields as PEFT's `_prepare_prompt_learning_config` does: layers,
    /// `token_dim` (hidden size), heads; then, for a model whose config names `num_key_value_heads`,
    /// PEFT's grouped-query rule: prefixes of the key/value width (`head_dim · kv_heads`, with
    /// `head_dim` from the config or `token_dim / heads`, and `kv_heads` heads), even over given
    /// values; `encoder_hidden_size` defaults to `token_dim`; one transformer submodule. Then checks
    /// the numbers against the model.
    pub fn fill_from_model(&mut self, model: &ModelConfig) -> Result<PrefixShape> {
        let raw = &model.raw;
        let c = &mut self.common;
        let get = |k: &str| raw.get(k).and_then(Value::as_u64).map(|x| x as usize);
        c.num_layers.get_or_insert(model.num_layers);
        c.token_dim.get_or_insert(model.hidden_size);
        c.num_attention_heads.get_or_insert(model.num_heads);
        if let Some(kv) = get("num_key_value_heads") {
            let (dim, heads) = (c.token_dim.unwrap_or(model.hidden_size), c.num_attention_heads.unwrap_or(1));
            let head_dim = match get("head_dim") {
                Some(d) => d,
                None => dim / heads.max(1),
            };
            c.token_dim = Some(head_dim * kv);
            c.num_attention_heads = Some(kv);
        }
        let token_dim = c.token_dim.unwrap_or(model.hidden_size);
        c.num_transformer_submodules.get_or_insert(1);
        self.encoder_hidden_size.get_or_insert(token_dim);
        self.validate()?;
        let c = &self.common;
        let shape = PrefixShape {
            num_virtual_tokens: c.num_virtual_tokens,
            num_layers: c.num_layers.unwrap_or(0),
            heads: c.num_attention_heads.unwrap_or(1),
            head_dim: token_dim / c.num_attention_heads.unwrap_or(1),
            encoder_hidden_size: self.encoder_hidden_size.unwrap_or(token_dim),
        };
        let want = (model.num_layers, model.num_kv_heads, model.head_dim);
        if (shape.num_layers, shape.heads, shape.head_dim) != want {
            return Err(Error::invalid(
                "adapter_config",
                format!(
                    "the prefix has {} layers × {} heads × head_dim {}, the model {} layers × {} key/value heads \
                     × head_dim {}",
                    shape.num_layers, shape.heads, shape.head_dim, want.0, want.1, want.2
                ),
            ));
        }
        Ok(shape)
    }

    /// The JSON PEFT writes: every field, then the kept unknown ones.
    pub fn to_json(&self) -> Value {
        with_version(serde_json::to_value(self).unwrap_or(Value::Object(Map::new())))
    }
}

/// The prefix config of a train config's `peft` section, with the task's defaults (`task_type`, the
/// classifier in `modules_to_save`). Keys PEFT's `PrefixTuningConfig` lacks are errors here: the run
/// file is ours, and a misspelled key must not fall back to a default.
pub fn config_from_section(section: &Value, task: crate::train::config::Task) -> Result<PrefixTuningConfig> {
    let bad = |detail: String| Error::invalid("train config", format!("`peft`: {detail}"));
    let full = crate::method::with_task_defaults(section, task)?;
    let (config, warnings) = PrefixTuningConfig::from_json(full).map_err(|e| bad(e.to_string()))?;
    if let Some(w) = warnings.first() {
        return Err(bad(w.replace("adapter_config: ", "").replace(" ignored", " (not a PrefixTuningConfig field)")));
    }
    Ok(config)
}
