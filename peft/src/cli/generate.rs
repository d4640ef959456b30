//! `peft generate`: continue a prompt with a causal language model.
use super::{check_model_dir, CliResult};
use engine::models::chat_template::{ChatMessage, ChatTemplate};
use engine::models::sampling::{self, SamplingConfig};
use engine::models::tokenizer::Tokenizer;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("prompt_source").required(true).args(["prompt", "prompt_ids"])))]
#[command(allow_negative_numbers = true)]
pub struct GenerateArgs {
    /// Hugging Face model folder of a causal LM (GPT-2, LLaMA) with its tokenizer.json, or a
    /// llama.cpp `.gguf` file (LLaMA architecture; its own tokenizer).
    #[arg(long, value_name = "DIR|FILE.gguf")]
    pub model: PathBuf,
    /// Prompt text, tokenized with the folder's tokenizer.json; prints the decoded continuation.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub prompt: Option<String>,
    /// Prompt token ids (`1,2,3`), bypassing the tokenizer; prints the new ids the same way.
    #[arg(long, value_name = "IDS", value_delimiter = ',', num_args = 1..)]
    pub prompt_ids: Option<Vec<i64>>,
    /// Most tokens to generate (fewer when an end-of-sequence token comes first).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_new_tokens: usize,
    /// Sample at this temperature (greedy decoding when absent or 0).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Sample only among the K most likely tokens.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to P (nucleus).
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Seed of the sampling random stream.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Recompute the whole sequence at every step instead of keeping a key/value cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Put the prompt in the model's chat template as one user message and open the assistant's
    /// turn (ChatML templates: a `.gguf` file's, or `chat_template` of tokenizer_config.json).
    #[arg(long, requires = "prompt")]
    pub chat: bool,
    /// Adapter folder to apply to the model (PEFT's, any method, or AdapterHub's).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

pub fn run(args: &GenerateArgs) -> CliResult<()> {
    let cfg = SamplingConfig { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed };
    cfg.validate()?;
    if cfg.is_greedy() && (cfg.top_k.is_some() || cfg.top_p.is_some()) {
        eprintln!("warning: --top-k and --top-p only apply when sampling (give --temperature); decoding greedily");
    }
    check_model_dir(&args.model)?;
    let (tokenizer, prompt_ids) = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => {
            let tokenizer = Tokenizer::from_dir(&args.model)?;
            let ids = if args.chat {
                // As transformers' apply_chat_template: the template writes the special tokens.
                let template = ChatTemplate::from_model(&args.model)?;
                tokenizer.encode(&template.render(&[ChatMessage::new("user", text)], true), false)?
            } else {
                tokenizer.encode(text, true)?
            };
            (Some(tokenizer), ids)
        }
        (None, Some(ids)) => (None, ids.clone()),
        (None, None) => return Err("give --prompt TEXT or --prompt-ids 1,2,3".into()),
    };
    let model = super::load_model_on(&args.model, args.adapter.as_deref(), args.device.device()?)?;
    let eos = sampling::eos_token_ids(&args.model, model.config())?;
    let new_ids = sampling::generate(model.as_ref(), &prompt_ids, args.max_new_tokens, &eos, &cfg, !args.no_cache)?;
    match tokenizer {
        Some(tokenizer) => println!("{}", tokenizer.decode(&new_ids, true)?),
        None => println!("{}", new_ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")),
    }
    Ok(())
}
