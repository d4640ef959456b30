//! `adapter_config.json` as Hugging Face PEFT reads and writes it. Field names and defaults are
//! PEFT's; fields PEFT knows but we do not implement are accepted when they hold their default and
//! refused otherwise; keys PEFT does not know either are kept and reported as warnings.
use engine::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// `target_modules` / `exclude_modules`: names (exact or dotted suffix), one full-match regex, or
/// `"all-linear"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    Names(Vec<String>),
    Pattern(String),
}

/// `init_lora_weights`: `true` (A Kaiming-uniform, B zero), `"gaussian"` (A ~ N(0, 1/r), B zero),
/// `false` (A and B both Kaiming-uniform, as nn.Linear: the adapter is not a no-op).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InitLoraWeights {
    Flag(bool),
    Method(String),
}

/// `layers_to_transform`: one index or a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Layers {
    One(usize),
    Many(Vec<usize>),
}

impl Layers {
    pub fn contains(&self, i: usize) -> bool {
        match self {
            Layers::One(x) => *x == i,
            Layers::Many(v) => v.contains(&i),
        }
    }
}

/// `layers_pattern`: a name or a list of names of the module list holding the layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

fn default_r() -> usize {
    8
}
fn default_alpha() -> f32 {
    8.0
}
fn default_bias() -> String {
    "none".into()
}
fn default_init() -> InitLoraWeights {
    InitLoraWeights::Flag(true)
}
fn default_peft_type() -> String {
    "LORA".into()
}

/// PEFT's `LoraConfig`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoraConfig {
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(default = "default_r")]
    pub r: usize,
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    #[serde(default)]
    pub exclude_modules: Option<TargetModules>,
    #[serde(default = "default_alpha")]
    pub lora_alpha: f32,
    #[serde(default)]
    pub lora_dropout: f32,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default = "default_init")]
    pub init_lora_weights: InitLoraWeights,
    #[serde(default)]
    pub layers_to_transform: Option<Layers>,
    #[serde(default)]
    pub layers_pattern: Option<StringOrList>,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f32>,
    /// Every other key of the file, kept so that saving writes it back.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Keys PEFT's LoraConfig has that change nothing at their default value. Any other value is refused,
/// since we would silently compute something else.
const INERT_AT_DEFAULT: &[&str] = &[
    "megatron_config",
    "trainable_token_indices",
    "loftq_config",
    "eva_config",
    "corda_config",
    "lora_ga_config",
    "use_dora",
    "velora_config",
    "alora_invocation_tokens",
    "use_qalora",
    "monteclora_config",
    "layer_replication",
    "lora_bias",
    "target_parameters",
    "use_bdlora",
    "arrow_config",
    "kasa_config",
    "ensure_weight_tying",
];

/// Keys that describe the file rather than the computation.
const INFORMATIONAL: &[&str] = &["auto_mapping", "peft_version", "megatron_core", "qalora_group_size"];

fn is_default_value(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

impl LoraConfig {
    /// A LoRA config with PEFT's defaults for the given targets.
    pub fn new(r: usize, lora_alpha: f32, targets: &[&str]) -> LoraConfig {
        let mut c: LoraConfig = serde_json::from_value(serde_json::json!({})).unwrap_or_else(|_| unreachable!());
        c.r = r;
        c.lora_alpha = lora_alpha;
        c.target_modules = Some(TargetModules::Names(targets.iter().map(|s| s.to_string()).collect()));
        c
    }

    /// Parses and checks a config; returns it with warnings about keys PEFT does not know either.
    pub fn from_json(v: Value) -> Result<(LoraConfig, Vec<String>)> {
        let c: LoraConfig = serde_json::from_value(v)
            .map_err(|e| Error::invalid("adapter_config", format!("not a LoRA config: {e}")))?;
        let warnings = c.validate()?;
        Ok((c, warnings))
    }

    pub fn from_file(path: &Path) -> Result<(LoraConfig, Vec<String>)> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::File { path: path.display().to_string(), detail: format!("not valid JSON: {e}") })?;
        LoraConfig::from_json(v).map_err(|e| Error::File { path: path.display().to_string(), detail: e.to_string() })
    }

    /// Checks the values (PEFT's rules too); returns warnings about unknown keys.
    pub fn validate(&self) -> Result<Vec<String>> {
        let bad = |d: String| Err(Error::invalid("adapter_config", d));
        if self.peft_type != "LORA" {
            return bad(format!("peft_type is `{}`, expected `LORA`", self.peft_type));
        }
        if self.r == 0 {
            return bad("r must be positive".into());
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad(format!("lora_dropout {} is outside [0, 1)", self.lora_dropout));
        }
        if !matches!(self.bias.as_str(), "none" | "all" | "lora_only") {
            return bad(format!("bias `{}` must be none, all or lora_only", self.bias));
        }
        match &self.init_lora_weights {
            InitLoraWeights::Flag(_) => {}
            InitLoraWeights::Method(m) if m == "gaussian" => {}
            InitLoraWeights::Method(m) => {
                return bad(format!("init_lora_weights `{m}` is not supported (true, false, \"gaussian\")"))
            }
        }
        // PEFT's own checks (LoraConfig.__post_init__), so that what loads here loads there.
        if matches!(self.target_modules, Some(TargetModules::Pattern(_))) && self.layers_to_transform.is_some() {
            return bad("`layers_to_transform` cannot be used when `target_modules` is a string (regex)".into());
        }
        if self.layers_pattern.is_some() && self.layers_to_transform.is_none() {
            return bad("`layers_pattern` needs `layers_to_transform`".into());
        }
        if self.rank_pattern.values().any(|&r| r == 0) {
            return bad("rank_pattern ranks must be positive".into());
        }
        let mut warnings = Vec::new();
        for (k, v) in &self.other {
            if INFORMATIONAL.contains(&k.as_str()) {
                continue;
            }
            if INERT_AT_DEFAULT.contains(&k.as_str()) {
                if !is_default_value(v) {
                    return bad(format!("`{k}` = {v} is not supported"));
                }
            } else {
                warnings.push(format!("adapter_config: unknown key `{k}` ignored"));
            }
        }
        Ok(warnings)
    }

    /// Rank of the module at `path` (`rank_pattern` wins over `r`).
    pub fn rank_for(&self, path: &str) -> Result<usize> {
        Ok(match pattern_key(self.rank_pattern.keys(), path)? {
            Some(k) => self.rank_pattern[&k],
            None => self.r,
        })
    }

    /// Alpha of the module at `path` (`alpha_pattern` wins over `lora_alpha`).
    pub fn alpha_for(&self, path: &str) -> Result<f32> {
        Ok(match pattern_key(self.alpha_pattern.keys(), path)? {
            Some(k) => self.alpha_pattern[&k],
            None => self.lora_alpha,
        })
    }

    /// alpha/r, or alpha/√r with `use_rslora`.
    pub fn scaling(&self, r: usize, alpha: f32) -> f32 {
        if self.use_rslora {
            alpha / (r as f32).sqrt()
        } else {
            alpha / r as f32
        }
    }

    /// The JSON PEFT writes: every field, ours first, then the kept unknown ones.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Object(Map::new()));
        if let Value::Object(m) = &mut v {
            m.entry("peft_version").or_insert(Value::String("0.21.2".into()));
        }
        v
    }
}

/// PEFT's `get_pattern_key`: the first pattern `p` with `(.*\.)?(p)$` matching the module path.
fn pattern_key<'a>(patterns: impl Iterator<Item = &'a String>, path: &str) -> Result<Option<String>> {
    for p in patterns {
        let re = regex::Regex::new(&format!(r"^(.*\.)?({p})$"))
            .map_err(|e| Error::invalid("adapter_config", format!("bad pattern `{p}`: {e}")))?;
        if re.is_match(path) {
            return Ok(Some(p.clone()));
        }
    }
    Ok(None)
}
