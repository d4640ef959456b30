//! LoRA fine-tuning of the real SmolLM2-135M GGUF file with `peft train`: the model is dequantized
//! to f32, the adapter learns (perplexity on its training text falls) and is saved in PEFT's format
//! under the Hugging Face module paths, so it applies to the same model in transformers; the saved
//! adapter then loads onto the GGUF model again and reproduces the trained perplexity.
//! Needs `scripts/fetch-assets.sh` (CI runs it first); `PEFT_SKIP_REAL_MODELS=1` skips it.
use engine::io::SafeTensors;
use integration_tests::smollm2;
use peft::train::{self, Overrides, Summary};
use std::path::{Path, PathBuf};

/// Trains LoRA (r 4 on q_proj and v_proj of the first and last layers) for 6 steps on two lines
/// of Romeo and Juliet, evaluated on the same lines; `qlora` loads the base with `load_in_4bit`.
/// Returns the summary, the data file and the folder to remove.
fn train_on_two_lines(model: &Path, tag: &str, qlora: bool) -> (Summary, PathBuf, PathBuf) {
    let lora = serde_json::json!({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [0, 29]});
    train_method_on_two_lines(model, tag, lora, 0.02, qlora)
}

/// As [`train_on_two_lines`] with any method's `peft` section and learning rate.
fn train_method_on_two_lines(
    model: &Path,
    tag: &str,
    method: serde_json::Value,
    lr: f64,
    qlora: bool,
) -> (Summary, PathBuf, PathBuf) {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gguf-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let data = out.join("train.jsonl");
    let lines = [
        "ROMEO:\nBut, soft! what light through yonder window breaks?",
        "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?",
    ];
    let jsonl: String = lines.iter().map(|t| format!("{}\n", serde_json::json!({ "text": t }))).collect();
    std::fs::write(&data, jsonl).unwrap();
    let mut config = serde_json::json!({
        "model": model,
        "task": "causal_lm",
        "peft": method,
        "data": {"train": data, "dev": data},
        "output_dir": out.join("run"),
        "max_steps": 6,
        "batch_size": 2,
        "learning_rate": lr,
        "lr_scheduler": "constant",
        "seed": 1,
        "eval_steps": 0,
        "save_steps": 0,
    });
    if qlora {
        config["quantization_config"] = serde_json::json!({"load_in_4bit": true});
    }
    let config_path = out.join("run.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let summary = train::run(&config_path, &Overrides { quiet: true, ..Default::default() }).unwrap();
    (summary, data, out)
}

#[test]
fn lora_on_smollm2_gguf_learns_and_saves_hugging_face_paths() {
    let Some(model) = smollm2() else { return };
    let (summary, data, out) = train_on_two_lines(&model, "lora", false);
    let before = summary.eval_before["dev"].perplexity.unwrap();
    let after = summary.eval_after["dev"].perplexity.unwrap();
    println!("perplexity on the training text {before:.2} -> {after:.2}");
    assert!(after < 0.5 * before, "perplexity {before} -> {after}");
    // 2 layers × (q: 576→576, v: 576→192), r = 4: A is r×in, B is out×r.
    assert_eq!(summary.trainable_params, 2 * (4 * 576 + 576 * 4 + 4 * 576 + 192 * 4));

    let adapter = SafeTensors::open(summary.adapter_dir.join("adapter_model.safetensors")).unwrap();
    let mut names: Vec<&str> = adapter.names().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
            "base_model.model.model.layers.29.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.29.self_attn.q_proj.lora_B.weight",
            "base_model.model.model.layers.29.self_attn.v_proj.lora_A.weight",
            "base_model.model.model.layers.29.self_attn.v_proj.lora_B.weight",
        ]
    );
    assert_eq!(adapter.info("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").unwrap().shape, [192, 4]);

    // The saved adapter on the GGUF model again: the same perplexity as at the end of training.
    let options = peft::eval::EvalOptions::default();
    let report = peft::eval::run(&model, Some(&summary.adapter_dir), &data, &options).unwrap();
    let again = report.metrics.perplexity.unwrap();
    assert!((again - after).abs() < 1e-3 * after, "reloaded adapter: perplexity {again}, after training {after}");
    std::fs::remove_dir_all(&out).ok();
}

/// QLoRA on the GGUF file: with `load_in_4bit` the Q4_1 blocks stay packed and frozen (not
/// re-quantized to NF4), so before training the model is exactly the dequantized one (the same
/// perplexity as the float model's, through `peft eval`), and LoRA learns on it.
#[test]
fn qlora_on_smollm2_gguf_keeps_the_file_blocks() {
    let Some(model) = smollm2() else { return };
    let (summary, data, out) = train_on_two_lines(&model, "qlora", true);
    let float = peft::eval::run(&model, None, &data, &peft::eval::EvalOptions::default()).unwrap();
    let float_ppl = float.metrics.perplexity.unwrap();
    let before = summary.eval_before["dev"].perplexity.unwrap();
    let after = summary.eval_after["dev"].perplexity.unwrap();
    println!("float model {float_ppl:.4}; packed blocks {before:.4} -> {after:.4} after QLoRA");
    assert!((before - float_ppl).abs() < 1e-4 * float_ppl, "packed {before} vs float {float_ppl}");
    assert!(after < 0.5 * before, "perplexity {before} -> {after}");
    // `peft eval --load-in-4bit` of the adapter over the same packed blocks gives the final figure.
    let options = peft::eval::EvalOptions { load_in_4bit: Some(Default::default()), ..Default::default() };
    let again = peft::eval::run(&model, Some(&summary.adapter_dir), &data, &options).unwrap();
    let again = again.metrics.perplexity.unwrap();
    assert!((again - after).abs() < 1e-4 * after, "eval over the packed base: {again}, after training {after}");
    std::fs::remove_dir_all(&out).ok();
}

/// The prompt methods on the GGUF model (dequantized): soft prompts and prefixes learn the two
/// lines too (learning rates as each method wants them).
#[test]
fn prompt_methods_on_smollm2_gguf_learn() {
    let Some(model) = smollm2() else { return };
    let methods = [
        ("prompt", serde_json::json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8}), 0.03),
        ("ptuning", serde_json::json!({"peft_type": "P_TUNING", "num_virtual_tokens": 8}), 0.001),
        ("prefix", serde_json::json!({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 8}), 0.03),
    ];
    for (tag, method, lr) in methods {
        let (summary, _, out) = train_method_on_two_lines(&model, tag, method, lr, false);
        let before = summary.eval_before["dev"].perplexity.unwrap();
        let after = summary.eval_after["dev"].perplexity.unwrap();
        println!("{tag}: perplexity {before:.2} -> {after:.2}");
        assert!(after < 0.5 * before, "{tag}: perplexity {before} -> {after}");
        std::fs::remove_dir_all(&out).ok();
    }
}
