//! `peft forward`: token ids in, the model's main output out (safetensors both ways).
use super::{check_model_dir, CliResult};
use engine::io::{save_safetensors, SafeTensors};
use engine::models::ForwardInput;
use engine::{DType, Tensor};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// Hugging Face model folder (config.json + model.safetensors or a sharded index).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Safetensors file with `input_ids` (integer [batch, seq]) and optionally `attention_mask`
    /// ([batch, seq], 1 = attend) and `token_type_ids` (BERT segments).
    #[arg(long, value_name = "IN.safetensors")]
    pub input: PathBuf,
    /// Where to write the output, as f32 named as transformers names it (`logits` or
    /// `last_hidden_state`); written atomically.
    #[arg(long, value_name = "OUT.safetensors")]
    pub out: PathBuf,
    /// Adapter folder to apply: PEFT's (adapter_config.json + adapter_model.safetensors; any method)
    /// or AdapterHub's.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

/// An integer tensor of `[batch, seq]` from the input file, if present.
fn ids_tensor(file: &SafeTensors, name: &str, required: bool) -> CliResult<Option<Tensor>> {
    if !file.contains(name) {
        if required {
            let found: Vec<&str> = file.names().collect();
            return Err(format!(
                "{}: no `{name}` tensor (it holds: {})",
                file.path().display(),
                if found.is_empty() { "nothing".to_string() } else { found.join(", ") }
            )
            .into());
        }
        return Ok(None);
    }
    let t = file.tensor(name)?;
    if name != "attention_mask" && t.dtype() != DType::I64 {
        return Err(format!("{}: `{name}` must hold integers, got {:?}", file.path().display(), t.dtype()).into());
    }
    if t.rank() != 2 {
        return Err(
            format!("{}: `{name}` must be [batch, seq], got shape {:?}", file.path().display(), t.shape()).into()
        );
    }
    Ok(Some(t))
}

pub fn run(args: &ForwardArgs) -> CliResult<()> {
    check_model_dir(&args.model)?;
    let file = SafeTensors::open(&args.input)?;
    let input_ids = ids_tensor(&file, "input_ids", true)?.ok_or("input_ids is required")?;
    let attention_mask = ids_tensor(&file, "attention_mask", false)?;
    let token_type_ids = ids_tensor(&file, "token_type_ids", false)?;
    let _no_grad = engine::no_grad();
    let model = super::load_model_on(&args.model, args.adapter.as_deref(), args.device.device()?)?;
    let input = ForwardInput {
        input_ids: Some(&input_ids),
        attention_mask: attention_mask.as_ref(),
        token_type_ids: token_type_ids.as_ref(),
        ..Default::default()
    };
    let output = model.forward(&input, None)?;
    let (name, tensor) = output.main();
    let tensor = tensor.to_dtype(DType::F32)?.contiguous()?;
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    save_safetensors(&args.out, &[(name.to_string(), tensor)], Some(&metadata))?;
    Ok(())
}
