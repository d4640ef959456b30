//! `peft train` on the GPU against the same run on the host, for every method: LoRA on the tiny BERT
//! classifier, LLaMA and GPT-2, prompt tuning, P-tuning (MLP and LSTM), prefix tuning, and bottleneck
//! adapters, and QLoRA (4-bit bitsandbytes bases). Dropout is off (the GPU draws its masks with Philox, the host with its own generator), so
//! both runs compute the same thing in a different order: every step's loss and every adapter tensor
//! must agree to 1e-4 relative, and the dev metrics too. Without a GPU each test prints why and
//! returns; REQUIRE_GPU=1 makes that a failure.
#![cfg(feature = "cuda")]

mod gpu_common;

use gpu_common::gpu_available;
use integration_tests::TempDir;
use integration_tests::{cls_rows, lm_rows, write_jsonl};
use peft::train::{self, Overrides};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixture_model(name: &str) -> PathBuf {
    integration_tests::fixtures_dir().join("models").join(name)
}

/// Per-step losses, the adapter's tensors by file/name, and the dev metric after training.
type Trained = (Vec<f64>, Vec<(String, Vec<f32>)>, f64);

/// Trains `peft` on `model` for 6 steps on `device`, with the keys of `extra` (an object) added to the
/// run file (e.g. `quantization_config`).
fn run(dir: &Path, model: &str, peft: &Value, device: &str, extra: &Value) -> Trained {
    let task = if model == "bert-cls" { "sequence_classification" } else { "causal_lm" };
    let rows = if model == "bert-cls" { cls_rows(24, 5) } else { lm_rows(24, 6) };
    let dev = if model == "bert-cls" { cls_rows(8, 7) } else { lm_rows(8, 8) };
    write_jsonl(&dir.join("train.jsonl"), &rows);
    write_jsonl(&dir.join("dev.jsonl"), &dev);
    let mut config = json!({
        "model": fixture_model(model), "task": task, "peft": peft,
        "data": {"train": "train.jsonl", "dev": "dev.jsonl"}, "output_dir": format!("out-{device}"),
        "batch_size": 4, "max_steps": 6, "learning_rate": 0.01, "lr_scheduler": "linear", "warmup_steps": 2,
        "weight_decay": 0.01, "max_grad_norm": 1.0, "logging_steps": 1, "seed": 7, "device": device,
    });
    for (k, v) in extra.as_object().expect("extra config keys are an object") {
        config[k] = v.clone();
    }
    let path = dir.join(format!("run-{device}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    let summary = train::run(&path, &Overrides { quiet: true, ..Default::default() })
        .unwrap_or_else(|e| panic!("{model} {peft} on {device}: {e}"));
    let out = dir.join(format!("out-{device}"));
    let losses = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).unwrap().get("loss").and_then(Value::as_f64))
        .collect();
    let mut tensors = Vec::new();
    for f in std::fs::read_dir(out.join("adapter")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "safetensors") {
            let st = engine::io::SafeTensors::open(&f).unwrap();
            let names: Vec<String> = st.names().map(str::to_string).collect();
            for name in names {
                let t = st.tensor(&name).unwrap();
                tensors.push((format!("{}/{name}", f.file_name().unwrap().to_string_lossy()), t.to_vec_f32().unwrap()));
            }
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(summary.device, device, "{model}: the adapter trained on {}", summary.device);
    let m = &summary.eval_after["dev"];
    (losses, tensors, m.perplexity.or(m.accuracy).unwrap_or(f64::NAN))
}

fn close(what: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want.abs().max(1.0), "{what}: GPU {got}, host {want} (rel {rel:e})");
}

fn same_training(model: &str, peft: Value) {
    same_training_with(model, peft, &json!({}));
}

/// [`same_training`] with `extra` keys in both run files.
fn same_training_with(model: &str, peft: Value, extra: &Value) {
    same_training_within(model, peft, extra, 1e-4);
}

/// [`same_training_with`] to `rel` relative instead of 1e-4.
fn same_training_within(model: &str, peft: Value, extra: &Value, rel: f64) {
    if !gpu_available() {
        return;
    }
    let dir = TempDir::new("gpu-train");
    let (lh, th, mh) = run(dir.dir(), model, &peft, "cpu", extra);
    let (lg, tg, mg) = run(dir.dir(), model, &peft, "cuda:0", extra);
    assert_eq!(lh.len(), 6, "{model}: six logged steps");
    for (i, (g, h)) in lg.iter().zip(&lh).enumerate() {
        close(&format!("{model} {peft} loss at step {}", i + 1), *g, *h, rel);
    }
    close(&format!("{model} {peft} dev metric"), mg, mh, rel);
    assert_eq!(tg.iter().map(|t| &t.0).collect::<Vec<_>>(), th.iter().map(|t| &t.0).collect::<Vec<_>>());
    for ((name, g), (_, h)) in tg.iter().zip(&th) {
        assert!(!g.is_empty(), "{name} is empty");
        for (i, (a, b)) in g.iter().zip(h).enumerate() {
            close(&format!("{model} {name}[{i}]"), f64::from(*a), f64::from(*b), rel);
        }
    }
}

#[test]
fn lora_trains_the_same_on_the_gpu() {
    let lora = |targets: Value| json!({"r": 4, "lora_alpha": 8, "target_modules": targets, "lora_dropout": 0.0});
    same_training("bert-cls", lora(json!(["query", "value"])));
    same_training("llama", lora(json!("all-linear")));
    same_training("gpt2", lora(json!(["c_attn", "c_proj"])));
}

/// QLoRA: the base quantized to 4 bits at load (NF4 with double quantization, blocks of 64; FP4
/// without, blocks of 128) trains on the GPU from the same packed codes, dequantized there bit for
/// bit as on the host.
#[test]
fn qlora_trains_the_same_on_the_gpu() {
    let lora = |targets: Value| json!({"r": 4, "lora_alpha": 8, "target_modules": targets, "lora_dropout": 0.0});
    let nf4_dq = json!({"quantization_config": {"load_in_4bit": true, "bnb_4bit_use_double_quant": true}});
    same_training_with("llama", lora(json!("all-linear")), &nf4_dq);
    let fp4 =
        json!({"quantization_config": {"load_in_4bit": true, "bnb_4bit_quant_type": "fp4", "bnb_4bit_blocksize": 128}});
    same_training_with("bert-cls", lora(json!(["query", "value"])), &fp4);
}

/// bf16 mixed precision: the GPU casts the GEMM operands to bf16 and multiplies on the tensor cores,
/// the host rounds them the same way and uses its f32 GEMM; products are exact on both, the sums'
/// order differs. Tolerance 1e-3, not 1e-4: an f32 value that the two orders leave a few ulps apart
/// can round to neighbouring bf16 values (2^-8 apart), so the next GEMM's operands themselves differ;
/// after six AdamW steps adapter weights move ~1.5e-4 apart (measured on the emulator).
#[test]
fn bf16_mixed_precision_trains_the_same_on_the_gpu() {
    let lora = json!({"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "lora_dropout": 0.0});
    same_training_within("llama", lora, &json!({"mixed_precision": "bf16"}), 1e-3);
    // QLoRA in bf16: the dequantized weight is rounded too.
    let qlora = json!({"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"], "lora_dropout": 0.0});
    let extra = json!({"mixed_precision": "bf16", "quantization_config": {"load_in_4bit": true}});
    same_training_within("bert-cls", qlora, &extra, 1e-3);
}

#[test]
fn prompt_and_prefix_methods_train_the_same_on_the_gpu() {
    same_training("bert-cls", json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 3}));
    same_training("llama", json!({"peft_type": "P_TUNING", "num_virtual_tokens": 3, "encoder_hidden_size": 8}));
    same_training(
        "gpt2",
        json!({"peft_type": "P_TUNING", "num_virtual_tokens": 2, "encoder_reparameterization_type": "LSTM",
               "encoder_hidden_size": 8}),
    );
    same_training(
        "llama",
        json!({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4, "prefix_projection": true,
               "encoder_hidden_size": 16}),
    );
    // P-tuning v2: flat prefixes on a classifier.
    same_training("bert-cls", json!({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4}));
}

#[test]
fn bottleneck_adapters_train_the_same_on_the_gpu() {
    same_training("bert-cls", json!({"preset": "double_seq_bn", "reduction_factor": 8}));
    same_training("llama", json!({"preset": "par_bn", "reduction_factor": 8, "train_layer_norms": true}));
    same_training("gpt2", json!({"preset": "seq_bn", "reduction_factor": 8, "scaling": "learned"}));
}
