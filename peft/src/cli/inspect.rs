//! `peft inspect`: what a model folder holds and what it takes in memory, with the bits per
//! parameter of its quantized weights.
use super::quantize::QuantOptions;
use super::{check_model_dir, CliResult};
use engine::models::Model;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Hugging Face model folder (float or bitsandbytes 4-bit).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Quantize to 4 bits while loading (as `load_in_4bit`) before reporting.
    #[arg(long = "load-in-4bit")]
    pub load_in_4bit: bool,
    #[command(flatten)]
    pub options: QuantOptions,
}

/// Memory of a loaded model: packed weights (codes + scales + their state) by format, and every
/// other parameter at its dtype's size. Placeholders of packed weights count nothing.
#[derive(Debug, Default)]
pub struct MemoryReport {
    /// format → (parameters, bytes)
    pub packed: BTreeMap<String, (usize, usize)>,
    pub dense_params: usize,
    pub dense_bytes: usize,
}

pub fn memory_report(model: &mut dyn Model) -> CliResult<MemoryReport> {
    let mut r = MemoryReport::default();
    let mut packed_names = Vec::new();
    model.visit_linears(&mut |path, hooked| {
        if let Some(p) = &hooked.base.packed {
            let e = r.packed.entry(p.type_name().to_string()).or_default();
            e.0 += p.shape()[0] * p.shape()[1];
            e.1 += p.stored_bytes();
            packed_names.push(format!("{path}.weight"));
        }
        Ok(())
    })?;
    for (name, t) in model.named_parameters() {
        if !packed_names.contains(&name) {
            r.dense_params += t.numel();
            r.dense_bytes += t.numel() * t.dtype().size_in_bytes();
        }
    }
    Ok(r)
}

pub fn run(args: &InspectArgs) -> CliResult<()> {
    check_model_dir(&args.model)?;
    let mut model = engine::models::load(&args.model)?;
    if args.load_in_4bit {
        engine::quant::quantize_model(model.as_mut(), &args.options.config()?)?;
    }
    let r = memory_report(model.as_mut())?;
    println!("model: {} ({})", args.model.display(), model.config().architecture.name());
    let mut total = r.dense_bytes;
    for (format, (params, bytes)) in &r.packed {
        println!(
            "quantized {format}: {params} parameters in {bytes} bytes = {:.4} bits per parameter",
            *bytes as f64 * 8.0 / *params as f64
        );
        total += bytes;
    }
    println!("other parameters: {} in {} bytes", r.dense_params, r.dense_bytes);
    let all: usize = r.dense_params + r.packed.values().map(|v| v.0).sum::<usize>();
    println!(
        "total: {all} parameters, {total} bytes ({:.2} MiB; {:.2}x smaller than f32)",
        total as f64 / (1 << 20) as f64,
        (all * 4) as f64 / total.max(1) as f64
    );
    Ok(())
}
