//! Writes LoRA adapters made here, with the outputs we compute for them, so that
//! `scripts/check-python-interop.py` can load each with Hugging Face PEFT and compare.
//! Usage: cargo run -p peft --example interop_adapters -- OUT_DIR
use engine::models::load;
use peft::config::{InitLoraWeights, TargetModules};
use peft::{LoraConfig, PeftModel};
use std::path::PathBuf;

#[path = "common/interop_case.rs"]
mod interop_case;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args().nth(1).ok_or("usage: interop_adapters OUT_DIR")?.into();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    // (model folder, task type, targets, options)
    let cases: [(&str, &str, TargetModules); 5] = [
        ("bert-cls", "SEQ_CLS", TargetModules::Names(vec!["query".into(), "value".into()])),
        ("gpt2", "CAUSAL_LM", TargetModules::Names(vec!["c_attn".into(), "c_proj".into()])),
        ("llama", "CAUSAL_LM", TargetModules::Pattern("all-linear".into())),
        ("gpt2-regex", "CAUSAL_LM", TargetModules::Pattern(r"transformer\.h\.1\.(attn|mlp)\.c_proj".into())),
        ("bert", "FEATURE_EXTRACTION", TargetModules::Names(vec!["query".into(), "key".into(), "dense".into()])),
    ];
    for (i, (name, task, targets)) in cases.into_iter().enumerate() {
        let model_dir = fixtures.join(name.trim_end_matches("-regex"));
        let mut model = PeftModel::new(load(&model_dir)?);
        let mut cfg = LoraConfig::new(4, 8.0, &[]);
        cfg.target_modules = Some(targets);
        cfg.task_type = Some(task.into());
        cfg.init_lora_weights = InitLoraWeights::Flag(false); // both A and B random: a visible effect
        cfg.fan_in_fan_out = name.starts_with("gpt2");
        match name {
            "bert-cls" => {
                cfg.modules_to_save = Some(vec!["classifier".into(), "score".into()]);
                cfg.bias = "lora_only".into();
            }
            "llama" => {
                cfg.use_rslora = true;
                cfg.rank_pattern.insert("q_proj".into(), 2);
                cfg.alpha_pattern.insert("down_proj".into(), 3.0);
            }
            "bert" => cfg.layers_to_transform = Some(peft::config::Layers::Many(vec![1])),
            _ => {}
        }
        model.add_adapter("default", cfg, 100 + i as u64)?;
        // Move the trainable heads and biases off their pretrained values, as training would.
        for (_, t) in model.trainable_parameters() {
            if t.numel() > 0 && t.rank() == 1 {
                t.update_in_place::<f32>(|d| d.iter_mut().for_each(|v| *v += 0.25))?;
            }
        }
        let dir = out.join(name);
        model.save_adapter(dir.join("adapter"), "default")?;
        interop_case::write_case(&dir, &model, &model_dir, model.parameter_counts())?;
        println!("{name}: {}", model.trainable_parameters_line());
    }
    Ok(())
}
