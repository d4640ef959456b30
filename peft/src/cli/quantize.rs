//! `peft quantize`: a float model folder in, the same model in transformers' bitsandbytes 4-bit
//! layout out (what `from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True))`
//! followed by `save_pretrained` writes).
use super::{check_model_dir, CliResult};
use engine::quant::{quantize_model, save_pretrained_4bit, Bnb4bitConfig, QuantType};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// Hugging Face model folder with float weights.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Output folder (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub options: QuantOptions,
}

/// The `BitsAndBytesConfig` options, shared by the commands that quantize while loading.
#[derive(Debug, Clone, clap::Args)]
pub struct QuantOptions {
    /// `bnb_4bit_quant_type`: nf4 or fp4.
    #[arg(long = "bnb-4bit-quant-type", default_value = "nf4")]
    pub quant_type: String,
    /// `bnb_4bit_use_double_quant`: quantize the block scales too (~0.37 bits per parameter less).
    #[arg(long = "bnb-4bit-use-double-quant")]
    pub double_quant: bool,
    /// `bnb_4bit_compute_dtype` recorded in the config (the engine computes in f32 regardless).
    #[arg(long = "bnb-4bit-compute-dtype", default_value = "float32")]
    pub compute_dtype: String,
    /// Block size of the 4-bit absmax scaling (32 to 4096, powers of two).
    #[arg(long = "bnb-4bit-blocksize", default_value_t = 64)]
    pub blocksize: usize,
    /// `llm_int8_skip_modules`: modules left in f32 (comma separated; default: the output heads).
    #[arg(long = "llm-int8-skip-modules", value_delimiter = ',')]
    pub skip_modules: Option<Vec<String>>,
}

impl QuantOptions {
    pub fn config(&self) -> CliResult<Bnb4bitConfig> {
        let c = Bnb4bitConfig {
            quant_type: QuantType::parse(&self.quant_type)?,
            double_quant: self.double_quant,
            blocksize: self.blocksize,
            compute_dtype: self.compute_dtype.clone(),
            skip_modules: self.skip_modules.clone(),
        };
        c.validate()?;
        Ok(c)
    }
}

pub fn run(args: &QuantizeArgs) -> CliResult<()> {
    check_model_dir(&args.model)?;
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        return Err(format!("{} exists and is not empty; choose a new folder", args.out.display()).into());
    }
    let config = args.options.config()?;
    let mut model = engine::models::load(&args.model)?;
    let report = quantize_model(model.as_mut(), &config)?;
    save_pretrained_4bit(model.as_mut(), &args.out, Some(&args.model), &config)?;
    println!(
        "wrote {}: {} Linears in {} ({:.4} bits per quantized parameter), {} left in f32",
        args.out.display(),
        report.quantized.len(),
        model.config().architecture.name(),
        report.bits_per_param(),
        report.skipped.len()
    );
    Ok(())
}
