//! `peft merge`: fold an adapter into its base model and write a Hugging Face model folder.
use super::{check_model_dir, CliResult};
use engine::models::save_pretrained;
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
    /// Output folder: config.json + model.safetensors (f32) + the base folder's tokenizer files.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: &MergeArgs) -> CliResult<()> {
    check_model_dir(&args.model)?;
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        return Err(format!("{} exists and is not empty; choose a new folder", args.out.display()).into());
    }
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
    let merged = model.merge_and_unload()?;
    save_pretrained(merged.as_ref(), &args.out, Some(&args.model))?;
    println!("wrote {} ({})", args.out.display(), merged.config().architecture.name());
    Ok(())
}
