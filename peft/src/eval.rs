//! Evaluation: loss and accuracy (classification) or perplexity (causal LM) of a model, with or
//! without an adapter (any method), over a JSONL file in the training data format. `peft eval` calls [`run`].
use crate::method::{self, AdapterModel};
use crate::train::config::Task;
use crate::train::data::{collate, load_jsonl, pad_id, Batch, DataSpec, Example, LazyTokenizer};
use crate::train::load_base_model;
use engine::models::{ForwardInput, Model, ModelConfig};
use engine::{Error, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What one evaluation measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalMetrics {
    pub examples: usize,
    /// Mean loss over what the training loss averages: examples (sequence classification),
    /// labelled tokens (token classification), predicted tokens (causal LM).
    pub loss: f64,
    /// Fraction of correct predictions (classification tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// `exp(loss)` (causal LM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// The number of loss terms (examples or tokens) the means are over.
    pub items: usize,
    /// Real tokens read.
    pub tokens: usize,
}

impl EvalMetrics {
    /// `accuracy 81.23%, loss 0.4321` / `perplexity 12.34, loss 2.5128`.
    pub fn describe(&self) -> String {
        match (self.accuracy, self.perplexity) {
            (Some(a), _) => format!("{:.2}% (loss {:.4}, {} examples)", 100.0 * a, self.loss, self.examples),
            (None, Some(p)) => format!("{p:.4} (loss {:.4}, {} examples)", self.loss, self.examples),
            _ => format!("loss {:.4}", self.loss),
        }
    }

    /// The headline metric's name: `accuracy` or `perplexity`.
    pub fn headline(&self) -> &'static str {
        if self.accuracy.is_some() {
            "accuracy"
        } else {
            "perplexity"
        }
    }
}

/// The training objective of `task` (mean over the batch's loss terms).
pub fn task_loss(task: Task, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    match task {
        Task::CausalLm => crate::loss::causal_lm_loss(logits, labels),
        Task::SequenceClassification => crate::loss::classification_loss(logits, labels),
        Task::TokenClassification => logits.cross_entropy(labels),
    }
}

/// What a model reads of a batch: ids, mask and (when the data has them) segment ids.
pub fn batch_input(batch: &Batch) -> ForwardInput<'_> {
    ForwardInput {
        input_ids: Some(&batch.input_ids),
        attention_mask: Some(&batch.attention_mask),
        token_type_ids: batch.token_type_ids.as_ref(),
        ..Default::default()
    }
}

/// Runs the model on a batch and returns the logits.
pub fn batch_logits<M: Model + ?Sized>(model: &M, batch: &Batch) -> Result<Tensor> {
    model
        .forward(&batch_input(batch), None)?
        .logits
        .ok_or_else(|| Error::invalid("train", "the model has no output head (logits) for this task"))
}

/// Correct predictions among the labelled positions of a batch.
fn correct(task: Task, logits: &Tensor, batch: &Batch) -> Result<usize> {
    let c = *logits.shape().last().unwrap_or(&1);
    let v = logits.to_vec_f32()?;
    let argmax = |row: &[f32]| {
        let mut best = 0;
        for (j, &x) in row.iter().enumerate() {
            if x > row[best] {
                best = j;
            }
        }
        best as i64
    };
    Ok(match task {
        Task::CausalLm => 0,
        Task::SequenceClassification | Task::TokenClassification => batch
            .label_values
            .iter()
            .enumerate()
            .filter(|(i, &l)| l != crate::train::data::IGNORE_INDEX && argmax(&v[i * c..(i + 1) * c]) == l)
            .count(),
    })
}

/// Evaluates `examples` in batches of `batch_size` (sorted by length, which changes no result but
/// saves padding), with dropout off and no autograd recording.
pub fn evaluate(
    model: &dyn AdapterModel,
    task: Task,
    examples: &[Example],
    batch_size: usize,
    pad: i64,
) -> Result<EvalMetrics> {
    if examples.is_empty() {
        return Err(Error::invalid("eval", "no examples to evaluate"));
    }
    model.train(false);
    let _g = engine::no_grad();
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].len());
    let (mut loss_sum, mut items, mut right, mut tokens) = (0.0f64, 0usize, 0usize, 0usize);
    for chunk in order.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().map(|&i| &examples[i]).collect();
        let batch = collate(&refs, task, pad)?;
        let terms = model.loss_terms(task, &batch);
        let logits = if terms > 0 {
            let (logits, loss) = model.batch_loss(task, &batch)?;
            loss_sum += loss.to_scalar()? as f64 * terms as f64;
            logits
        } else {
            batch_logits(model, &batch)?
        };
        items += terms;
        tokens += batch.tokens;
        right += correct(task, &logits, &batch)?;
    }
    let loss = if items > 0 { loss_sum / items as f64 } else { 0.0 };
    Ok(EvalMetrics {
        examples: examples.len(),
        loss,
        accuracy: task.is_classification().then(|| right as f64 / items.max(1) as f64),
        perplexity: (task == Task::CausalLm).then(|| loss.exp()),
        items,
        tokens,
    })
}

/// Options of [`run`]; `None` fields are inferred.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// Default: the adapter's `task_type`, else the model's architecture.
    pub task: Option<Task>,
    /// Default: the adapter's classifier size, else the model's.
    pub num_labels: Option<usize>,
    /// Default 32.
    pub batch_size: Option<usize>,
    /// Default: the model's `max_position_embeddings`, at most 512.
    pub max_seq_length: Option<usize>,
    /// Quantize the base to 4 bits while loading, as the adapter was trained (QLoRA).
    pub load_in_4bit: Option<engine::quant::Bnb4bitConfig>,
    /// Where to run (default: the host).
    pub device: Option<engine::Device>,
    /// bf16 mixed precision for the matmuls (`engine::autocast`), as the adapter was trained with
    /// `mixed_precision: "bf16"`; `None` computes in f32.
    pub autocast: Option<engine::DType>,
}

/// What [`run`] reports.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub task: Task,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    pub model: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
    pub data: PathBuf,
    pub metrics: EvalMetrics,
    /// Notes from loading the adapter (unused tensors, unknown config keys).
    pub warnings: Vec<String>,
}

/// `peft eval`: loads the model (as the task's architecture), the adapter if given, reads
/// `data_file` and evaluates it.
pub fn run(
    model_dir: &Path,
    adapter_dir: Option<&Path>,
    data_file: &Path,
    options: &EvalOptions,
) -> Result<EvalReport> {
    if !model_dir.is_dir() && !engine::io::gguf::is_gguf_file(model_dir) {
        return Err(Error::File { path: model_dir.display().to_string(), detail: "model folder not found".into() });
    }
    let model_config = ModelConfig::from_dir(model_dir)?;
    let adapter_task = match adapter_dir {
        Some(dir) => method::adapter_task(dir)?,
        _ => None,
    };
    let task = match options.task {
        Some(t) => t,
        None => match adapter_task {
            Some(t) => t,
            None => {
                use engine::models::Architecture as A;
                match model_config.architecture {
                    a if a.is_causal_lm() => Task::CausalLm,
                    A::BertForSequenceClassification => Task::SequenceClassification,
                    A::BertForTokenClassification => Task::TokenClassification,
                    a => {
                        return Err(Error::invalid(
                            "eval",
                            format!(
                                "cannot tell the task: the adapter has no task_type and {} is a {}; give the task",
                                model_dir.display(),
                                a.name()
                            ),
                        ))
                    }
                }
            }
        },
    };
    let num_labels = match (options.num_labels, adapter_dir) {
        (Some(n), _) => Some(n),
        (None, Some(dir)) if task.is_classification() => method::adapter_num_labels(dir)?,
        _ => None,
    };
    let (mut base, num_labels) = load_base_model(model_dir, task, num_labels, options.load_in_4bit.is_some())?;
    if let Some(q) = &options.load_in_4bit {
        engine::quant::quantize_model(base.as_mut(), q)?;
    }
    let (mut model, warnings): (Box<dyn AdapterModel>, Vec<String>) = match adapter_dir {
        Some(dir) => method::load_adapter_model(base, dir, false)?,
        None => (Box::new(crate::PeftModel::new(base)), Vec::new()),
    };
    if let Some(device) = options.device {
        method::move_to_device(model.as_mut(), device)?;
    }
    // A soft prompt's virtual tokens take positions too.
    let positions = model_config.max_position_embeddings.saturating_sub(model.virtual_positions());
    let max_seq_length = options.max_seq_length.unwrap_or(positions.min(512));
    let spec = DataSpec {
        task,
        num_labels: num_labels.unwrap_or(0),
        vocab_size: model_config.vocab_size,
        max_seq_length,
        model_dir: model_dir.to_path_buf(),
    };
    let examples = load_jsonl(data_file, &spec, &LazyTokenizer::new(model_dir))?;
    let pad = pad_id(model_dir, model_config.pad_token_id);
    let _cast = options.autocast.map(engine::autocast).transpose()?;
    let metrics = evaluate(model.as_ref(), task, &examples, options.batch_size.unwrap_or(32), pad)?;
    Ok(EvalReport {
        task,
        num_labels,
        model: model_dir.to_path_buf(),
        adapter: adapter_dir.map(Path::to_path_buf),
        data: data_file.to_path_buf(),
        metrics,
        warnings,
    })
}
