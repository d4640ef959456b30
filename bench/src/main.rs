//! Benchmark runner: `cargo run --release -p bench -- <subcommand> [args...]`.
//!
//! Each subcommand prints one JSON object per line on stdout. To add one, write a module with a
//! `pub fn run(args: &[String]) -> Result<(), String>` and list it in [`SUBCOMMANDS`].

mod elementwise;
mod gemm;
mod gguf;
mod load;
mod qlora;
mod train_step;

use std::process::ExitCode;

/// A subcommand: its name, a one-line description and its entry point (given the remaining args).
type Entry = fn(&[String]) -> Result<(), String>;

const SUBCOMMANDS: &[(&str, &str, Entry)] = &[
    ("elementwise", "elementwise and reduction GB/s on 16M elements next to memcpy", elementwise::run),
    ("gemm", "f32 GEMM GFLOP/s on square and transformer shapes", gemm::run_gemm),
    ("fma-peak", "f32 FMA peak GFLOP/s, single thread and all threads", gemm::run_fma_peak),
    ("load", "RSS and time of loading a model folder and one 16x128 forward pass", load::run),
    ("dequant", "NF4 + double-quant dequantization GB/s (f32 output) next to memcpy", qlora::run_dequant),
    ("qlinear", "4-bit Linear forward+backward next to the f32 Linear of the same shape", qlora::run_qlinear),
    ("gguf", "SmolLM2 GGUF dense vs packed blocks: memory, forward tokens/s, a LoRA step", gguf::run),
    (
        "train-step",
        "LoRA training steps on a MiniLM-shaped BERT and a small LLaMA (tokens/s, peak RSS)",
        train_step::run,
    ),
];

fn usage() {
    eprintln!("usage: bench <subcommand> [args...]");
    eprintln!("available subcommands:");
    for (name, help, _) in SUBCOMMANDS {
        eprintln!("  {name:<12} {help}");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        usage();
        return ExitCode::from(2);
    };
    match SUBCOMMANDS.iter().find(|(name, _, _)| name == cmd) {
        Some((_, _, entry)) => match entry(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench {cmd}: {e}");
                ExitCode::FAILURE
            }
        },
        None => {
            eprintln!("unknown subcommand `{cmd}`");
            usage();
            ExitCode::from(2)
        }
    }
}
