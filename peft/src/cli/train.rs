//! `peft train --config run.json`: adapter fine-tuning (the `peft` section picks the method) from a run file (see `docs/train-config.md`).
use super::CliResult;
use peft::train::{self, Overrides};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The run file (JSON: model, task, peft, data, output_dir and training settings); relative
    /// paths in it are resolved against its folder.
    #[arg(long, value_name = "run.json")]
    pub config: PathBuf,
    /// Stop after this many optimizer steps (replaces `max_steps` / `epochs`).
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// Write the run's output here instead of the file's `output_dir`.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Replaces the file's `seed`.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Continue from a checkpoint folder, or `latest` (the newest in the output folder).
    #[arg(long, value_name = "DIR|latest")]
    pub resume_from: Option<String>,
    /// No progress bar or progress lines (results and errors are still printed).
    #[arg(long)]
    pub quiet: bool,
    /// QLoRA: quantize the base model to 4 bits while loading (replaces the file's
    /// `quantization_config`; the `--bnb-4bit-*` options below apply).
    #[arg(long = "load-in-4bit")]
    pub load_in_4bit: bool,
    #[command(flatten)]
    pub quant: super::quantize::QuantOptions,
    #[command(flatten)]
    pub device: super::DeviceArg,
    /// Mixed precision: no or bf16 (matmul operands rounded to bf16, f32 accumulation; replaces
    /// the file's `mixed_precision`).
    #[arg(long, value_name = "no|bf16")]
    pub mixed_precision: Option<String>,
}

pub fn run(args: &TrainArgs) -> CliResult<()> {
    let overrides = Overrides {
        max_steps: args.max_steps,
        output_dir: args.output_dir.clone(),
        seed: args.seed,
        resume_from: args.resume_from.as_ref().map(|r| {
            if r == "latest" {
                r.clone()
            } else {
                // relative to the working directory, not to the run file
                std::path::absolute(r).map(|p| p.display().to_string()).unwrap_or_else(|_| r.clone())
            }
        }),
        quiet: args.quiet,
        quantization_config: if args.load_in_4bit {
            let mut q = args.quant.config()?.to_json();
            q["bnb_4bit_blocksize"] = args.quant.blocksize.into();
            Some(q)
        } else {
            None
        },
        device: args.device.device.clone(),
        mixed_precision: args.mixed_precision.clone(),
    };
    let summary = train::run(&args.config, &overrides)?;
    if args.quiet {
        for (split, m) in &summary.eval_after {
            println!("{split} {} after: {}", m.headline(), m.describe());
        }
    }
    println!("summary: {}", summary.output_dir.join("summary.json").display());
    Ok(())
}
