//! AdapterHub's adapter folder, as `adapters` 1.3.0 writes and reads it:
//! - `adapter_config.json`: `{"config": {BnConfig}, "hidden_size", "model_class", "model_name",
//!   "model_type", "name", "version"}` (sorted keys, indent 2);
//! - `adapter.safetensors`: the adapter's state-dict entries, keys keeping the adapter name
//!   (`encoder.layer.0.output.adapters.houlsby.adapter_down.0.weight`);
//! - with a trained classification head, `head_config.json` + `model_head.safetensors` (`classifier.*`),
//!   as `adapters`' `PredictionHeadLoader` saves a static head;
//! - beyond `adapters` (which cannot hold them): `layer_norms.safetensors` with the base model's layer
//!   norms when they were trained (Houlsby et al.), under the model's own names.
use super::config::{BnConfig, BottleneckSpec};
use super::model::{is_layer_norm, BottleneckModel};
use engine::io::safetensors::write_atomic;
use engine::io::{save_safetensors, SafeTensors};
use engine::models::Model;
use engine::{Error, Result, Tensor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

pub const CONFIG_NAME: &str = "adapter_config.json";
pub const WEIGHTS_NAME: &str = "adapter.safetensors";
pub const HEAD_CONFIG_NAME: &str = "head_config.json";
pub const HEAD_WEIGHTS_NAME: &str = "model_head.safetensors";
pub const LAYER_NORMS_NAME: &str = "layer_norms.safetensors";
/// Ours: which base parameters trained with the adapter (`train_head`, `train_layer_norms`), so that
/// a checkpoint resumes with the same trainable set. `adapters` ignores it.
pub const OPTIONS_NAME: &str = "training_options.json";
/// The `version` field `adapters` writes; files made here claim the format of this release.
const VERSION: &str = "adapters.1.3.0";

/// Whether parameter `name` belongs to the module at `path` (`classifier.bias` under `classifier`).
pub(crate) fn is_under(name: &str, path: &str) -> bool {
    name.strip_prefix(path).is_some_and(|rest| rest.starts_with('.'))
}

/// A key without the base-model prefix a task model adds (`bert.`, `transformer.`, `model.`), so that
/// an adapter saved from `BertModel` loads into `BertForSequenceClassification` and back, as in `adapters`.
fn unprefixed(key: &str) -> &str {
    for p in ["bert.", "transformer.", "model."] {
        if let Some(rest) = key.strip_prefix(p) {
            return rest;
        }
    }
    key
}

fn file_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::File { path: path.display().to_string(), detail: detail.into() }
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(v).map_err(|e| file_err(path, e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    serde_json::from_slice(&bytes).map_err(|e| file_err(path, format!("not valid JSON: {e}")))
}

/// The `adapter_config.json` object for `model`.
fn config_file(model: &BottleneckModel) -> Value {
    let c = model.base().config();
    json!({
        "config": model.spec().config.to_json(),
        "hidden_size": c.hidden_size,
        "model_class": c.architecture.name(),
        "model_name": c.raw.get("_name_or_path").cloned().unwrap_or(Value::Null),
        "model_type": c.model_type,
        "name": model.name(),
        "version": VERSION,
    })
}

/// Writes the adapter folder (every file atomically).
pub fn save(model: &BottleneckModel, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
    let detached = |v: Vec<(String, Tensor)>| -> Result<Vec<(String, Tensor)>> {
        v.into_iter().map(|(n, t)| Ok((n, t.detach().contiguous()?))).collect()
    };
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    save_safetensors(dir.join(WEIGHTS_NAME), &detached(model.adapter_tensors(true))?, Some(&meta))?;
    let base = model.base().named_parameters();
    let heads = model.trainable_heads();
    let head: Vec<(String, Tensor)> =
        base.iter().filter(|(n, _)| heads.iter().any(|h| is_under(n, h))).cloned().collect();
    if !head.is_empty() {
        save_safetensors(dir.join(HEAD_WEIGHTS_NAME), &detached(head)?, Some(&meta))?;
        let c = model.base().config();
        let label2id: serde_json::Map<String, Value> =
            (0..c.num_labels).map(|i| (format!("LABEL_{i}"), json!(i))).collect();
        let head_config = json!({
            "config": null,
            "hidden_size": c.hidden_size,
            "label2id": c.raw.get("label2id").cloned().unwrap_or(Value::Object(label2id)),
            "model_class": c.architecture.name(),
            "model_name": c.raw.get("_name_or_path").cloned().unwrap_or(Value::Null),
            "model_type": c.model_type,
            "name": null,
            "num_labels": c.num_labels,
            "version": VERSION,
        });
        write_json(&dir.join(HEAD_CONFIG_NAME), &head_config)?;
    }
    if model.spec().train_layer_norms {
        let norms: Vec<(String, Tensor)> = base.into_iter().filter(|(n, _)| is_layer_norm(n)).collect();
        save_safetensors(dir.join(LAYER_NORMS_NAME), &detached(norms)?, Some(&meta))?;
    }
    let options = json!({"train_head": model.spec().train_head, "train_layer_norms": model.spec().train_layer_norms});
    write_json(&dir.join(OPTIONS_NAME), &options)?;
    // The config last: a folder with a config has its weights.
    write_json(&dir.join(CONFIG_NAME), &config_file(model))
}

/// Loads an adapter folder onto `base` (see the module docs). Keys of other adapters in the file are
/// reported as warnings; a missing or misshapen tensor of this adapter is an error.
pub fn load(base: Box<dyn Model>, dir: &Path, trainable: bool) -> Result<(BottleneckModel, Vec<String>)> {
    let config_path = dir.join(CONFIG_NAME);
    let file = read_json(&config_path)?;
    let bn_json = file.get("config").ok_or_else(|| file_err(&config_path, "no `config` object"))?;
    let (config, mut warnings) = match bn_json {
        Value::String(preset) => BnConfig::preset(preset, &serde_json::Map::new())?,
        other => BnConfig::from_json(other).map_err(|e| file_err(&config_path, e.to_string()))?,
    };
    let name = match file.get("name").and_then(Value::as_str) {
        Some(n) if super::config::valid_name(n) => n.to_string(),
        other => return Err(file_err(&config_path, format!("`name` {other:?} is not a usable adapter name"))),
    };
    let c = base.config();
    if let Some(h) = file.get("hidden_size").and_then(Value::as_u64) {
        if h as usize != c.hidden_size {
            return Err(file_err(
                &config_path,
                format!("the adapter was made for hidden size {h}, the model has {}", c.hidden_size),
            ));
        }
    }
    if let Some(t) = file.get("model_type").and_then(Value::as_str) {
        if t != c.model_type {
            warnings.push(format!("the adapter was saved from a `{t}` model, loading it into `{}`", c.model_type));
        }
    }
    // Without our options file (a folder `adapters` wrote): its `train_adapter` trains the head only.
    let options_path = dir.join(OPTIONS_NAME);
    let options = if options_path.is_file() { read_json(&options_path)? } else { json!({}) };
    let option = |k: &str, default: bool| -> Result<bool> {
        match options.get(k) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(file_err(&options_path, format!("`{k}` must be true or false, got {other}"))),
        }
    };
    let train_layer_norms = option("train_layer_norms", dir.join(LAYER_NORMS_NAME).is_file())?;
    let spec =
        BottleneckSpec { name: name.clone(), config, train_layer_norms, train_head: option("train_head", true)? };
    let mut model = BottleneckModel::install(base, spec, 0, trainable)?;

    let weights_path = dir.join(WEIGHTS_NAME);
    let st = SafeTensors::open(&weights_path)?;
    let by_key: HashMap<&str, &str> = st.names().map(|k| (unprefixed(k), k)).collect();
    let mut used: HashSet<String> = HashSet::new();
    for i in &model.installed {
        let prefix = format!("{}.adapters.{name}.", i.path);
        i.hook.weights.load(&mut |rel, shape| {
            let want = format!("{prefix}{rel}");
            let key = by_key
                .get(unprefixed(&want))
                .ok_or_else(|| file_err(&weights_path, format!("missing `{want}` (adapter `{name}`)")))?;
            let t = st.tensor_f32(key)?;
            if t.shape() != shape {
                return Err(file_err(
                    &weights_path,
                    format!("`{key}` has shape {:?}, the adapter needs {shape:?}", t.shape()),
                ));
            }
            used.insert(key.to_string());
            Ok(t)
        })?;
        // `ln_before`'s second name carries the same tensor.
        for (alias, _) in i.hook.weights.named_tensors(true) {
            if let Some(k) = by_key.get(unprefixed(&format!("{prefix}{alias}"))) {
                used.insert(k.to_string());
            }
        }
    }
    let mut unused: Vec<&str> = st.names().filter(|k| !used.contains(*k)).collect();
    unused.sort_unstable();
    let ours = format!(".adapters.{name}.");
    if let Some(k) = unused.iter().find(|k| k.contains(&ours)) {
        return Err(file_err(
            &weights_path,
            format!("`{k}` belongs to adapter `{name}` but not to the places its config puts adapters"),
        ));
    }
    warnings.extend(unused.iter().map(|k| format!("{}: ignored `{k}` (not adapter `{name}`)", weights_path.display())));

    for file_name in [HEAD_WEIGHTS_NAME, LAYER_NORMS_NAME] {
        let path = dir.join(file_name);
        if path.exists() {
            load_base_tensors(model.base_mut(), &path)?;
        }
    }
    if trainable {
        model.set_base_trainable()?;
    }
    model.push_warnings(warnings.clone());
    Ok((model, warnings))
}

/// Copies every tensor of a safetensors file into the base parameter of the same name.
fn load_base_tensors(base: &mut dyn Model, path: &Path) -> Result<()> {
    let st = SafeTensors::open(path)?;
    let params: HashMap<String, Tensor> = base.named_parameters().into_iter().collect();
    for key in st.names() {
        let p = params
            .get(key)
            .or_else(|| params.iter().find(|(n, _)| unprefixed(n) == unprefixed(key)).map(|(_, t)| t))
            .ok_or_else(|| file_err(path, format!("`{key}` is not a parameter of the model")))?;
        let t = st.tensor_f32(key)?;
        if t.shape() != p.shape() {
            return Err(file_err(path, format!("`{key}` has shape {:?}, the model's {:?}", t.shape(), p.shape())));
        }
        p.assign(&t)?;
    }
    Ok(())
}
