//! Writes prefix-tuning and P-tuning v2 adapters made here, with the outputs we compute for them and
//! our parameter counts for the fresh (trainable) model, so that `scripts/check-python-interop.py
//! --prefix DIR` can load each with Hugging Face PEFT and compare.
//! Usage: cargo run -p peft --example interop_prefix -- OUT_DIR
use engine::models::{load, load_as, Architecture, Model};
use peft::prefix::{PrefixModel, PrefixTuningConfig};
use peft::AdapterModel;
use std::path::PathBuf;

#[path = "common/interop_case.rs"]
mod interop_case;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args().nth(1).ok_or("usage: interop_prefix OUT_DIR")?.into();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    // (case, model folder, task type, projection, prefix length)
    let cases = [
        ("gpt2-flat", "gpt2", "CAUSAL_LM", false, 4),
        ("gpt2-projection", "gpt2", "CAUSAL_LM", true, 3),
        ("llama-projection-gqa", "llama", "CAUSAL_LM", true, 5),
        ("bert-cls-p_tuning_v2", "bert-cls", "SEQ_CLS", false, 6),
        ("bert-token-cls-p_tuning_v2", "bert", "TOKEN_CLS", false, 4),
    ];
    for (i, (name, model_name, task, projection, tokens)) in cases.into_iter().enumerate() {
        let model_dir = fixtures.join(model_name);
        let base: Box<dyn Model> = match task {
            "TOKEN_CLS" => load_as(&model_dir, Some(Architecture::BertForTokenClassification), Some(3))?,
            _ => load(&model_dir)?,
        };
        let mut config = PrefixTuningConfig::new(tokens);
        config.common.task_type = Some(task.into());
        config.prefix_projection = projection;
        if projection {
            config.encoder_hidden_size = Some(12);
        }
        if task != "CAUSAL_LM" {
            config.prefix_dropout = 0.1; // ours; PEFT must ignore it (with a warning)
        }
        let model = PrefixModel::new(base, config, 200 + i as u64)?;
        // Move the heads off their initial values, as training would.
        for (n, t) in model.trainable_parameters() {
            if n.contains("modules_to_save") {
                t.update_in_place::<f32>(|d| d.iter_mut().enumerate().for_each(|(j, v)| *v += 0.05 * (j % 7) as f32))?;
            }
        }
        let dir = out.join(name);
        model.save_adapter(&dir.join("adapter"))?;
        interop_case::write_case(&dir, &model, &model_dir, model.parameter_counts())?;
        println!("{name}: {}", model.trainable_parameters_line());
    }
    Ok(())
}
