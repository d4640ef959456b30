//! AdapterHub's bottleneck config (`BnConfig` of `adapters` 1.3.0) and its presets, read from a train
//! config's `peft` section or from the `config` object of an AdapterHub `adapter_config.json`.
//!
//! The config is kept as the JSON object `adapters` writes (every field, sorted), so that a file we
//! save loads in `adapters` with the same settings; the fields the computation reads are parsed
//! from it once and checked.
use engine::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// `scaling`: a constant, `"learned"` (one trainable scalar, initialised to 1) or `"channel"`
/// (a trainable vector over the hidden size, initialised to 1).
#[derive(Clone, Debug, PartialEq)]
pub enum Scaling {
    Fixed(f32),
    Learned,
    Channel,
}

/// `residual_before_ln`: where the adapter's own residual is taken (see [`super::adapter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResidualBeforeLn {
    /// `true`: the sublayer output, before the block's residual and norm.
    Before,
    /// `false`: the adapter's input (after the block's residual and norm when `original_ln_before`).
    After,
    /// `"post_add"`: the sum sublayer output + block residual, before the norm.
    PostAdd,
}

/// How an adapter's weights are initialised (`init_weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitWeights {
    /// Linear weights N(0, 0.02), biases 0 (BERT's init).
    Bert,
    /// Down-projection Kaiming-uniform (PyTorch's Linear default), up-projection zeros (He et al.).
    MamAdapter,
    /// Both projections truncated N(0, 0.01²) cut at ±0.02, biases 0 (Houlsby et al.).
    Houlsby,
}

/// The fields of `BnConfig` the computation reads, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct BnConfig {
    pub mh_adapter: bool,
    pub output_adapter: bool,
    /// The factor for all layers, or per layer (`{"1": 8, "default": 16}`).
    pub reduction_factor: BTreeMap<String, f64>,
    pub non_linearity: String,
    pub original_ln_before: bool,
    pub original_ln_after: bool,
    pub ln_before: bool,
    pub ln_after: bool,
    pub init_weights: InitWeights,
    pub init_weights_seed: Option<u64>,
    pub is_parallel: bool,
    pub scaling: Scaling,
    pub use_gating: bool,
    pub residual_before_ln: ResidualBeforeLn,
    pub adapter_residual_before_ln: bool,
    pub leave_out: Vec<usize>,
    pub dropout: f32,
    pub stochastic_depth: f32,
    /// The whole object as `adapters` writes it (what is saved back).
    pub raw: Map<String, Value>,
}

/// `BnConfig`'s defaults for every field (the required ones come from a preset or the user).
fn base_defaults() -> Map<String, Value> {
    let v = json!({
        "adapter_residual_before_ln": false,
        "cross_adapter": false,
        "dropout": 0.0,
        "factorized_phm_W": true,
        "factorized_phm_rule": false,
        "hypercomplex_nonlinearity": "glorot-uniform",
        "init_weights": "bert",
        "init_weights_seed": null,
        "inv_adapter": null,
        "inv_adapter_reduction_factor": null,
        "is_parallel": false,
        "learn_phm": true,
        "leave_out": [],
        "ln_after": false,
        "ln_before": false,
        "original_ln_after": true,
        "original_ln_before": false,
        "phm_bias": true,
        "phm_c_init": "normal",
        "phm_dim": 4,
        "phm_init_range": 0.0001,
        "phm_layer": false,
        "phm_rank": 1,
        "residual_before_ln": true,
        "scaling": 1.0,
        "shared_W_phm": false,
        "shared_phm_rule": true,
        "stochastic_depth": 0.0,
        "use_gating": false
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The presets of `adapters`' `ADAPTER_CONFIG_MAP` that are bottleneck adapters, with their field
/// values over the base defaults.
fn preset_fields(name: &str) -> Option<Value> {
    let seq_bn = json!({
        "original_ln_before": true, "original_ln_after": true, "residual_before_ln": true,
        "adapter_residual_before_ln": false, "ln_before": false, "ln_after": false,
        "mh_adapter": false, "output_adapter": true, "non_linearity": "relu", "reduction_factor": 16
    });
    let double_seq_bn = json!({
        "original_ln_before": false, "original_ln_after": true, "residual_before_ln": true,
        "adapter_residual_before_ln": false, "ln_before": false, "ln_after": false,
        "mh_adapter": true, "output_adapter": true, "non_linearity": "swish", "reduction_factor": 16
    });
    let par_bn = json!({
        "original_ln_before": false, "original_ln_after": true, "ln_before": false, "ln_after": false,
        "mh_adapter": false, "output_adapter": true, "non_linearity": "relu", "reduction_factor": 2,
        "init_weights": "mam_adapter", "is_parallel": true, "scaling": 4.0
    });
    let mut scaled_par_bn = par_bn.clone();
    scaled_par_bn["scaling"] = json!("learned");
    match name {
        "seq_bn" | "pfeiffer" => Some(seq_bn),
        "double_seq_bn" | "houlsby" => Some(double_seq_bn),
        "par_bn" | "parallel" => Some(par_bn),
        "scaled_par_bn" | "scaled_parallel" => Some(scaled_par_bn),
        _ => None,
    }
}

/// The bottleneck presets this crate knows, by the names `adapters` accepts.
pub const PRESETS: [&str; 8] =
    ["seq_bn", "pfeiffer", "double_seq_bn", "houlsby", "par_bn", "parallel", "scaled_par_bn", "scaled_parallel"];

fn bad(detail: impl Into<String>) -> Error {
    Error::invalid("bottleneck config", detail.into())
}

impl BnConfig {
    /// A preset (`"double_seq_bn"`, `"seq_bn"`, `"par_bn"`, … or their old names) with `overrides`.
    pub fn preset(name: &str, overrides: &Map<String, Value>) -> Result<(BnConfig, Vec<String>)> {
        let Some(Value::Object(fields)) = preset_fields(name) else {
            return Err(bad(format!("unknown bottleneck preset `{name}` (known: {})", PRESETS.join(", "))));
        };
        let mut raw = base_defaults();
        raw.extend(fields);
        raw.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        BnConfig::from_map(raw)
    }

    /// A full or partial `BnConfig` object (as in `adapter_config.json`'s `config`): missing fields get
    /// `BnConfig`'s defaults; `mh_adapter`, `output_adapter`, `reduction_factor` and `non_linearity`
    /// are required as in `adapters`. Returns warnings for fields this version does not know.
    pub fn from_json(v: &Value) -> Result<(BnConfig, Vec<String>)> {
        let Value::Object(obj) = v else {
            return Err(bad(format!("must be a JSON object, got {v}")));
        };
        if let Some(arch) = obj.get("architecture") {
            if arch.as_str() != Some("bottleneck") {
                return Err(bad(format!("`architecture` is {arch}, only \"bottleneck\" adapters are supported here")));
            }
        }
        let mut raw = base_defaults();
        raw.extend(obj.iter().filter(|(k, _)| k.as_str() != "architecture").map(|(k, v)| (k.clone(), v.clone())));
        BnConfig::from_map(raw)
    }

    fn from_map(mut raw: Map<String, Value>) -> Result<(BnConfig, Vec<String>)> {
        if let Some(Value::Number(n)) = raw.get("scaling") {
            // `adapters` only takes a Python float: keep it one in the file (4 → 4.0).
            let f = n.as_f64().unwrap_or(1.0);
            raw.insert("scaling".into(), json!(f));
        }
        let known = base_defaults();
        let required = ["mh_adapter", "output_adapter", "reduction_factor", "non_linearity"];
        let warnings: Vec<String> = raw
            .keys()
            .filter(|k| !known.contains_key(*k) && !required.contains(&k.as_str()))
            .map(|k| format!("bottleneck config: unknown field `{k}` kept but not used"))
            .collect();
        for r in required {
            if !raw.contains_key(r) {
                return Err(bad(format!("`{r}` is required (or start from a preset: {})", PRESETS.join(", "))));
            }
        }
        let flag = |k: &str| -> Result<bool> {
            raw.get(k).and_then(Value::as_bool).ok_or_else(|| bad(format!("`{k}` must be true or false")))
        };
        let number = |k: &str| -> Result<f64> {
            raw.get(k).and_then(Value::as_f64).ok_or_else(|| bad(format!("`{k}` must be a number")))
        };
        // Parts of `BnConfig` this crate does not compute: refuse rather than compute something else.
        if flag("phm_layer")? {
            return Err(bad("phm_layer (Compacter's PHM projections) is not supported"));
        }
        if !raw.get("inv_adapter").is_none_or(Value::is_null) {
            return Err(bad("inv_adapter (invertible adapters after the embeddings) is not supported"));
        }
        let reduction_factor = match raw.get("reduction_factor") {
            Some(Value::Number(n)) => BTreeMap::from([("default".to_string(), n.as_f64().unwrap_or(0.0))]),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let f = v.as_f64().ok_or_else(|| bad(format!("reduction_factor[{k}] must be a number")))?;
                    Ok((k.clone(), f))
                })
                .collect::<Result<_>>()?,
            other => return Err(bad(format!("`reduction_factor` must be a number or a layer map, got {other:?}"))),
        };
        for (k, f) in &reduction_factor {
            if !(*f > 0.0 && f.is_finite()) {
                return Err(bad(format!("reduction_factor[{k}] = {f} must be positive")));
            }
            if k != "default" && k.parse::<usize>().is_err() {
                return Err(bad(format!("reduction_factor key `{k}` is neither a layer number nor \"default\"")));
            }
        }
        let non_linearity = raw
            .get("non_linearity")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("`non_linearity` must be a string"))?
            .to_lowercase();
        super::adapter::check_activation(&non_linearity)?;
        let init_weights = match raw.get("init_weights").and_then(Value::as_str) {
            Some("bert") => InitWeights::Bert,
            Some("mam_adapter") => InitWeights::MamAdapter,
            Some("houlsby") => InitWeights::Houlsby,
            other => {
                return Err(bad(format!("init_weights {other:?}: expected \"bert\", \"mam_adapter\" or \"houlsby\"")))
            }
        };
        let init_weights_seed = match raw.get("init_weights_seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| bad("`init_weights_seed` must be a non-negative integer"))?),
        };
        let scaling = match raw.get("scaling") {
            Some(Value::Number(n)) => {
                let s = n.as_f64().unwrap_or(f64::NAN) as f32;
                if !s.is_finite() {
                    return Err(bad("`scaling` must be finite"));
                }
                Scaling::Fixed(s)
            }
            Some(Value::String(s)) if s == "learned" => Scaling::Learned,
            Some(Value::String(s)) if s == "channel" => Scaling::Channel,
            other => return Err(bad(format!("`scaling` must be a number, \"learned\" or \"channel\", got {other:?}"))),
        };
        let residual_before_ln = match raw.get("residual_before_ln") {
            Some(Value::Bool(true)) => ResidualBeforeLn::Before,
            Some(Value::Bool(false)) => ResidualBeforeLn::After,
            Some(Value::String(s)) if s == "post_add" => ResidualBeforeLn::PostAdd,
            other => {
                return Err(bad(format!("`residual_before_ln` must be true, false or \"post_add\", got {other:?}")))
            }
        };
        let leave_out = match raw.get("leave_out") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|u| u as usize).ok_or_else(|| bad("`leave_out` must list layer numbers")))
                .collect::<Result<_>>()?,
            _ => return Err(bad("`leave_out` must be a list of layer numbers")),
        };
        let prob = |k: &str| -> Result<f32> {
            let p = number(k)?;
            if !(0.0..1.0).contains(&p) {
                return Err(bad(format!("`{k}` = {p} must be in [0, 1)")));
            }
            Ok(p as f32)
        };
        let config = BnConfig {
            mh_adapter: flag("mh_adapter")?,
            output_adapter: flag("output_adapter")?,
            reduction_factor,
            non_linearity,
            original_ln_before: flag("original_ln_before")?,
            original_ln_after: flag("original_ln_after")?,
            ln_before: flag("ln_before")?,
            ln_after: flag("ln_after")?,
            init_weights,
            init_weights_seed,
            is_parallel: flag("is_parallel")?,
            scaling,
            use_gating: flag("use_gating")?,
            residual_before_ln,
            adapter_residual_before_ln: flag("adapter_residual_before_ln")?,
            leave_out,
            dropout: prob("dropout")?,
            stochastic_depth: prob("stochastic_depth")?,
            raw,
        };
        Ok((config, warnings))
    }

    /// The object `adapters` writes as `config` in `adapter_config.json`.
    pub fn to_json(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// The reduction factor of layer `layer` (its own entry, else `default`).
    pub fn reduction_for(&self, layer: usize) -> Result<f64> {
        self.reduction_factor.get(&layer.to_string()).or_else(|| self.reduction_factor.get("default")).copied().ok_or_else(
            || {
                bad(format!(
                    "reduction_factor has no entry for layer {layer} and no \"default\" (e.g. {{\"1\": 8, \"default\": 16}})"
                ))
            },
        )
    }

    /// The bottleneck width `adapters` gives layer `layer`: `int(hidden // reduction_factor)`, at least 1.
    pub fn bottleneck_size(&self, hidden: usize, layer: usize) -> Result<usize> {
        let rf = self.reduction_for(layer)?;
        Ok(((hidden as f64 / rf).floor() as usize).max(1))
    }
}

/// What a train config's `peft` section asks for: the adapter's name, its `BnConfig`, and which base
/// parameters train besides the adapter.
#[derive(Clone, Debug)]
pub struct BottleneckSpec {
    /// The adapter name kept in the file's keys (`…adapters.<name>.adapter_down.0.weight`).
    pub name: String,
    pub config: BnConfig,
    /// Train the base model's layer norms too, as Houlsby et al. do. Default false: `adapters`'
    /// `train_adapter` freezes them, and a file it loads cannot hold them.
    pub train_layer_norms: bool,
    /// Train a classification head (`classifier`), as Houlsby et al. and `adapters` (whose
    /// `train_adapter` leaves a task model's head trainable) do. Default true. Causal LM heads are
    /// tied to the embeddings and stay frozen.
    pub train_head: bool,
}

const SPEC_KEYS: [&str; 6] = ["name", "train_layer_norms", "train_head", "preset", "config", "architecture"];

impl BottleneckSpec {
    /// From a `peft` section in one of three forms:
    /// `{"preset": "double_seq_bn", "reduction_factor": 16, …}` (a preset with field overrides),
    /// `{"config": {…BnConfig…} | "preset"}` (as in `adapter_config.json`), or
    /// `{"architecture": "bottleneck", …BnConfig fields…}`; each may add `name`, `train_layer_norms`
    /// and `train_head`.
    pub fn from_section(section: &Value) -> Result<(BottleneckSpec, Vec<String>)> {
        let Value::Object(obj) = section else {
            return Err(bad(format!("the peft section must be a JSON object, got {section}")));
        };
        let flag = |k: &str, default: bool| -> Result<bool> {
            match obj.get(k) {
                None => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(bad(format!("`{k}` must be true or false, got {other}"))),
            }
        };
        if let Some(arch) = obj.get("architecture") {
            if arch.as_str() != Some("bottleneck") {
                return Err(bad(format!("`architecture` is {arch}, a bottleneck section needs \"bottleneck\"")));
            }
        }
        let fields: Map<String, Value> =
            obj.iter().filter(|(k, _)| !SPEC_KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        let known = base_defaults();
        let required = ["mh_adapter", "output_adapter", "reduction_factor", "non_linearity"];
        if let Some(k) = fields.keys().find(|k| !known.contains_key(*k) && !required.contains(&k.as_str())) {
            return Err(bad(format!("unknown field `{k}` in the bottleneck section")));
        }
        let (config, warnings, default_name) = match (obj.get("preset"), obj.get("config")) {
            (Some(_), Some(_)) => return Err(bad("give either `preset` or `config`, not both")),
            (Some(Value::String(p)), None) => {
                let (c, w) = BnConfig::preset(p, &fields)?;
                (c, w, p.clone())
            }
            (Some(other), None) => return Err(bad(format!("`preset` must be a preset name, got {other}"))),
            (None, Some(Value::String(p))) => {
                let (c, w) = BnConfig::preset(p, &fields)?;
                (c, w, p.clone())
            }
            (None, Some(Value::Object(c))) => {
                if !fields.is_empty() {
                    return Err(bad("with a `config` object, put every BnConfig field inside it"));
                }
                let (c, w) = BnConfig::from_json(&Value::Object(c.clone()))?;
                (c, w, "bottleneck".to_string())
            }
            (None, Some(other)) => {
                return Err(bad(format!("`config` must be an object or a preset name, got {other}")))
            }
            (None, None) => {
                if obj.get("architecture").and_then(Value::as_str) != Some("bottleneck") {
                    return Err(bad("name a `preset`, give a `config`, or set \"architecture\": \"bottleneck\""));
                }
                let (c, w) = BnConfig::from_json(&Value::Object(fields))?;
                (c, w, "bottleneck".to_string())
            }
        };
        let name = match obj.get("name") {
            None => default_name,
            Some(Value::String(s)) if valid_name(s) => s.clone(),
            Some(other) => {
                return Err(bad(format!("`name` {other} must be a non-empty string without dots or slashes")));
            }
        };
        let spec = BottleneckSpec {
            name,
            config,
            train_layer_norms: flag("train_layer_norms", false)?,
            train_head: flag("train_head", true)?,
        };
        Ok((spec, warnings))
    }
}

impl BottleneckSpec {
    /// The spec as one JSON object (resume checks, summaries): `name`, `config`, and the two options.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "config": self.config.to_json(),
            "train_layer_norms": self.train_layer_norms,
            "train_head": self.train_head,
        })
    }
}

/// An adapter name must survive as one segment of a parameter key.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['.', '/', '\\'])
}
