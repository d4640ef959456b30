//! `peft eval`: loss and accuracy (classification) or perplexity (causal LM) of a model, with an
//! adapter, on a JSONL file in the training data format.
use super::{check_model_dir, CliResult};
use peft::eval::{self, EvalOptions};
use peft::train::Task;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Hugging Face model folder (a bare BERT encoder works for classification adapters).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// PEFT adapter folder; without it the base model is evaluated.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// JSONL: `{"text": ..., "label": ...}` or pre-tokenized `{"input_ids": [...], "labels": ...}`.
    #[arg(long, value_name = "FILE.jsonl")]
    pub data: PathBuf,
    /// causal_lm, sequence_classification or token_classification (default: the adapter's
    /// task_type, else the model's architecture).
    #[arg(long, value_name = "TASK")]
    pub task: Option<String>,
    /// Classes (default: the adapter's classifier size, else the model's).
    #[arg(long, value_name = "N")]
    pub num_labels: Option<usize>,
    /// Examples per batch.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub batch_size: usize,
    /// Token limit per example (default: the model's max_position_embeddings, at most 512).
    #[arg(long, value_name = "N")]
    pub max_seq_length: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Quantize the base model to 4 bits while loading, as a QLoRA adapter was trained (the
    /// `--bnb-4bit-*` options below apply).
    #[arg(long = "load-in-4bit")]
    pub load_in_4bit: bool,
    #[command(flatten)]
    pub quant: super::quantize::QuantOptions,
    #[command(flatten)]
    pub device: super::DeviceArg,
    /// `bf16`: the matmuls round their operands to bf16 (f32 accumulation), as in a run trained with
    /// `mixed_precision: "bf16"`; `no` (default) computes in f32.
    #[arg(long, value_name = "no|bf16")]
    pub mixed_precision: Option<String>,
}

pub fn run(args: &EvalArgs) -> CliResult<()> {
    check_model_dir(&args.model)?;
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let options = EvalOptions {
        task: args.task.as_deref().map(Task::parse).transpose()?,
        num_labels: args.num_labels,
        batch_size: Some(args.batch_size),
        max_seq_length: args.max_seq_length,
        load_in_4bit: if args.load_in_4bit { Some(args.quant.config()?) } else { None },
        device: args.device.device.as_deref().map(engine::Device::parse).transpose()?,
        autocast: peft::train::config::mixed_precision_dtype("eval", args.mixed_precision.as_deref())?,
    };
    let report = eval::run(&args.model, args.adapter.as_deref(), &args.data, &options)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let m = &report.metrics;
    println!("task: {}", report.task.name());
    println!("examples: {}", m.examples);
    println!("loss: {:.6}", m.loss);
    if let Some(a) = m.accuracy {
        println!("accuracy: {:.2}%", 100.0 * a);
    }
    if let Some(p) = m.perplexity {
        println!("perplexity: {p:.4}");
    }
    Ok(())
}
