//! The seam every PEFT method plugs into: [`AdapterModel`] is what the trainer, the evaluator and the
//! CLI need from a model with an adapter, whatever the method; [`build_adapter_model`] makes a fresh
//! one from a train config's `peft` section and [`load_adapter_model`] loads a saved adapter folder,
//! each choosing the method from the config (`peft_type`, or an AdapterHub config).
use crate::config::LoraConfig;
use crate::eval::{batch_logits, task_loss};
use crate::train::config::{Task, CLASSIFIER_MODULES};
use crate::train::data::Batch;
use crate::PeftModel;
use engine::io::SafeTensors;
use engine::models::{Architecture, Model, ModelConfig};
use engine::{Error, Result, Tensor};
use serde_json::Value;
use std::path::Path;

/// The name the adapter has inside the model (PEFT's default).
pub const ADAPTER_NAME: &str = "default";

/// What the trainer, evaluator and CLI need from any PEFT method's model.
pub trait AdapterModel: engine::models::Model {
    /// PEFT's `peft_type` ("LORA", "PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING") or "BOTTLENECK" (AdapterHub).
    fn peft_type(&self) -> &'static str;
    /// Trainable tensors with the names PEFT/adapters give them (what the grad fixtures call `param.<name>`).
    fn trainable_parameters(&self) -> Vec<(String, Tensor)>;
    /// Every tensor the adapter holds outside the base model's parameters (all named adapters, encoders,
    /// the heads' copies and the originals they replaced), trainable or not: what has to move with the
    /// model to another device.
    fn adapter_tensors(&self) -> Vec<Tensor>;
    /// (trainable, total) exactly as PEFT's / adapters' own count reports them.
    fn parameter_counts(&self) -> (usize, usize);
    /// PEFT's "trainable params: … || all params: … || trainable%: …" line (default impl from the counts).
    fn trainable_parameters_line(&self) -> String {
        let (t, a) = self.parameter_counts();
        trainable_line(t, a)
    }
    /// Dropout on (training) or off.
    fn train(&self, on: bool);
    /// Seeds dropout masks by (seed, optimizer step) for exact resumption.
    fn set_dropout_seed(&self, seed: u64, step: u64);
    /// Writes the active adapter in its ecosystem's format, atomically (PEFT folder / AdapterHub folder).
    fn save_adapter(&self, dir: &Path) -> Result<()>;
    /// The adapter config as JSON (resume checks, summaries).
    fn adapter_config_json(&self) -> serde_json::Value;

    /// Input positions the method occupies besides the tokens (a soft prompt's virtual tokens), so that
    /// callers keep `tokens + this` within the model's position embeddings.
    fn virtual_positions(&self) -> usize {
        0
    }

    /// How many terms the loss of [`AdapterModel::batch_loss`] averages over (the batch's `items`,
    /// plus what the method's extra positions predict), so that means over several batches weigh
    /// each term once.
    fn loss_terms(&self, _task: Task, batch: &Batch) -> usize {
        batch.items
    }

    /// The logits of a batch (one per real position / per sequence) and the task's training loss on it.
    /// Methods whose extra positions take part in the loss (a soft prompt's last virtual position
    /// predicts the first token of a causal LM) override this.
    fn batch_loss(&self, task: Task, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let logits = batch_logits(self, batch)?;
        let loss = task_loss(task, &logits, &batch.labels)?;
        Ok((logits, loss))
    }
}

/// The `Model` methods a method's wrapper passes unchanged to its `base` field (everything but
/// `forward`, which is where methods differ): `impl Model for W { fn forward(…) {…}
/// crate::method::forward_model_to_base!(); }`.
macro_rules! forward_model_to_base {
    () => {
        fn config(&self) -> &engine::models::ModelConfig {
            self.base.config()
        }
        fn embed_tokens(&self, ids: &engine::Tensor) -> engine::Result<engine::Tensor> {
            self.base.embed_tokens(ids)
        }
        fn named_parameters(&self) -> Vec<(String, engine::Tensor)> {
            self.base.named_parameters()
        }
        fn visit_parameters(
            &mut self,
            f: &mut dyn FnMut(&str, &mut engine::Tensor) -> engine::Result<()>,
        ) -> engine::Result<()> {
            self.base.visit_parameters(f)
        }
        fn visit_linears(
            &mut self,
            f: &mut dyn FnMut(&str, &mut engine::nn::HookedLinear) -> engine::Result<()>,
        ) -> engine::Result<()> {
            self.base.visit_linears(f)
        }
        fn head_paths(&self) -> Vec<String> {
            self.base.head_paths()
        }
    };
}
pub(crate) use forward_model_to_base;

/// Moves the base model's parameters and every adapter tensor to `device`, in place.
pub fn move_to_device(model: &mut dyn AdapterModel, device: engine::Device) -> Result<()> {
    for t in model.adapter_tensors() {
        t.move_storage(device)?;
    }
    engine::models::move_to_device(model, device)
}

/// PEFT's `print_trainable_parameters` line.
pub fn trainable_line(trainable: usize, all: usize) -> String {
    format!(
        "trainable params: {} || all params: {} || trainable%: {:.4}",
        thousands(trainable),
        thousands(all),
        100.0 * trainable as f64 / all.max(1) as f64
    )
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// LoRA as the seam sees it: the active adapter of a [`PeftModel`].
impl AdapterModel for PeftModel {
    fn peft_type(&self) -> &'static str {
        "LORA"
    }
    fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        PeftModel::trainable_parameters(self)
    }
    fn adapter_tensors(&self) -> Vec<Tensor> {
        PeftModel::adapter_tensors(self)
    }
    fn parameter_counts(&self) -> (usize, usize) {
        PeftModel::parameter_counts(self)
    }
    fn train(&self, on: bool) {
        PeftModel::train(self, on)
    }
    fn set_dropout_seed(&self, seed: u64, step: u64) {
        PeftModel::set_dropout_seed(self, seed, step)
    }
    fn save_adapter(&self, dir: &Path) -> Result<()> {
        let name = self.active_adapter().ok_or_else(|| Error::invalid("save_adapter", "no active adapter"))?;
        PeftModel::save_adapter(self, dir, name)
    }
    fn adapter_config_json(&self) -> Value {
        self.active_adapter().and_then(|a| self.config(a)).map(LoraConfig::to_json).unwrap_or(Value::Null)
    }
}

/// The `peft_type` a train config's `peft` section or an `adapter_config.json` names (LORA when absent,
/// as before other methods existed); `BOTTLENECK` for an AdapterHub config.
pub fn section_method(section: &Value) -> Result<String> {
    let Value::Object(obj) = section else {
        return Err(Error::invalid("peft config", "must be a JSON object"));
    };
    let adapterhub = obj.get("architecture").and_then(Value::as_str) == Some("bottleneck")
        || obj.contains_key("preset")
        || obj.get("config").is_some_and(Value::is_object);
    if adapterhub {
        return Ok("BOTTLENECK".into());
    }
    match obj.get("peft_type") {
        None | Some(Value::Null) => Ok("LORA".into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(Error::invalid("peft config", format!("`peft_type` must be a string, got {other}"))),
    }
}

/// A PEFT config section with the task's defaults filled in as PEFT's `get_peft_model` would have them:
/// `task_type` from `task` (a different one is an error), and for classification the classifier heads
/// (`classifier`, `score`) in `modules_to_save`.
pub fn with_task_defaults(section: &Value, task: Task) -> Result<Value> {
    let bad = |detail: String| Error::invalid("train config", format!("`peft`: {detail}"));
    let Value::Object(obj) = section else {
        return Err(bad("must be an object of PEFT config fields".into()));
    };
    let mut obj = obj.clone();
    let t = obj.entry("task_type").or_insert_with(|| Value::String(task.peft_task_type().into()));
    match t.as_str() {
        Some(t) if Task::from_peft_task_type(t) == Some(task) => {}
        Some(t) => {
            return Err(bad(format!(
                "task_type `{t}` does not match task `{}` (expected {})",
                task.name(),
                task.peft_task_type()
            )))
        }
        None => return Err(bad(format!("task_type must be a string, got {t}"))),
    }
    if task.is_classification() {
        let list = obj.entry("modules_to_save").or_insert_with(|| Value::Array(Vec::new()));
        if list.is_null() {
            *list = Value::Array(Vec::new());
        }
        let Value::Array(list) = list else {
            return Err(bad("modules_to_save must be a list of module names".into()));
        };
        for m in CLASSIFIER_MODULES {
            if !list.iter().any(|x| x.as_str() == Some(m)) {
                list.push(Value::String(m.into()));
            }
        }
    }
    Ok(Value::Object(obj))
}

/// The LoRA config of a train config's `peft` section (task defaults applied). Keys PEFT does not know
/// are errors here: the run file is ours, and a misspelled key must not fall back to a default.
pub fn lora_config_from_section(section: &Value, task: Task) -> Result<LoraConfig> {
    let bad = |detail: String| Error::invalid("train config", format!("`peft`: {detail}"));
    let full = with_task_defaults(section, task)?;
    let (config, warnings) = LoraConfig::from_json(full).map_err(|e| bad(e.to_string()))?;
    if let Some(w) = warnings.first() {
        return Err(bad(w.replace("adapter_config: ", "").replace(" ignored", " (not a LoraConfig field)")));
    }
    Ok(config)
}

/// The prompt-tuning / P-tuning config of a train config's `peft` section (task defaults applied);
/// unknown keys are errors, as for LoRA.
pub fn prompt_config_from_section(section: &Value, task: Task) -> Result<crate::prompt::PromptConfig> {
    let full = with_task_defaults(section, task)?;
    let bad = |detail: String| Error::invalid("train config", format!("`peft`: {detail}"));
    let (config, warnings) = crate::prompt::PromptConfig::from_json(full).map_err(|e| bad(e.to_string()))?;
    if let Some(w) = warnings.first() {
        return Err(bad(w
            .replace("adapter_config: ", "")
            .replace(" ignored", " (not a field of this method's config)")));
    }
    Ok(config)
}

/// Checks a train config's `peft` section without building anything: the config of the method it
/// names must parse and validate.
pub fn check_section(section: &Value, task: Task) -> Result<()> {
    match section_method(section)?.as_str() {
        "LORA" => lora_config_from_section(section, task).map(|_| ()),
        "PROMPT_TUNING" | "P_TUNING" => prompt_config_from_section(section, task).map(|_| ()),
        "PREFIX_TUNING" => crate::prefix::config::config_from_section(section, task).map(|_| ()),
        "BOTTLENECK" => crate::bottleneck::BottleneckSpec::from_section(section).map(|_| ()),
        _ => Ok(()),
    }
}

/// The adapter config a `peft` section makes, as the built model's [`AdapterModel::adapter_config_json`]
/// gives it (to check that a checkpoint was made with the same config); `None` for methods whose
/// config JSON is not derived here.
pub fn section_config_json(section: &Value, task: Task) -> Result<Option<Value>> {
    match section_method(section)?.as_str() {
        "LORA" => Ok(Some(lora_config_from_section(section, task)?.to_json())),
        "PROMPT_TUNING" | "P_TUNING" => Ok(Some(prompt_config_from_section(section, task)?.to_json())),
        "BOTTLENECK" => Ok(Some(crate::bottleneck::BottleneckSpec::from_section(section)?.0.to_json())),
        "PREFIX_TUNING" => Ok(Some(crate::prefix::config::config_from_section(section, task)?.to_json())),
        _ => Ok(None),
    }
}

/// A fresh adapter on `base` from a train config's `peft` section: `peft_type` LORA (the default),
/// PROMPT_TUNING, P_TUNING, PREFIX_TUNING, or an AdapterHub bottleneck config.
pub fn build_adapter_model(
    base: Box<dyn Model>,
    peft_section: &Value,
    task: Task,
    seed: u64,
) -> Result<Box<dyn AdapterModel>> {
    match section_method(peft_section)?.as_str() {
        "LORA" => {
            let config = lora_config_from_section(peft_section, task)?;
            let mut model = PeftModel::new(base);
            model.add_adapter(ADAPTER_NAME, config, seed)?;
            Ok(Box::new(model))
        }
        "PROMPT_TUNING" | "P_TUNING" => {
            let config = prompt_config_from_section(peft_section, task)?;
            Ok(Box::new(crate::prompt::PromptModel::new(base, config, seed)?))
        }
        "PREFIX_TUNING" => {
            let config = crate::prefix::config::config_from_section(peft_section, task)?;
            Ok(Box::new(crate::prefix::PrefixModel::new(base, config, seed)?))
        }
        "BOTTLENECK" => Ok(Box::new(crate::bottleneck::BottleneckModel::new(base, peft_section, seed)?)),
        other => Err(unsupported(other)),
    }
}

/// Loads a saved adapter folder on `base`: an AdapterHub folder (`adapter.safetensors`, or an
/// `adapter_config.json` wrapping a `config` object) is a bottleneck adapter; otherwise PEFT's
/// `adapter_config.json` names the method by `peft_type`. Returns the model and load warnings.
pub fn load_adapter_model(
    base: Box<dyn Model>,
    adapter_dir: &Path,
    trainable: bool,
) -> Result<(Box<dyn AdapterModel>, Vec<String>)> {
    match adapter_method(adapter_dir)?.as_str() {
        "LORA" => {
            let mut model = PeftModel::new(base);
            let warnings = model.load_adapter(adapter_dir, ADAPTER_NAME, trainable)?;
            Ok((Box::new(model), warnings))
        }
        "PROMPT_TUNING" | "P_TUNING" => {
            let (model, warnings) = crate::prompt::PromptModel::load(base, adapter_dir, trainable)?;
            Ok((Box::new(model), warnings))
        }
        "PREFIX_TUNING" => {
            let (model, warnings) = crate::prefix::PrefixModel::load(base, adapter_dir, trainable)?;
            Ok((Box::new(model), warnings))
        }
        "BOTTLENECK" => {
            let (model, warnings) = crate::bottleneck::BottleneckModel::load(base, adapter_dir, trainable)?;
            Ok((Box::new(model), warnings))
        }
        other => Err(unsupported(other)),
    }
}

fn unsupported(method: &str) -> Error {
    Error::invalid(
        "peft config",
        format!("peft_type `{method}` is not supported (LORA, PROMPT_TUNING, P_TUNING, PREFIX_TUNING, or an AdapterHub config)"),
    )
}

/// The `adapter_config.json` of a folder as JSON.
pub fn read_adapter_config(adapter_dir: &Path) -> Result<Value> {
    let path = adapter_dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::File { path: path.display().to_string(), detail: format!("not valid JSON: {e}") })
}

/// The method of a saved adapter folder (see [`load_adapter_model`]).
pub fn adapter_method(adapter_dir: &Path) -> Result<String> {
    if !adapter_dir.is_dir() {
        return Err(Error::File { path: adapter_dir.display().to_string(), detail: "adapter folder not found".into() });
    }
    if adapter_dir.join("adapter.safetensors").is_file() {
        return Ok("BOTTLENECK".into());
    }
    let config = read_adapter_config(adapter_dir)?;
    section_method(&config).map_err(|e| Error::File {
        path: adapter_dir.join("adapter_config.json").display().to_string(),
        detail: e.to_string(),
    })
}

/// The task a PEFT adapter folder was saved for (`task_type`), if it names one we know.
pub fn adapter_task(adapter_dir: &Path) -> Result<Option<Task>> {
    if adapter_dir.join("adapter.safetensors").is_file() {
        return crate::bottleneck::adapter_task(adapter_dir);
    }
    let config = read_adapter_config(adapter_dir)?;
    Ok(config.get("task_type").and_then(Value::as_str).and_then(Task::from_peft_task_type))
}

/// The classifier size a PEFT adapter file carries (`…classifier.weight` / `…score.weight` rows).
pub fn adapter_num_labels(adapter_dir: &Path) -> Result<Option<usize>> {
    if let Some(n) = crate::bottleneck::head_labels(adapter_dir)? {
        return Ok(Some(n));
    }
    let path = adapter_dir.join("adapter_model.safetensors");
    if !path.is_file() {
        return Ok(None);
    }
    let file = SafeTensors::open(&path)?;
    let found = file
        .names()
        .find(|n| n.ends_with("classifier.weight") || n.ends_with("score.weight"))
        .and_then(|n| file.info(n))
        .map(|i| i.shape[0]);
    Ok(found)
}

/// Loads a base model folder as the architecture an adapter needs, as
/// `AutoModelFor<task>.from_pretrained(model)` before `PeftModel.from_pretrained`: a sequence or token
/// classification adapter on a bare encoder folder gets the task model, with the head size of the
/// adapter's saved classifier.
pub fn load_base_for_adapter(model_dir: &Path, adapter_dir: &Path) -> Result<Box<dyn Model>> {
    let base_config = ModelConfig::from_dir(model_dir)?;
    if adapter_dir.join("adapter.safetensors").is_file() {
        // AdapterHub: a saved classification head asks for the task model of a bare encoder.
        let found = crate::bottleneck::base_architecture(adapter_dir, &base_config)?;
        return engine::models::load_as(model_dir, found.map(|f| f.0), found.map(|f| f.1));
    }
    let task = if adapter_dir.join("adapter.safetensors").is_file() { None } else { adapter_task(adapter_dir)? };
    let architecture = match (task, base_config.architecture) {
        (Some(Task::SequenceClassification), Architecture::BertModel) => {
            Some(Architecture::BertForSequenceClassification)
        }
        (Some(Task::TokenClassification), Architecture::BertModel) => Some(Architecture::BertForTokenClassification),
        _ => None,
    };
    let num_labels = match architecture {
        Some(_) => Some(adapter_num_labels(adapter_dir)?.ok_or_else(|| Error::File {
            path: adapter_dir.join("adapter_model.safetensors").display().to_string(),
            detail: "a classification adapter for a bare encoder needs its trained classifier (modules_to_save)".into(),
        })?),
        None => None,
    };
    engine::models::load_as(model_dir, architecture, num_labels)
}

/// `--model DIR --adapter DIR`: the base loaded as the adapter needs it, with the adapter (frozen) on it.
pub fn from_pretrained(model_dir: &Path, adapter_dir: &Path) -> Result<(Box<dyn AdapterModel>, Vec<String>)> {
    let base = load_base_for_adapter(model_dir, adapter_dir)?;
    load_adapter_model(base, adapter_dir, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }

    #[test]
    fn method_of_a_section() {
        assert_eq!(section_method(&json!({"r": 8})).unwrap(), "LORA");
        assert_eq!(section_method(&json!({"peft_type": "P_TUNING"})).unwrap(), "P_TUNING");
        assert_eq!(section_method(&json!({"preset": "seq_bn"})).unwrap(), "BOTTLENECK");
        assert_eq!(section_method(&json!({"architecture": "bottleneck"})).unwrap(), "BOTTLENECK");
        assert!(section_method(&json!({"peft_type": 3})).is_err());
        assert!(section_method(&json!([1])).is_err());
    }

    #[test]
    fn task_defaults() {
        let v = with_task_defaults(&json!({"peft_type": "PROMPT_TUNING"}), Task::SequenceClassification).unwrap();
        assert_eq!(v["task_type"], "SEQ_CLS");
        assert_eq!(v["modules_to_save"], json!(["classifier", "score"]));
        let v = with_task_defaults(&json!({"modules_to_save": null}), Task::CausalLm).unwrap();
        assert_eq!(v["task_type"], "CAUSAL_LM");
        assert!(v["modules_to_save"].is_null());
        assert!(with_task_defaults(&json!({"task_type": "SEQ_CLS"}), Task::CausalLm).is_err());
    }
}
