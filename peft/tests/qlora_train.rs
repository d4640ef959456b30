//! `peft train` with `quantization_config` (QLoRA): the base LLaMA is quantized to NF4 while loading,
//! LoRA learns on top of it, the 4-bit base changes the run (it is really used), and bad
//! quantization settings are refused with the key named.
use peft::train::{self, Overrides};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn run_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("qlora-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A cycle of 6 tokens from every start, so the next token is always predictable.
fn write_data(path: &Path, n: usize) {
    let rows: String = (0..n)
        .map(|i| {
            let (start, len) = (i % 6, 5 + i % 7);
            format!("{}\n", json!({"input_ids": (start..start + len).map(|t| 10 + (t % 6) as i64).collect::<Vec<_>>()}))
        })
        .collect();
    std::fs::write(path, rows).unwrap();
}

fn run_file(dir: &Path, quantization: Value) -> PathBuf {
    write_data(&dir.join("train.jsonl"), 48);
    write_data(&dir.join("dev.jsonl"), 12);
    let mut config = json!({
        "model": integration_tests::fixtures_dir().join("models/llama"),
        "task": "causal_lm",
        "peft": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "o_proj", "down_proj"], "lora_dropout": 0.0},
        "data": {"train": "train.jsonl", "dev": "dev.jsonl"},
        "output_dir": "out",
        "batch_size": 4,
        "max_steps": 40,
        "learning_rate": 0.03,
        "lr_scheduler": "constant",
        "seed": 7,
    });
    if !quantization.is_null() {
        config["quantization_config"] = quantization;
    }
    let path = dir.join("run.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

fn quiet() -> Overrides {
    Overrides { quiet: true, ..Default::default() }
}

#[test]
fn qlora_learns_and_differs_from_lora_on_the_float_base() {
    let q = json!({"load_in_4bit": true, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true, "bnb_4bit_compute_dtype": "bfloat16"});
    let dir = run_dir("learns");
    let s = train::run(&run_file(&dir, q), &quiet()).unwrap();
    let (before, after) = (s.eval_before["dev"].perplexity.unwrap(), s.eval_after["dev"].perplexity.unwrap());
    assert!(after < 0.5 * before, "dev perplexity {before} -> {after}");
    let float_dir = run_dir("float");
    let f = train::run(&run_file(&float_dir, Value::Null), &quiet()).unwrap();
    let f_before = f.eval_before["dev"].perplexity.unwrap();
    assert!((f_before - before).abs() > 1e-6 * before, "the 4-bit base computes differently ({before} vs {f_before})");
    // The command-line override gives the same run as the file's section.
    let cli_dir = run_dir("cli");
    let overrides = Overrides {
        quantization_config: Some(json!({"load_in_4bit": true, "bnb_4bit_use_double_quant": true})),
        ..quiet()
    };
    let c = train::run(&run_file(&cli_dir, Value::Null), &overrides).unwrap();
    assert_eq!(c.eval_after["dev"].perplexity, s.eval_after["dev"].perplexity);
    // peft eval of the adapter over the same 4-bit base gives the run's final numbers.
    let options = peft::eval::EvalOptions {
        load_in_4bit: Some(engine::quant::Bnb4bitConfig { double_quant: true, ..Default::default() }),
        ..Default::default()
    };
    let model = integration_tests::fixtures_dir().join("models/llama");
    let report =
        peft::eval::run(&model, Some(&cli_dir.join("out/adapter")), &cli_dir.join("dev.jsonl"), &options).unwrap();
    let p = report.metrics.perplexity.unwrap();
    assert!((p - after).abs() < 1e-3 * after, "eval {p} vs the run's {after}");
    for d in [dir, float_dir, cli_dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn bad_quantization_configs_are_named() {
    let dir = run_dir("errors");
    for (q, want) in [
        (json!({"load_in_8bit": true}), "load_in_8bit is not supported"),
        (json!({"load_in_4bit": true, "bnb_4bit_quant_type": "int4"}), "`int4` is not one of nf4, fp4"),
        (json!({"load_in_4bit": true, "bnb_4bit_compute_dtype": "float64"}), "`float64` is not one of"),
        (json!({"load_in_4bit": true, "bnb_4bit_quant_storag": "uint8"}), "unknown key `bnb_4bit_quant_storag`"),
    ] {
        let e = train::run(&run_file(&dir, q), &quiet()).unwrap_err().to_string();
        assert!(e.contains("quantization_config") && e.contains(want), "{e}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
