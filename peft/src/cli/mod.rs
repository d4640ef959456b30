//! Argument parsing and dispatch for the `peft` binary. Subcommands stay thin: the work is done by
//! the engine (`engine::models`) and the `peft` library.
mod eval;
mod forward;
mod generate;
mod inspect;
mod merge;
mod quantize;
mod train;

use clap::{Parser, Subcommand};
use std::ffi::OsString;

/// What a subcommand returns: any error is printed as `error: <message>`.
pub type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Debug, Parser)]
#[command(name = "peft", version, about = "Parameter-efficient fine-tuning and inference on Hugging Face models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a model on token ids from a safetensors file and write its main output.
    Forward(forward::ForwardArgs),
    /// Continue a prompt with a causal language model (greedy unless a temperature is given).
    Generate(generate::GenerateArgs),
    /// Fine-tune an adapter (LoRA, prompt tuning, P-tuning, ...) from a JSON run file.
    Train(train::TrainArgs),
    /// Evaluate a model (and adapter) on a JSONL file: loss, accuracy or perplexity.
    Eval(eval::EvalArgs),
    /// Fold a LoRA adapter into its base model and write a Hugging Face model folder.
    Merge(merge::MergeArgs),
    /// Write a float model in transformers' bitsandbytes 4-bit layout (NF4/FP4, double quantization).
    Quantize(quantize::QuantizeArgs),
    /// Report a model's parameters and memory, with the bits per parameter of quantized weights.
    Inspect(inspect::InspectArgs),
}

/// Parses `args` (program name first), runs the subcommand, and returns the exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors are printed by clap as
            // `error: ...` and exit 1 like every other error of this tool.
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let result = match cli.command {
        Command::Forward(args) => forward::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Merge(args) => merge::run(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::Inspect(args) => inspect::run(&args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Checks that a model folder (or a `.gguf` file) exists before loading it, so the message names it.
pub fn check_model_dir(dir: &std::path::Path) -> CliResult<()> {
    if !dir.is_dir() && !engine::io::gguf::is_gguf_file(dir) {
        return Err(
            format!("model folder {} does not exist or is not a folder (or a .gguf file)", dir.display()).into()
        );
    }
    Ok(())
}

/// `--device`, shared by the subcommands that run a model.
#[derive(Debug, clap::Args)]
pub struct DeviceArg {
    /// Run on this device: cpu (default), cuda or cuda:N (CUDA needs a build with `--features cuda`);
    /// for `train` it replaces the run file's `device`.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
}

impl DeviceArg {
    pub fn device(&self) -> CliResult<engine::Device> {
        Ok(self.device.as_deref().map_or(Ok(engine::Device::Cpu), engine::Device::parse)?)
    }
}

/// The model folder, with the adapter folder applied when given (its load warnings printed), moved to
/// `device`: what `forward` and `generate` run.
pub fn load_model_on(
    model: &std::path::Path,
    adapter: Option<&std::path::Path>,
    device: engine::Device,
) -> CliResult<Box<dyn engine::models::Model>> {
    Ok(match adapter {
        Some(dir) => {
            let (mut m, warnings) = peft::method::from_pretrained(model, dir)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            peft::method::move_to_device(m.as_mut(), device)?;
            m
        }
        None => {
            let mut m = engine::models::load(model)?;
            engine::models::move_to_device(m.as_mut(), device)?;
            m
        }
    })
}
