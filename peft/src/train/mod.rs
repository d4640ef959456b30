//! `peft train`: fine-tuning with any PEFT method from a JSON run file (see `docs/train-config.md`).
//!
//! [`run`] reads the file, loads the model as the task's architecture, reads and tokenizes the
//! JSONL data, evaluates dev (and test) before training, runs the optimizer loop (micro-batches,
//! gradient accumulation, clipping, a learning-rate schedule, seeded dropout), logs to
//! `metrics.jsonl`, writes checkpoints, saves the adapter in PEFT's format, evaluates again and
//! writes `summary.json`. Same config and seed ⇒ the same adapter bytes, and a run resumed from a
//! checkpoint ends with the same bytes as one that never stopped.
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod metrics;
mod trainer;

pub use crate::method::ADAPTER_NAME;
pub use config::{Task, TrainConfig};
pub use trainer::{train, Summary};

use engine::models::{load, load_as, Architecture, Model, ModelConfig};
use engine::{Error, Result};
use std::path::{Path, PathBuf};

/// Command-line values that replace the run file's.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub max_steps: Option<u64>,
    pub output_dir: Option<PathBuf>,
    pub seed: Option<u64>,
    /// A checkpoint folder or `"latest"`.
    pub resume_from: Option<String>,
    /// No progress bar, no lines on stdout or stderr.
    pub quiet: bool,
    /// Replaces the file's `quantization_config` (`peft train --load-in-4bit ...`).
    pub quantization_config: Option<serde_json::Value>,
    /// Replaces the file's `device` (`peft train --device cuda:0`).
    pub device: Option<String>,
    /// Replaces the file's `mixed_precision` (`peft train --mixed-precision bf16`).
    pub mixed_precision: Option<String>,
}

/// `peft train --config FILE`: reads the run file, applies `overrides`, trains.
pub fn run(config_path: &Path, overrides: &Overrides) -> Result<Summary> {
    let mut config = TrainConfig::load(config_path)?;
    if let Some(n) = overrides.max_steps {
        config.max_steps = Some(n);
    }
    if let Some(d) = &overrides.output_dir {
        config.output_dir = d.clone();
    }
    if let Some(s) = overrides.seed {
        config.seed = s;
    }
    if let Some(r) = &overrides.resume_from {
        config.resume_from = Some(r.clone());
    }
    if let Some(q) = &overrides.quantization_config {
        config.quantization_config = Some(q.clone());
    }
    if let Some(d) = &overrides.device {
        config.device = Some(d.clone());
    }
    if let Some(m) = &overrides.mixed_precision {
        config.mixed_precision = Some(m.clone());
    }
    config.validate().map_err(|e| Error::invalid("train", format!("after command-line overrides: {e}")))?;
    train(&config, overrides.quiet)
}

/// Loads the base model as `load_task_model` does, except that 4-bit loading (`load_in_4bit`) of a
/// `.gguf` file keeps the file's own quantized blocks frozen and packed instead of re-quantizing
/// them to NF4 (`quantize_model` then finds those Linears packed and keeps them).
pub fn load_base_model(
    dir: &Path,
    task: Task,
    num_labels: Option<usize>,
    load_in_4bit: bool,
) -> Result<(Box<dyn Model>, Option<usize>)> {
    if !(load_in_4bit && engine::io::gguf::is_gguf(dir)) {
        return load_task_model(dir, task, num_labels);
    }
    if task != Task::CausalLm {
        return Err(Error::invalid("train", "a GGUF model is a causal LM: use task `causal_lm`"));
    }
    Ok((engine::io::gguf::llama::load_llama_packed(dir)?, None))
}

/// Loads `dir` as the model `task` trains: a causal LM as is; a BERT folder (a bare encoder too) as
/// `BertForSequenceClassification` / `BertForTokenClassification` with `num_labels` classes (a new
/// head is initialized when the checkpoint has none). Returns the model and, for classification,
/// its classifier size (an error when it contradicts `num_labels`).
pub fn load_task_model(dir: &Path, task: Task, num_labels: Option<usize>) -> Result<(Box<dyn Model>, Option<usize>)> {
    if !dir.is_dir() && !engine::io::gguf::is_gguf_file(dir) {
        return Err(Error::File { path: dir.display().to_string(), detail: "model folder not found".into() });
    }
    let arch = ModelConfig::from_dir(dir)?.architecture;
    let wrong = |needs: &str| {
        Err(Error::invalid(
            "train",
            format!("task `{}` needs {needs}; {} is a {}", task.name(), dir.display(), arch.name()),
        ))
    };
    let is_bert = matches!(
        arch,
        Architecture::BertModel
            | Architecture::BertForSequenceClassification
            | Architecture::BertForTokenClassification
    );
    let model = match task {
        Task::CausalLm if arch.is_causal_lm() => load(dir)?,
        Task::CausalLm => return wrong("a causal language model (GPT-2, LLaMA, Mistral, Qwen2)"),
        Task::SequenceClassification if is_bert => {
            load_as(dir, Some(Architecture::BertForSequenceClassification), num_labels)?
        }
        Task::TokenClassification if is_bert => {
            load_as(dir, Some(Architecture::BertForTokenClassification), num_labels)?
        }
        _ => return wrong("a BERT model"),
    };
    if !task.is_classification() {
        return Ok((model, None));
    }
    let rows = model.named_parameters().iter().find(|(n, _)| n == "classifier.weight").map(|(_, t)| t.shape()[0]);
    match (num_labels, rows) {
        (Some(n), Some(r)) if n != r => Err(Error::invalid(
            "train",
            format!("`num_labels` is {n} but the classifier of {} has {r} outputs", dir.display()),
        )),
        (_, Some(r)) => Ok((model, Some(r))),
        (_, None) => Err(Error::invalid("train", format!("{} has no classifier head", dir.display()))),
    }
}
