//! PEFT's `PrefixTuningConfig` (`adapter_config.json` of a `PREFIX_TUNING` adapter), filled from
//! the base model as PEFT's `_prepare_prompt_learning_config` fills it, plus one field of ours:
//! `prefix_dropout` (P-tuning v2's dropout on the prefixes; written only when set, and PEFT
//! ignores it with a warning).
use engine::models::ModelConfig;
use engine::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

fn default_peft_type() -> String {
    "PREFIX_TUNING".into()
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// PEFT's `PrefixTuningConfig` (its `PromptLearningConfig` fields and its own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefixTuningConfig {
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    /// `CAUSAL_LM`, `SEQ_CLS`, `TOKEN_CLS` (or `FEATURE_EXTRACTION`); PEFT's task names.
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub inference_mode: bool,
    /// Prefix length P (the task-specific prompt length of P-tuning v2).
    #[serde(default)]
    pub num_virtual_tokens: Option<usize>,
    /// Width of one layer's keys (and values): `kv_heads · head_dim` once filled.
    #[serde(default)]
    pub token_dim: Option<usize>,
    /// 1 for decoders and encoders (2 would be encoder-decoder models, which the engine lacks).
    #[serde(default)]
    pub num_transformer_submodules: Option<usize>,
    /// Key/value heads once filled (PEFT's rule for grouped-query models).
    #[serde(default)]
    pub num_attention_heads: Option<usize>,
    #[serde(default)]
    pub num_layers: Option<usize>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
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

/// Keys that describe the file rather than the computation.
const INFORMATIONAL: &[&str] = &["auto_mapping", "peft_version"];

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
            peft_type: default_peft_type(),
            task_type: None,
            base_model_name_or_path: None,
            revision: None,
            inference_mode: false,
            num_virtual_tokens: Some(num_virtual_tokens),
            token_dim: None,
            num_transformer_submodules: None,
            num_attention_heads: None,
            num_layers: None,
            modules_to_save: None,
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
        let bad = |d: String| Err(Error::invalid("adapter_config", d));
        if self.peft_type != "PREFIX_TUNING" {
            return bad(format!("peft_type is `{}`, expected `PREFIX_TUNING`", self.peft_type));
        }
        match self.num_virtual_tokens {
            None => return bad("num_virtual_tokens is required".into()),
            Some(0) => return bad("num_virtual_tokens must be positive".into()),
            _ => {}
        }
        for (name, v) in [
            ("token_dim", self.token_dim),
            ("num_attention_heads", self.num_attention_heads),
            ("num_layers", self.num_layers),
            ("encoder_hidden_size", self.encoder_hidden_size),
        ] {
            if v == Some(0) {
                return bad(format!("{name} must be positive"));
            }
        }
        if let (Some(d), Some(h)) = (self.token_dim, self.num_attention_heads) {
            if d % h != 0 {
                return bad(format!("token_dim {d} is not a multiple of num_attention_heads {h}"));
            }
        }
        if let Some(n) = self.num_transformer_submodules {
            if n != 1 {
                return bad(format!(
                    "num_transformer_submodules {n} is not supported (1: decoder-only and encoder models)"
                ));
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
        if let Some(t) = &self.task_type {
            if !matches!(t.as_str(), "CAUSAL_LM" | "SEQ_CLS" | "TOKEN_CLS" | "FEATURE_EXTRACTION") {
                return bad(format!(
                    "task_type `{t}` is not supported (CAUSAL_LM, SEQ_CLS, TOKEN_CLS, FEATURE_EXTRACTION)"
                ));
            }
        }
        let warnings = self
            .other
            .keys()
            .filter(|k| !INFORMATIONAL.contains(&k.as_str()))
            .map(|k| format!("adapter_config: unknown key `{k}` ignored"))
            .collect();
        Ok(warnings)
    }

    /// Fills the model-dependent fields as PEFT's `_prepare_prompt_learning_config` does: layers,
    /// `token_dim` (hidden size), heads; then, for a model whose config names `num_key_value_heads`,
    /// PEFT's grouped-query rule: prefixes of the key/value width (`head_dim · kv_heads`, with
    /// `head_dim` from the config or `token_dim / heads`, and `kv_heads` heads), even over given
    /// values; `encoder_hidden_size` defaults to `token_dim`; one transformer submodule. Then checks
    /// the numbers against the model.
    pub fn fill_from_model(&mut self, model: &ModelConfig) -> Result<PrefixShape> {
        let raw = &model.raw;
        let get = |k: &str| raw.get(k).and_then(Value::as_u64).map(|x| x as usize);
        self.num_layers.get_or_insert(model.num_layers);
        self.token_dim.get_or_insert(model.hidden_size);
        self.num_attention_heads.get_or_insert(model.num_heads);
        if let Some(kv) = get("num_key_value_heads") {
            let (dim, heads) = (self.token_dim.unwrap_or(model.hidden_size), self.num_attention_heads.unwrap_or(1));
            let head_dim = match get("head_dim") {
                Some(d) => d,
                None => dim / heads.max(1),
            };
            self.token_dim = Some(head_dim * kv);
            self.num_attention_heads = Some(kv);
        }
        let token_dim = self.token_dim.unwrap_or(model.hidden_size);
        self.encoder_hidden_size.get_or_insert(token_dim);
        self.num_transformer_submodules.get_or_insert(1);
        self.validate()?;
        let shape = PrefixShape {
            num_virtual_tokens: self.num_virtual_tokens.unwrap_or(0),
            num_layers: self.num_layers.unwrap_or(0),
            heads: self.num_attention_heads.unwrap_or(1),
            head_dim: token_dim / self.num_attention_heads.unwrap_or(1),
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
        let mut v = serde_json::to_value(self).unwrap_or(Value::Object(Map::new()));
        if let Value::Object(m) = &mut v {
            m.entry("peft_version").or_insert(Value::String("0.21.2".into()));
        }
        v
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
