//! The `peft train` run file: a JSON object naming the model, the task, the LoRA config (PEFT's
//! field names), the data and the training settings. Unknown keys are errors naming the key: this is
//! our own format, and a misspelled setting must not silently fall back to its default. Every field
//! is documented in `docs/train-config.md`.
use engine::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What the model is trained to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Next-token prediction (GPT-2, LLaMA): labels are the input ids, shifted inside the loss.
    CausalLm,
    /// One label per sequence (BERT's `[CLS]` pooled output → classifier).
    SequenceClassification,
    /// One label per token (BERT's hidden states → classifier).
    TokenClassification,
}

impl Task {
    /// PEFT's `task_type` for this task.
    pub fn peft_task_type(self) -> &'static str {
        match self {
            Task::CausalLm => "CAUSAL_LM",
            Task::SequenceClassification => "SEQ_CLS",
            Task::TokenClassification => "TOKEN_CLS",
        }
    }

    /// The task of a PEFT `task_type`, if it is one we train.
    pub fn from_peft_task_type(t: &str) -> Option<Task> {
        match t {
            "CAUSAL_LM" => Some(Task::CausalLm),
            "SEQ_CLS" => Some(Task::SequenceClassification),
            "TOKEN_CLS" => Some(Task::TokenClassification),
            _ => None,
        }
    }

    /// The name used in run files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Task::CausalLm => "causal_lm",
            Task::SequenceClassification => "sequence_classification",
            Task::TokenClassification => "token_classification",
        }
    }

    /// Parses a command-line task name.
    pub fn parse(s: &str) -> Result<Task> {
        match s {
            "causal_lm" => Ok(Task::CausalLm),
            "sequence_classification" => Ok(Task::SequenceClassification),
            "token_classification" => Ok(Task::TokenClassification),
            other => Err(Error::invalid(
                "task",
                format!("unknown task `{other}` (expected causal_lm, sequence_classification or token_classification)"),
            )),
        }
    }

    pub fn is_classification(self) -> bool {
        self != Task::CausalLm
    }
}

/// The optimizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// `torch.optim.AdamW` (decoupled weight decay).
    #[default]
    Adamw,
    /// `torch.optim.SGD`, with optional momentum.
    Sgd,
}

/// The learning-rate schedule over optimizer steps (transformers' formulas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// Linear warmup (if any), then constant.
    Constant,
    /// Linear warmup, then linear decay to 0 at the last step.
    #[default]
    Linear,
    /// Linear warmup, then half a cosine down to 0 at the last step.
    Cosine,
}

/// The JSONL files, relative to the run file's folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub train: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
}

fn d_batch() -> usize {
    8
}
fn d_one() -> usize {
    1
}
fn d_lr() -> f32 {
    5e-5
}
fn d_beta1() -> f32 {
    0.9
}
fn d_beta2() -> f32 {
    0.999
}
fn d_eps() -> f32 {
    1e-8
}
fn d_clip() -> f32 {
    1.0
}
fn d_seed() -> u64 {
    42
}
fn d_logging() -> u64 {
    10
}
fn d_true() -> bool {
    true
}

/// A run file. Paths are as written; [`TrainConfig::load`] resolves them against the file's folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The base model folder (`config.json`, safetensors, `tokenizer.json` for text data).
    pub model: PathBuf,
    pub task: Task,
    /// Classes of a classification task; default: the model's classifier size, or its config's
    /// `id2label` / `num_labels` (2 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    /// The adapter config as JSON with PEFT's field names; `peft_type` chooses the method (LORA when
    /// absent: `r`, `lora_alpha`, `target_modules`, ...; PROMPT_TUNING, P_TUNING, PREFIX_TUNING), an
    /// AdapterHub config a bottleneck adapter. Required unless `init_adapter` or `resume_from` gives
    /// the adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft: Option<Value>,
    pub data: DataConfig,
    pub output_dir: PathBuf,
    /// Passes over the training data (fractions allowed); ignored when `max_steps` is set. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// Optimizer steps to run; wins over `epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// Examples per micro-batch.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Examples per evaluation batch (default: `batch_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[serde(default = "d_one")]
    pub gradient_accumulation_steps: usize,
    #[serde(default = "d_lr")]
    pub learning_rate: f32,
    #[serde(default)]
    pub optimizer: OptimizerKind,
    #[serde(default)]
    pub weight_decay: f32,
    #[serde(default = "d_beta1")]
    pub adam_beta1: f32,
    #[serde(default = "d_beta2")]
    pub adam_beta2: f32,
    #[serde(default = "d_eps")]
    pub adam_epsilon: f32,
    #[serde(default)]
    pub momentum: f32,
    #[serde(default)]
    pub lr_scheduler: SchedulerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    /// Global gradient-norm clip; 0 = no clipping.
    #[serde(default = "d_clip")]
    pub max_grad_norm: f32,
    /// Seeds the LoRA initialization, the dropout masks and (unless `data_seed`) the data order.
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_seed: Option<u64>,
    /// Evaluate dev every N optimizer steps; 0 = only before and after training.
    #[serde(default)]
    pub eval_steps: u64,
    /// Log (metrics.jsonl, plain progress line) every N optimizer steps.
    #[serde(default = "d_logging")]
    pub logging_steps: u64,
    /// Write `checkpoint-<step>/` every N optimizer steps; 0 = none.
    #[serde(default)]
    pub save_steps: u64,
    /// Keep only the newest N checkpoints; 0 = keep all.
    #[serde(default)]
    pub save_total_limit: usize,
    /// Token limit per example (longer ones are truncated, special tokens kept); default: the
    /// model's `max_position_embeddings`, at most 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq_length: Option<usize>,
    /// Sort each shuffled chunk of 50 batches by length, so batches carry less padding.
    #[serde(default = "d_true")]
    pub bucket_by_length: bool,
    /// A PEFT adapter folder to start from instead of a fresh adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_adapter: Option<PathBuf>,
    /// A checkpoint folder to continue from, or `"latest"` (the newest in `output_dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<String>,
    /// QLoRA: transformers' `BitsAndBytesConfig` as a dict, e.g. `{"load_in_4bit": true,
    /// "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true, "bnb_4bit_compute_dtype":
    /// "bfloat16", "llm_int8_skip_modules": ["classifier"]}`: the base model's Linears are quantized
    /// to 4 bits while loading and stay frozen; the adapter trains on top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<Value>,
    /// Where the model trains: `cpu` (default), `cuda` or `cuda:N` (needs a build with `--features
    /// cuda`). The base model and the adapter move there after loading; data stay on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `"no"` (default) or `"bf16"` (Hugging Face's `bf16=True`): the matmuls' operands, forward
    /// and backward, are rounded to bf16 and multiplied with f32 accumulation (tensor cores on a
    /// GPU); activations, gradients and weights stay f32. `"fp16"` is refused (needs loss scaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixed_precision: Option<String>,
}

/// The autocast precision a `mixed_precision` value names (`"no"` or absent: none; `"bf16"`); other
/// values are errors of `op` that say why (`"fp16"` would need loss scaling).
pub fn mixed_precision_dtype(op: &'static str, value: Option<&str>) -> Result<Option<engine::DType>> {
    let bad = |detail: String| Err(Error::invalid(op, format!("`mixed_precision`: {detail}")));
    match value {
        None | Some("no") => Ok(None),
        Some("bf16") => Ok(Some(engine::DType::BF16)),
        Some("fp16") => {
            bad("\"fp16\" needs loss scaling (small gradients underflow f16), which is not supported; use \"bf16\""
                .into())
        }
        Some(other) => bad(format!("\"{other}\" is not one of \"no\", \"bf16\"")),
    }
}

/// The PEFT classifier heads PEFT adds to `modules_to_save` for classification tasks.
pub const CLASSIFIER_MODULES: [&str; 2] = ["classifier", "score"];

impl TrainConfig {
    /// Reads a run file, checks it, and resolves its relative paths against the file's folder.
    pub fn load(path: &Path) -> Result<TrainConfig> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        let file_err = |detail: String| Error::File { path: path.display().to_string(), detail };
        let mut c: TrainConfig = serde_json::from_str(&text).map_err(|e| file_err(format!("{e}")))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        c.resolve_paths(&base);
        c.validate().map_err(|e| file_err(e.to_string()))?;
        Ok(c)
    }

    /// Makes relative paths relative to `base` (the run file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = clean_path(&base.join(&*p));
            }
        };
        fix(&mut self.model);
        fix(&mut self.output_dir);
        fix(&mut self.data.train);
        if let Some(p) = &mut self.data.dev {
            fix(p);
        }
        if let Some(p) = &mut self.data.test {
            fix(p);
        }
        if let Some(p) = &mut self.init_adapter {
            fix(p);
        }
        if let Some(r) = &mut self.resume_from {
            if r != "latest" && Path::new(r.as_str()).is_relative() {
                *r = clean_path(&base.join(r.as_str())).display().to_string();
            }
        }
    }

    /// Checks the values (not the files).
    /// The device the run asks for (`device`), the host by default.
    pub fn device(&self) -> Result<engine::Device> {
        self.device.as_deref().map_or(Ok(engine::Device::Cpu), engine::Device::parse)
    }

    /// The autocast precision of `mixed_precision`: `None` for `"no"` (or absent), bf16 for `"bf16"`.
    pub fn autocast_dtype(&self) -> Result<Option<engine::DType>> {
        mixed_precision_dtype("train config", self.mixed_precision.as_deref())
    }

    /// The 4-bit loading the run asks for (`quantization_config` with `load_in_4bit`), if any.
    pub fn bnb_4bit(&self) -> Result<Option<engine::quant::Bnb4bitConfig>> {
        let Some(v) = &self.quantization_config else { return Ok(None) };
        let bad = |detail: String| Err(Error::invalid("train config", format!("`quantization_config`: {detail}")));
        let Some(obj) = v.as_object() else { return bad(format!("must be an object, got {v}")) };
        // Every key of transformers' `BitsAndBytesConfig.to_dict()`, so a model's
        // `quantization_config` can be pasted here, plus our `bnb_4bit_blocksize`.
        const KNOWN: [&str; 14] = [
            "load_in_4bit",
            "load_in_8bit",
            "_load_in_4bit",
            "_load_in_8bit",
            "llm_int8_enable_fp32_cpu_offload",
            "llm_int8_has_fp16_weight",
            "bnb_4bit_quant_type",
            "bnb_4bit_use_double_quant",
            "bnb_4bit_compute_dtype",
            "bnb_4bit_quant_storage",
            "bnb_4bit_blocksize",
            "llm_int8_skip_modules",
            "quant_method",
            "llm_int8_threshold",
        ];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return bad(format!("unknown key `{k}` (known: {})", KNOWN.join(", ")));
        }
        if obj.get("load_in_8bit").and_then(Value::as_bool) == Some(true) {
            return bad("load_in_8bit is not supported; use load_in_4bit".into());
        }
        if let Some(s) = obj.get("bnb_4bit_quant_storage").and_then(Value::as_str) {
            if s != "uint8" {
                return bad(format!("bnb_4bit_quant_storage `{s}`: only uint8 is supported"));
            }
        }
        if obj.get("load_in_4bit").and_then(Value::as_bool) != Some(true) {
            return Ok(None);
        }
        engine::quant::Bnb4bitConfig::from_json(v)
            .map(Some)
            .map_err(|e| Error::invalid("train config", format!("`quantization_config`: {e}")))
    }

    pub fn validate(&self) -> Result<()> {
        let device = self.device()?;
        self.autocast_dtype()?;
        // bitsandbytes 4-bit bases run on the GPU (their codes move there with the model); a GGUF
        // file's own blocks, which 4-bit loading keeps, have no GPU kernel.
        if self.bnb_4bit()?.is_some() && device != engine::Device::Cpu && engine::io::gguf::is_gguf(&self.model) {
            return Err(Error::invalid(
                "train config",
                format!(
                    "`device` {device} with 4-bit loading of a GGUF file: its quantized blocks have no GPU kernel (bitsandbytes NF4/FP4 bases do); train it on the host or from the Hugging Face checkpoint"
                ),
            ));
        }
        let bad = |field: &str, detail: String| Err(Error::invalid("train config", format!("`{field}`: {detail}")));
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.eval_batch_size == Some(0) {
            return bad("eval_batch_size", "must be at least 1".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("gradient_accumulation_steps", "must be at least 1".into());
        }
        if let Some(e) = self.epochs {
            if !(e.is_finite() && e > 0.0) {
                return bad("epochs", format!("{e} must be a positive number"));
            }
        }
        if self.max_steps == Some(0) {
            return bad("max_steps", "must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            return bad("learning_rate", format!("{} must be a finite number >= 0", self.learning_rate));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", format!("{} must be >= 0", self.weight_decay));
        }
        for (f, v) in [("adam_beta1", self.adam_beta1), ("adam_beta2", self.adam_beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(f, format!("{v} must be in [0, 1)"));
            }
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon >= 0.0) {
            return bad("adam_epsilon", format!("{} must be >= 0", self.adam_epsilon));
        }
        if !(self.momentum.is_finite() && self.momentum >= 0.0) {
            return bad("momentum", format!("{} must be >= 0", self.momentum));
        }
        if let Some(r) = self.warmup_ratio {
            if !(0.0..=1.0).contains(&r) {
                return bad("warmup_ratio", format!("{r} must be in [0, 1]"));
            }
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad("max_grad_norm", format!("{} must be >= 0 (0 = no clipping)", self.max_grad_norm));
        }
        if self.logging_steps == 0 {
            return bad("logging_steps", "must be at least 1".into());
        }
        if let Some(n) = self.max_seq_length {
            let least = if self.task == Task::CausalLm { 2 } else { 1 };
            if n < least {
                return bad("max_seq_length", format!("{n} is too short (at least {least})"));
            }
        }
        match self.num_labels {
            Some(0) => return bad("num_labels", "must be at least 1".into()),
            Some(_) if self.task == Task::CausalLm => {
                return bad("num_labels", "only classification tasks have labels; remove it for causal_lm".into())
            }
            _ => {}
        }
        if self.peft.is_none() && self.init_adapter.is_none() && self.resume_from.is_none() {
            return bad("peft", "missing: give an adapter config (or `init_adapter` / `resume_from`)".into());
        }
        if self.peft.is_some() && self.init_adapter.is_some() {
            return bad(
                "init_adapter",
                "the adapter folder carries its own config; remove the `peft` section to use it".into(),
            );
        }
        if let Some(p) = &self.peft {
            crate::method::check_section(p, self.task)?;
        }
        Ok(())
    }

    /// The `peft` section as the adapter is built from it: a PEFT config gets `base_model_name_or_path`
    /// (the model folder) when it has none, as PEFT records it; the method's own defaults are applied
    /// by [`crate::method::build_adapter_model`].
    pub fn peft_section(&self) -> Result<Option<Value>> {
        let Some(section) = &self.peft else { return Ok(None) };
        let mut section = section.clone();
        if crate::method::section_method(&section)? != "BOTTLENECK" {
            if let Value::Object(obj) = &mut section {
                if obj.get("base_model_name_or_path").is_none_or(Value::is_null) {
                    obj.insert("base_model_name_or_path".into(), Value::String(self.model.display().to_string()));
                }
            }
        }
        Ok(Some(section))
    }

    /// The LoRA config of a LoRA `peft` section (task defaults and the model path applied); `None` for
    /// other methods or without a section.
    pub fn lora_config(&self) -> Result<Option<crate::config::LoraConfig>> {
        match self.peft_section()? {
            Some(s) if crate::method::section_method(&s)? == "LORA" => {
                Ok(Some(crate::method::lora_config_from_section(&s, self.task)?))
            }
            _ => Ok(None),
        }
    }

    /// Batch size used for evaluation.
    pub fn eval_batch(&self) -> usize {
        self.eval_batch_size.unwrap_or(self.batch_size)
    }

    /// The seed of the data order.
    pub fn data_order_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }
}

/// Removes `.` and `dir/..` pairs lexically (`examples/../assets/m` → `assets/m`), so paths read well
/// in messages and in the saved adapter config.
pub fn clean_path(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}
