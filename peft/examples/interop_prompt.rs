//! Writes prompt-tuning and P-tuning adapters made here, with the outputs we compute for them and our
//! parameter counts for the fresh (trainable) model, so that `scripts/check-python-interop.py
//! --prefix DIR` (which checks any PEFT prompt-learning folder) can load each with Hugging Face PEFT
//! and compare. Usage: cargo run -p peft --example interop_prompt -- OUT_DIR
use engine::models::load;
use peft::method::build_adapter_model;
use peft::train::Task;
use serde_json::json;
use std::path::PathBuf;

#[path = "common/interop_case.rs"]
mod interop_case;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args().nth(1).ok_or("usage: interop_prompt OUT_DIR")?.into();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    let cases = [
        // our uniform init key: PEFT must still load the file (it drops the key with a warning)
        (
            "gpt2-prompt_tuning-uniform",
            "gpt2",
            Task::CausalLm,
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4, "prompt_tuning_init_uniform_bound": 0.5}),
        ),
        (
            "llama-prompt_tuning-sample_vocab",
            "llama",
            Task::CausalLm,
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 5, "prompt_tuning_init": "SAMPLE_VOCAB"}),
        ),
        (
            "gpt2-p_tuning-mlp",
            "gpt2",
            Task::CausalLm,
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 3, "encoder_hidden_size": 12}),
        ),
        (
            "llama-p_tuning-lstm",
            "llama",
            Task::CausalLm,
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 4, "encoder_reparameterization_type": "LSTM",
                   "encoder_hidden_size": 16, "encoder_num_layers": 2, "encoder_dropout": 0.1}),
        ),
        (
            "bert-cls-prompt_tuning",
            "bert-cls",
            Task::SequenceClassification,
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 3}),
        ),
        (
            "bert-cls-p_tuning-lstm",
            "bert-cls",
            Task::SequenceClassification,
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 2, "encoder_reparameterization_type": "LSTM",
                   "encoder_hidden_size": 8}),
        ),
    ];
    for (i, (name, model_name, task, section)) in cases.into_iter().enumerate() {
        let model_dir = fixtures.join(model_name);
        let model = build_adapter_model(load(&model_dir)?, &section, task, 300 + i as u64)?;
        // Move the heads off their initial values, as training would.
        for (n, t) in model.trainable_parameters() {
            if n.contains("modules_to_save") {
                t.update_in_place::<f32>(|d| d.iter_mut().enumerate().for_each(|(j, v)| *v += 0.05 * (j % 7) as f32))?;
            }
        }
        let dir = out.join(name);
        model.save_adapter(&dir.join("adapter"))?;
        interop_case::write_case(&dir, model.as_ref(), &model_dir, model.parameter_counts())?;
        println!("{name}: {}", model.trainable_parameters_line());
    }
    Ok(())
}
