//! `peft merge`: fold an adapter into its base model and write a Hugging Face model folder.
//! A 4-bit base (QLoRA) is dequantized and the delta added in f32, then exported as a float model;
//! re-quantizing the result is possible but rounds most of the delta away (see `--requantize`).
use super::quantize::QuantOptions;
use super::{check_model_dir, CliResult};
use engine::models::save_pretrained;
use engine::DType;
use peft::PeftModel;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Hugging Face model folder the adapter was trained on.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Output folder: config.json + model.safetensors + the base folder's tokenizer files.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Element type of the written weights: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Quantize the merged model to 4 bits again (bitsandbytes layout, options below) instead of
    /// writing float weights. Lossy: the adapter's delta is mostly below the 4-bit step.
    #[arg(long)]
    pub requantize: bool,
    #[command(flatten)]
    pub quant: QuantOptions,
}

fn parse_dtype(s: &str) -> CliResult<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(format!("--dtype {other}: expected f32, bf16 or f16").into()),
    }
}

/// Transformers' name of a dtype, for config.json.
fn torch_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

pub fn run(args: &MergeArgs) -> CliResult<()> {
    check_model_dir(&args.model)?;
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        return Err(format!("{} exists and is not empty; choose a new folder", args.out.display()).into());
    }
    let dtype = parse_dtype(&args.dtype)?;
    let quant = if args.requantize { Some(args.quant.config()?) } else { None };
    let method = peft::method::adapter_method(&args.adapter)?;
    if method != "LORA" {
        return Err(format!(
            "{}: merging folds LoRA weights into the base model; a {method} adapter has nothing to fold (use it with \
             --adapter in forward, generate or eval)",
            args.adapter.display()
        )
        .into());
    }
    let (model, warnings) = PeftModel::from_pretrained(&args.model, &args.adapter)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let mut merged = model.merge_and_unload()?;
    if let Some(q) = quant {
        eprintln!(
            "warning: --requantize rounds the merged weights to 4 bits: an adapter's update is usually far smaller than \
             the quantization step, so most of what training learned is lost (what PEFT's merge of a 4-bit model \
             does); without --requantize the merged model is written in {} with the update intact",
            args.dtype
        );
        engine::quant::quantize_model(merged.as_mut(), &q)?;
        engine::quant::save_pretrained_4bit(merged.as_mut(), &args.out, Some(&args.model), &q)?;
        println!("wrote {} ({}, 4-bit)", args.out.display(), merged.config().architecture.name());
        return Ok(());
    }
    if dtype != DType::F32 {
        merged.visit_parameters(&mut |_, t| {
            *t = t.detach().to_dtype(dtype)?;
            Ok(())
        })?;
    }
    save_pretrained(merged.as_ref(), &args.out, Some(&args.model))?;
    let config_path = args.out.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    if let Some(obj) = config.as_object_mut() {
        // A merged 4-bit base is a float model now.
        obj.remove("quantization_config");
        obj.insert("torch_dtype".into(), torch_name(dtype).into());
        if obj.contains_key("dtype") {
            obj.insert("dtype".into(), torch_name(dtype).into());
        }
    }
    engine::io::safetensors::write_atomic(&config_path, &serde_json::to_vec_pretty(&config)?)?;
    println!("wrote {} ({})", args.out.display(), merged.config().architecture.name());
    Ok(())
}
