//! `peft train` / `peft eval` on the tiny fixture models with small synthetic JSONL: the loss goes
//! down, runs are reproducible byte for byte, resuming from a checkpoint ends where an uninterrupted
//! run ends, gradient accumulation matches a bigger batch, and bad configs and data are clear errors.
use engine::io::SafeTensors;
use engine::random::Rng;
use integration_tests::{cls_rows, lm_rows, write_jsonl};
use peft::train::{self, Overrides, Summary, TrainConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixture_model(name: &str) -> PathBuf {
    integration_tests::fixtures_dir().join("models").join(name)
}

/// A folder of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("peft-train-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes train/dev JSONL and a run file into `dir`, returns the run file's path.
fn setup(dir: &Path, model: &str, task: &str, rows: &[Value], dev: &[Value], extra: Value) -> PathBuf {
    write_jsonl(&dir.join("train.jsonl"), rows);
    write_jsonl(&dir.join("dev.jsonl"), dev);
    let mut config = json!({
        "model": fixture_model(model),
        "task": task,
        "peft": {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value", "q_proj", "v_proj"], "lora_dropout": 0.0},
        "data": {"train": "train.jsonl", "dev": "dev.jsonl"},
        "output_dir": "out",
        "batch_size": 4,
        "learning_rate": 0.01,
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "seed": 7,
    });
    if task == "causal_lm" {
        config["peft"]["target_modules"] = json!(["q_proj", "v_proj"]);
    } else {
        config["peft"]["target_modules"] = json!(["query", "value"]);
    }
    merge(&mut config, extra);
    let path = dir.join("run.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

/// Sets every key of `extra` in `config` (one level deep into objects; null removes).
fn merge(config: &mut Value, extra: Value) {
    let Value::Object(extra) = extra else { return };
    for (k, v) in extra {
        match (config.get_mut(&k), v) {
            (Some(Value::Object(dst)), Value::Object(src)) => {
                for (k2, v2) in src {
                    dst.insert(k2, v2);
                }
            }
            (_, Value::Null) => {
                config.as_object_mut().unwrap().remove(&k);
            }
            (_, v) => {
                config[&k] = v;
            }
        }
    }
}

fn quiet() -> Overrides {
    Overrides { quiet: true, ..Default::default() }
}

fn train_losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|v| v.get("loss").and_then(Value::as_f64))
        .collect()
}

fn adapter_bytes(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(dir.join("adapter_config.json")).unwrap(),
    )
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn lora_on_bert_classifier_learns_and_reports() {
    let dir = TempDir::new("bert-learns");
    let run = setup(
        dir.path(),
        "bert-cls",
        "sequence_classification",
        &cls_rows(64, 1),
        &cls_rows(32, 2),
        json!({"max_steps": 40, "eval_steps": 20, "learning_rate": 0.03}),
    );
    let s: Summary = train::run(&run, &quiet()).unwrap();
    let losses = train_losses(&dir.path().join("out"));
    assert_eq!(losses.len(), 40);
    assert!(mean(&losses[32..]) < 0.6 * mean(&losses[..4]), "loss did not go down: {losses:?}");
    let before = s.eval_before["dev"].accuracy.unwrap();
    let after = s.eval_after["dev"].accuracy.unwrap();
    assert!(after >= 0.9 && after > before, "dev accuracy {before} -> {after}");
    assert_eq!(s.steps, 40);
    assert_eq!(s.num_labels, Some(2));
    assert!(s.trainable_line.starts_with("trainable params: "));
    assert!(s.tokens > 0 && s.tokens_per_s > 0.0);
    // the output folder: adapter, summary, metrics with train, eval-during and eval-after lines
    let out = dir.path().join("out");
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 40);
    assert_eq!(summary["config"]["task"], "sequence_classification");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evals: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("eval").is_some())
        .collect();
    let whens: Vec<&str> = evals.iter().map(|v| v["when"].as_str().unwrap()).collect();
    assert_eq!(whens, ["before", "during", "after"]);
    assert!(evals[1]["step"] == 20 && evals[1]["eval_accuracy"].is_number());
    // the classifier is trained and saved with the LoRA weights, PEFT-style
    let file = SafeTensors::open(out.join("adapter/adapter_model.safetensors")).unwrap();
    let names: Vec<&str> = file.names().collect();
    assert!(names.contains(&"base_model.model.classifier.weight"), "{names:?}");
    assert!(names.contains(&"base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"), "{names:?}");
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["task_type"], "SEQ_CLS");
    assert_eq!(config["modules_to_save"], json!(["classifier", "score"]));

    // `peft eval` infers the task and the label count from the adapter and agrees with the trainer
    let report = peft::eval::run(
        &fixture_model("bert-cls"),
        Some(&out.join("adapter")),
        &dir.path().join("dev.jsonl"),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(report.task, train::Task::SequenceClassification);
    assert_eq!(report.num_labels, Some(2));
    let m = &report.metrics;
    assert_eq!(m.examples, 32);
    assert!((m.accuracy.unwrap() - after).abs() < 1e-9, "{m:?} vs {after}");
    assert!((m.loss - s.eval_after["dev"].loss).abs() < 1e-4, "{m:?}");
}

#[test]
fn lora_on_llama_causal_lm_learns() {
    let dir = TempDir::new("llama-learns");
    let run = setup(
        dir.path(),
        "llama",
        "causal_lm",
        &lm_rows(64, 3),
        &lm_rows(16, 4),
        json!({"max_steps": 40, "learning_rate": 0.03, "peft": {"target_modules": ["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"]}}),
    );
    let s = train::run(&run, &quiet()).unwrap();
    let losses = train_losses(&dir.path().join("out"));
    assert!(mean(&losses[35..]) < 0.7 * mean(&losses[..3]), "loss did not go down: {losses:?}");
    let (before, after) = (s.eval_before["dev"].perplexity.unwrap(), s.eval_after["dev"].perplexity.unwrap());
    assert!(after < 0.5 * before, "dev perplexity {before} -> {after}");
    assert!(s.eval_after["dev"].accuracy.is_none());
    let report = peft::eval::run(
        &fixture_model("llama"),
        Some(&dir.path().join("out/adapter")),
        &dir.path().join("dev.jsonl"),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(report.task, train::Task::CausalLm);
    assert!((report.metrics.perplexity.unwrap() - after).abs() < 1e-3 * after);
}

#[test]
fn same_config_same_adapter_bytes() {
    for (model, task, rows) in
        [("bert-cls", "sequence_classification", cls_rows(24, 5)), ("llama", "causal_lm", lm_rows(24, 6))]
    {
        let dir = TempDir::new("determinism");
        let extra = json!({"max_steps": 5, "peft": {"lora_dropout": 0.1}, "gradient_accumulation_steps": 2,
                           "batch_size": 2, "optimizer": "adamw", "lr_scheduler": "linear", "warmup_steps": 2});
        let run = setup(dir.path(), model, task, &rows, &rows[..8], extra);
        train::run(&run, &Overrides { output_dir: Some(dir.path().join("a")), ..quiet() }).unwrap();
        train::run(&run, &Overrides { output_dir: Some(dir.path().join("b")), ..quiet() }).unwrap();
        let a = adapter_bytes(&dir.path().join("a/adapter"));
        let b = adapter_bytes(&dir.path().join("b/adapter"));
        assert!(a == b, "{model}: two runs of the same config wrote different adapters");
        // another seed gives another adapter
        train::run(&run, &Overrides { output_dir: Some(dir.path().join("c")), seed: Some(8), ..quiet() }).unwrap();
        assert!(adapter_bytes(&dir.path().join("c/adapter")).0 != a.0, "{model}: the seed changed nothing");
    }
}

#[test]
fn resuming_from_a_checkpoint_ends_with_the_same_adapter() {
    for (model, task, rows) in
        [("bert-cls", "sequence_classification", cls_rows(16, 9)), ("llama", "causal_lm", lm_rows(16, 10))]
    {
        let dir = TempDir::new("resume");
        // 16 examples, batch 2, accumulation 2: 4 steps per epoch, so checkpoint-3 is mid-epoch and
        // the 6 steps cross into the second epoch; dropout 0.1 exercises the dropout clock.
        let extra = json!({"max_steps": 6, "save_steps": 3, "batch_size": 2, "gradient_accumulation_steps": 2,
                           "peft": {"lora_dropout": 0.1}, "lr_scheduler": "linear", "warmup_ratio": 0.2,
                           "weight_decay": 0.01, "logging_steps": 2});
        let run = setup(dir.path(), model, task, &rows, &rows[..4], extra);
        let full = dir.path().join("full");
        train::run(&run, &Overrides { output_dir: Some(full.clone()), ..quiet() }).unwrap();
        let ckpt = full.join("checkpoint-3");
        for f in ["adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors", "trainer_state.json"] {
            assert!(ckpt.join(f).is_file(), "{model}: checkpoint-3 lacks {f}");
        }
        assert!(full.join("checkpoint-6").is_dir());
        let state: Value = serde_json::from_slice(&std::fs::read(ckpt.join("trainer_state.json")).unwrap()).unwrap();
        assert_eq!(
            (state["global_step"].as_u64(), state["epoch"].as_u64(), state["batch_in_epoch"].as_u64()),
            (Some(3), Some(0), Some(6))
        );
        let want = adapter_bytes(&full.join("adapter"));

        // a fresh run (new model, new optimizer) from the checkpoint's path
        let resumed = dir.path().join("resumed");
        let s = train::run(
            &run,
            &Overrides { output_dir: Some(resumed.clone()), resume_from: Some(ckpt.display().to_string()), ..quiet() },
        )
        .unwrap();
        assert_eq!(s.steps, 6);
        assert!(adapter_bytes(&resumed.join("adapter")) == want, "{model}: the resumed run ended elsewhere");
        // the summary still has the evaluation from before training
        assert!(s.eval_before.contains_key("dev"));

        // "latest" in an interrupted output folder: only checkpoint-3 survived
        let interrupted = dir.path().join("interrupted");
        std::fs::create_dir_all(interrupted.join("checkpoint-3")).unwrap();
        for f in std::fs::read_dir(&ckpt).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), interrupted.join("checkpoint-3").join(f.file_name())).unwrap();
        }
        std::fs::copy(full.join("metrics.jsonl"), interrupted.join("metrics.jsonl")).unwrap();
        train::run(
            &run,
            &Overrides { output_dir: Some(interrupted.clone()), resume_from: Some("latest".into()), ..quiet() },
        )
        .unwrap();
        assert!(adapter_bytes(&interrupted.join("adapter")) == want, "{model}: resume \"latest\" ended elsewhere");
        // metrics.jsonl: the earlier lines up to step 3 kept, the rest rewritten, the same loss values
        let full_losses = train_losses(&full);
        let resumed_losses = train_losses(&interrupted);
        assert_eq!(full_losses, resumed_losses, "{model}: logged losses differ");
    }
}

#[test]
fn gradient_accumulation_matches_the_bigger_batch() {
    for (model, task, rows) in
        [("bert-cls", "sequence_classification", cls_rows(4, 11)), ("llama", "causal_lm", lm_rows(4, 12))]
    {
        let dir = TempDir::new("accumulation");
        let extra = json!({"max_steps": 1, "optimizer": "sgd", "learning_rate": 0.5, "max_grad_norm": 0.0});
        let run = setup(dir.path(), model, task, &rows, &rows, extra);
        let one = dir.path().join("one");
        let two = dir.path().join("two");
        train::run(&run, &Overrides { output_dir: Some(one.clone()), ..quiet() }).unwrap();
        let path = dir.path().join("run2.json");
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&run).unwrap()).unwrap();
        cfg["batch_size"] = json!(2);
        cfg["gradient_accumulation_steps"] = json!(2);
        std::fs::write(&path, cfg.to_string()).unwrap();
        train::run(&path, &Overrides { output_dir: Some(two.clone()), ..quiet() }).unwrap();
        let a = SafeTensors::open(one.join("adapter/adapter_model.safetensors")).unwrap();
        let b = SafeTensors::open(two.join("adapter/adapter_model.safetensors")).unwrap();
        let init_b_is_zero = |n: &str| n.contains("lora_B");
        let mut moved = 0;
        for name in a.names() {
            let x = a.tensor_f32(name).unwrap().to_vec::<f32>().unwrap();
            let y = b.tensor_f32(name).unwrap().to_vec::<f32>().unwrap();
            for (i, (p, q)) in x.iter().zip(&y).enumerate() {
                assert!((p - q).abs() <= 1e-5 + 1e-4 * p.abs(), "{model} {name}[{i}]: {p} vs {q}");
            }
            if init_b_is_zero(name) && x.iter().any(|&v| v != 0.0) {
                moved += 1;
            }
        }
        assert!(moved > 0, "{model}: the step changed nothing");
    }
}

fn error_of(dir: &Path, config: Value) -> String {
    let path = dir.join("bad.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    match train::run(&path, &quiet()) {
        Ok(_) => panic!("{config} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_errors_are_clear() {
    let dir = TempDir::new("config-errors");
    let run = setup(dir.path(), "bert-cls", "sequence_classification", &cls_rows(8, 13), &cls_rows(4, 14), json!({}));
    let good: Value = serde_json::from_slice(&std::fs::read(&run).unwrap()).unwrap();
    let with = |extra: Value| {
        let mut c = good.clone();
        merge(&mut c, extra);
        c
    };
    let e = error_of(dir.path(), with(json!({"learning_rat": 0.1})));
    assert!(e.contains("learning_rat") && e.contains("bad.json"), "{e}");
    let e = error_of(dir.path(), with(json!({"model": "no/such/model"})));
    assert!(e.contains("no/such/model") && e.contains("not found"), "{e}");
    let e = error_of(dir.path(), with(json!({"task": "summarization"})));
    assert!(e.contains("summarization") && e.contains("sequence_classification"), "{e}");
    let e = error_of(dir.path(), with(json!({"task": "causal_lm"})));
    assert!(e.contains("causal_lm") && e.contains("BertForSequenceClassification"), "{e}");
    let e = error_of(dir.path(), with(json!({"peft": {"lora_alhpa": 3}})));
    assert!(e.contains("lora_alhpa") && e.contains("peft"), "{e}");
    let e = error_of(dir.path(), with(json!({"data": {"train": "train.jsonl", "valid": "dev.jsonl"}})));
    assert!(e.contains("valid"), "{e}");
    let e = error_of(dir.path(), with(json!({"batch_size": 0})));
    assert!(e.contains("batch_size"), "{e}");
    let e = error_of(dir.path(), with(json!({"num_labels": 3})));
    assert!(e.contains("num_labels") && e.contains('3') && e.contains("2 outputs"), "{e}");
    let e = error_of(dir.path(), with(json!({"optimizer": "adam"})));
    assert!(e.contains("adam") && e.contains("adamw"), "{e}");
    let e = error_of(dir.path(), with(json!({"peft": null})));
    assert!(e.contains("peft"), "{e}");
    let e = error_of(dir.path(), with(json!({"resume_from": "latest"})));
    assert!(e.contains("latest") && e.contains("checkpoint"), "{e}");
    let e = error_of(dir.path(), with(json!({"max_seq_length": 1000})));
    assert!(e.contains("max_seq_length") && e.contains("64"), "{e}");
    let e = error_of(dir.path(), with(json!({"device": "gpu"})));
    assert!(e.contains("`gpu`") && e.contains("cpu, cuda or cuda:N"), "{e}");
    // bnb 4-bit bases train on the GPU; a GGUF file's own blocks (kept by 4-bit loading) cannot.
    let gguf = json!({"model": "model.Q4_0.gguf", "task": "causal_lm", "device": "cuda:0",
                      "quantization_config": {"load_in_4bit": true}});
    let e = error_of(dir.path(), with(gguf));
    #[cfg(feature = "cuda")]
    assert!(e.contains("GGUF") && e.contains("no GPU kernel"), "{e}");
    #[cfg(not(feature = "cuda"))]
    assert!(e.contains("cuda:0") && e.contains("--features cuda"), "{e}");
}

#[test]
fn data_errors_name_the_file_and_line() {
    let dir = TempDir::new("data-errors");
    let run = setup(dir.path(), "bert-cls", "sequence_classification", &cls_rows(8, 15), &cls_rows(4, 16), json!({}));
    let train_file = dir.path().join("train.jsonl");
    let mut lines: Vec<String> = cls_rows(5, 17).iter().map(|r| r.to_string()).collect();
    let check = |lines: &[String], want: &[&str]| {
        std::fs::write(&train_file, lines.join("\n")).unwrap();
        let e = train::run(&run, &quiet()).unwrap_err().to_string();
        for w in want {
            assert!(e.contains(w), "`{w}` not in: {e}");
        }
    };
    lines[2] = "{\"input_ids\": [2, 11, 3], \"label\": 1".into();
    check(&lines, &["train.jsonl:3", "JSON"]);
    lines[2] = json!({"input_ids": [2, 11, 3], "label": 5}).to_string();
    check(&lines, &["train.jsonl:3", "label 5", "2 classes"]);
    lines[2] = json!({"input_ids": [2, 11, 3], "label": 1}).to_string();
    lines[3] = json!({"input_ids": [2, 11, 3]}).to_string();
    check(&lines, &["train.jsonl:4", "label"]);
    lines[3] = json!({"input_ids": [2, 500, 3], "label": 0}).to_string();
    check(&lines, &["train.jsonl:4", "500", "vocabulary"]);
    lines[3] = json!({"text": "hello", "label": 0}).to_string();
    check(&lines, &["train.jsonl:4", "tokenizer"]);
    lines[3] = json!({"label": 0}).to_string();
    check(&lines, &["train.jsonl:4", "text"]);
}

/// A BERT WordPiece `tokenizer.json` over the first ids of the fixture vocabulary.
fn tiny_tokenizer_json() -> String {
    let mut vocab = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    vocab.extend(["good", "great", "fine", "bad", "awful", "dull", "the", "movie", "film", "was", "a", "plot", "."]);
    let vocab: serde_json::Map<String, Value> =
        vocab.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect();
    let added: Vec<Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0", "truncation": null,
        "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

#[test]
fn text_data_is_tokenized_with_special_tokens_and_truncated() {
    let dir = TempDir::new("text");
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture_model("bert-cls").join(f), model.join(f)).unwrap();
    }
    std::fs::write(model.join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    let spec = train::data::DataSpec {
        task: train::Task::SequenceClassification,
        num_labels: 2,
        vocab_size: 99,
        max_seq_length: 5,
        model_dir: model.clone(),
    };
    let tok = train::data::LazyTokenizer::new(&model);
    let ex = train::data::parse_example(&json!({"text": "The movie was GOOD.", "label": 1}), &spec, &tok).unwrap();
    // [CLS] the movie was good . [SEP] cut to 5 keeping [SEP], as transformers' truncation does
    assert_eq!(ex.input_ids, vec![2, 11, 12, 14, 3]);
    assert_eq!(ex.labels, train::data::Labels::Class(1));
    let ex = train::data::parse_example(&json!({"text": "bad film", "label": 0}), &spec, &tok).unwrap();
    assert_eq!(ex.input_ids, vec![2, 8, 13, 3]);
    assert_eq!(train::data::pad_id(&model, None), 0);

    // and end to end: positive and negative words
    let words_pos = ["good", "great", "fine"];
    let words_neg = ["bad", "awful", "dull"];
    let mut rng = Rng::new(3);
    let rows: Vec<Value> = (0..32)
        .map(|i| {
            let w = if i % 2 == 0 { words_pos } else { words_neg };
            let text = format!("the movie was {} {}", w[rng.next_below(3) as usize], w[rng.next_below(3) as usize]);
            json!({"text": text, "label": 1 - (i % 2)})
        })
        .collect();
    let run = setup(dir.path(), "bert-cls", "sequence_classification", &rows, &rows[..8], json!({"max_steps": 10}));
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&run).unwrap()).unwrap();
    cfg["model"] = json!("model");
    std::fs::write(&run, cfg.to_string()).unwrap();
    let s = train::run(&run, &quiet()).unwrap();
    let dev = &s.eval_after["dev"];
    assert_eq!(dev.examples, 8);
    // [CLS] the movie was <w> <w> [SEP]: 7 tokens each
    assert_eq!(dev.tokens, 56);
    assert!(dev.loss.is_finite() && dev.accuracy.is_some());
}

#[test]
fn init_adapter_continues_from_a_saved_adapter() {
    let dir = TempDir::new("init");
    let rows = cls_rows(16, 19);
    let run = setup(dir.path(), "bert-cls", "sequence_classification", &rows, &rows[..8], json!({"max_steps": 4}));
    let first = train::run(&run, &quiet()).unwrap();
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&run).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("peft");
    cfg["init_adapter"] = json!("out/adapter");
    cfg["output_dir"] = json!("out2");
    let path = dir.path().join("run2.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let second = train::run(&path, &quiet()).unwrap();
    // it starts where the first run ended
    assert!((second.eval_before["dev"].loss - first.eval_after["dev"].loss).abs() < 1e-6);
}

#[test]
fn the_sentiment_example_config_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/sentiment-lora.json");
    let c = TrainConfig::load(&path).unwrap();
    assert_eq!(c.task, train::Task::SequenceClassification);
    assert!(c.model.ends_with("assets/all-MiniLM-L6-v2"), "{}", c.model.display());
    assert!(c.data.train.ends_with("data/sentiment/train.jsonl"));
    let lora = c.lora_config().unwrap().unwrap();
    assert_eq!((lora.r, lora.lora_alpha, lora.lora_dropout), (8, 16.0, 0.1));
    assert_eq!(lora.modules_to_save, Some(vec!["classifier".to_string(), "score".to_string()]));
}

fn peft_cli(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_peft")).args(args).output().expect("the peft binary runs")
}

#[test]
fn cli_train_and_eval() {
    let dir = TempDir::new("cli");
    let rows = cls_rows(16, 21);
    let run = setup(dir.path(), "bert-cls", "sequence_classification", &rows, &rows[..8], json!({"max_steps": 50}));
    let out = dir.path().join("cli-out");
    let o = peft_cli(&[
        "train".as_ref(),
        "--config".as_ref(),
        run.as_os_str(),
        "--max-steps".as_ref(),
        "3".as_ref(),
        "--output-dir".as_ref(),
        out.as_os_str(),
    ]);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("dev accuracy before: ") && stdout.contains("dev accuracy after: "), "{stdout}");
    // stderr is not a terminal here: plain progress lines instead of the bar
    assert!(stderr.contains("trainable params: ") && stderr.contains("step 3/3"), "{stderr}");
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 3);

    let o = peft_cli(&[
        "eval".as_ref(),
        "--model".as_ref(),
        fixture_model("bert-cls").as_os_str(),
        "--adapter".as_ref(),
        out.join("adapter").as_os_str(),
        "--data".as_ref(),
        dir.path().join("dev.jsonl").as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("task: sequence_classification") && stdout.contains("accuracy: "), "{stdout}");

    std::fs::write(dir.path().join("bad.json"), "{\"modle\": \"x\"}").unwrap();
    let o = peft_cli(&["train".as_ref(), "--config".as_ref(), dir.path().join("bad.json").as_os_str()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr.starts_with("error: ") && stderr.contains("modle"), "{stderr}");
}

#[test]
fn token_classification_on_a_bare_encoder() {
    // The bare `bert` fixture gets a new 3-way token classifier; each token's class is its id mod 3,
    // with the first position unlabelled (-100).
    let dir = TempDir::new("token-cls");
    let mut rng = Rng::new(23);
    let rows: Vec<Value> = (0..48)
        .map(|_| {
            let len = 3 + rng.next_below(8) as usize;
            let ids: Vec<i64> = (0..len).map(|_| 10 + rng.next_below(12) as i64).collect();
            let labels: Vec<i64> = ids.iter().enumerate().map(|(k, t)| if k == 0 { -100 } else { t % 3 }).collect();
            json!({"input_ids": ids, "labels": labels})
        })
        .collect();
    let run = setup(
        dir.path(),
        "bert",
        "token_classification",
        &rows,
        &rows[..16],
        json!({"num_labels": 3, "max_steps": 40, "learning_rate": 0.03}),
    );
    let s = train::run(&run, &quiet()).unwrap();
    assert_eq!(s.num_labels, Some(3));
    let losses = train_losses(&dir.path().join("out"));
    assert!(mean(&losses[32..]) < 0.6 * mean(&losses[..4]), "loss did not go down: {losses:?}");
    let (before, after) = (&s.eval_before["dev"], &s.eval_after["dev"]);
    assert!(after.accuracy.unwrap() > 0.8 && after.accuracy > before.accuracy, "{before:?} -> {after:?}");
    // the loss averages over labelled tokens only
    let labelled: usize = rows[..16].iter().map(|r| r["labels"].as_array().unwrap().len() - 1).sum();
    assert_eq!(after.items, labelled);
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["task_type"], "TOKEN_CLS");
    // eval infers the task and the 3 labels from the adapter
    let report = peft::eval::run(
        &fixture_model("bert"),
        Some(&dir.path().join("out/adapter")),
        &dir.path().join("dev.jsonl"),
        &Default::default(),
    )
    .unwrap();
    assert_eq!((report.task, report.num_labels), (train::Task::TokenClassification, Some(3)));
    assert_eq!(report.metrics.accuracy, after.accuracy);
}

/// The adapter folder's files of any method (PEFT's two, plus P-tuning's encoder file when present).
fn all_adapter_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Rows with `token_type_ids`: the first half of each example is segment 0, the rest segment 1.
fn two_segment_rows(rows: Vec<Value>) -> Vec<Value> {
    rows.into_iter()
        .map(|mut r| {
            let n = r["input_ids"].as_array().unwrap().len();
            r["token_type_ids"] = json!((0..n).map(|i| i64::from(i >= n / 2)).collect::<Vec<i64>>());
            r
        })
        .collect()
}

#[test]
fn prompt_methods_train_and_resume_exactly() {
    let cases = [
        (
            "bert-cls",
            "sequence_classification",
            cls_rows(16, 9),
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 3}),
            vec!["adapter_config.json", "adapter_model.safetensors"],
        ),
        (
            "llama",
            "causal_lm",
            lm_rows(16, 10),
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 3, "encoder_reparameterization_type": "LSTM",
                   "encoder_hidden_size": 8, "encoder_dropout": 0.2}),
            vec!["adapter_config.json", "adapter_model.safetensors", "prompt_encoder.safetensors"],
        ),
        (
            "gpt2",
            "causal_lm",
            lm_rows(16, 11),
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 2, "encoder_hidden_size": 8}),
            vec!["adapter_config.json", "adapter_model.safetensors", "prompt_encoder.safetensors"],
        ),
        (
            // a P-tuning template around two segments given as token_type_ids
            "bert-cls",
            "sequence_classification",
            two_segment_rows(cls_rows(16, 12)),
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 3, "template": [1, 1, 1], "encoder_hidden_size": 8}),
            vec!["adapter_config.json", "adapter_model.safetensors", "prompt_encoder.safetensors"],
        ),
    ];
    for (model, task, rows, peft, files) in cases {
        let dir = TempDir::new("prompt-resume");
        let (run, mut config, ckpt) = train_and_resume_exactly(dir.path(), model, task, &rows, peft, &files);
        // a run file whose prompt differs from the checkpoint's is refused
        config["peft"]["num_virtual_tokens"] = json!(config["peft"]["num_virtual_tokens"].as_u64().unwrap() + 1);
        if let Some(t) = config["peft"].get_mut("template") {
            t[0] = json!(t[0].as_u64().unwrap() + 1);
        }
        std::fs::write(&run, config.to_string()).unwrap();
        let other = Overrides {
            output_dir: Some(dir.path().join("other")),
            resume_from: Some(ckpt.display().to_string()),
            ..quiet()
        };
        let err = train::run(&run, &other).unwrap_err().to_string();
        assert!(err.contains("differs from the run file"), "{model}: {err}");
    }
}

#[test]
fn bottleneck_adapters_train_and_resume_exactly() {
    let cases = [
        (
            "bert-cls",
            "sequence_classification",
            cls_rows(16, 9),
            json!({"preset": "double_seq_bn", "reduction_factor": 8, "dropout": 0.1, "name": "houlsby"}),
            vec![
                "adapter.safetensors",
                "adapter_config.json",
                "head_config.json",
                "model_head.safetensors",
                "training_options.json",
            ],
        ),
        (
            "llama",
            "causal_lm",
            lm_rows(16, 10),
            json!({"preset": "par_bn", "reduction_factor": 8, "train_layer_norms": true}),
            vec!["adapter.safetensors", "adapter_config.json", "layer_norms.safetensors", "training_options.json"],
        ),
        (
            "gpt2",
            "causal_lm",
            lm_rows(16, 11),
            json!({"preset": "seq_bn", "reduction_factor": 8, "scaling": "learned", "stochastic_depth": 0.2}),
            vec!["adapter.safetensors", "adapter_config.json", "training_options.json"],
        ),
    ];
    for (model, task, rows, peft, files) in cases {
        let dir = TempDir::new("bottleneck-resume");
        train_and_resume_exactly(dir.path(), model, task, &rows, peft, &files);
    }
}

#[test]
fn text_pairs_and_text_initialized_prompts() {
    let dir = TempDir::new("text-init");
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture_model("bert-cls").join(f), model.join(f)).unwrap();
    }
    std::fs::write(model.join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    let spec = train::data::DataSpec {
        task: train::Task::SequenceClassification,
        num_labels: 2,
        vocab_size: 99,
        max_seq_length: 16,
        model_dir: model.clone(),
    };
    let tok = train::data::LazyTokenizer::new(&model);
    // a pair: [CLS] the movie [SEP] was bad [SEP], segment ids 0 0 0 0 1 1 1
    let ex = train::data::parse_example(&json!({"text": ["the movie", "was bad"], "label": 0}), &spec, &tok).unwrap();
    assert_eq!(ex.input_ids, vec![2, 11, 12, 3, 14, 8, 3]);
    assert_eq!(ex.token_type_ids, Some(vec![0, 0, 0, 0, 1, 1, 1]));
    let bad = json!({"text": "the movie", "token_type_ids": [0, 0, 0, 0], "label": 0});
    assert!(train::data::parse_example(&bad, &spec, &tok).unwrap_err().contains("token_type_ids"));

    // TEXT init: "the movie" → [CLS] the movie [SEP], repeated to 6 virtual tokens, their embeddings
    let section = json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 6, "prompt_tuning_init": "TEXT",
                         "prompt_tuning_init_text": "the movie", "base_model_name_or_path": model.display().to_string()});
    let base = engine::models::load(&model).unwrap();
    let m = peft::method::build_adapter_model(base, &section, train::Task::SequenceClassification, 0).unwrap();
    let table = m.trainable_parameters().into_iter().find(|(n, _)| n.ends_with("embedding.weight")).unwrap().1;
    let ids = engine::Tensor::from_vec(vec![2i64, 11, 12, 3, 2, 11], &[1, 6]).unwrap();
    let want = m.embed_tokens(&ids).unwrap().to_vec_f32().unwrap();
    assert_eq!(table.to_vec_f32().unwrap(), want);
    // PEFT needs the tokenizer named in a TEXT config to load it
    assert_eq!(m.adapter_config_json()["tokenizer_name_or_path"], json!(model.display().to_string()));
}

/// Trains `peft` (a whole `peft` section) on a fixture model for 12 steps with a checkpoint at 5,
/// checks the adapter folder holds `files`, the dev loss fell, and resuming from the checkpoint
/// ends at the same adapter bytes and logged losses. Returns the run file, its JSON and the
/// checkpoint.
fn train_and_resume_exactly(
    dir: &Path,
    model: &str,
    task: &str,
    rows: &[Value],
    peft: Value,
    files: &[&str],
) -> (PathBuf, Value, PathBuf) {
    let extra = json!({"max_steps": 12, "save_steps": 5, "batch_size": 2, "gradient_accumulation_steps": 2,
               "learning_rate": 0.02, "logging_steps": 1});
    let run = setup(dir, model, task, rows, &rows[..4], extra);
    // the `peft` section is replaced whole: no LoRA keys left
    let mut config: Value = serde_json::from_slice(&std::fs::read(&run).unwrap()).unwrap();
    config["peft"] = peft;
    std::fs::write(&run, config.to_string()).unwrap();
    let full = dir.join("full");
    let s = train::run(&run, &Overrides { output_dir: Some(full.clone()), ..quiet() }).unwrap();
    assert!(s.trainable_params > 0 && s.trainable_line.starts_with("trainable params"), "{model}");
    let saved = all_adapter_bytes(&full.join("adapter"));
    let names: Vec<&str> = saved.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, files, "{model}: the adapter folder's files");
    let (before, after) = (s.eval_before["dev"].loss, s.eval_after["dev"].loss);
    assert!(after < before, "{model}: dev loss {before} before training, {after} after");
    let losses = train_losses(&full);
    let resumed = dir.join("resumed");
    let ckpt = full.join("checkpoint-5");
    train::run(
        &run,
        &Overrides { output_dir: Some(resumed.clone()), resume_from: Some(ckpt.display().to_string()), ..quiet() },
    )
    .unwrap();
    assert!(all_adapter_bytes(&resumed.join("adapter")) == saved, "{model}: the resumed run ended elsewhere");
    let resumed_losses = train_losses(&resumed);
    assert!(!resumed_losses.is_empty() && losses.ends_with(&resumed_losses), "{model}: logged losses differ");
    (run, config, ckpt)
}

#[test]
fn bf16_mixed_precision_trains_and_differs_from_f32() {
    // As lora_on_llama_causal_lm_learns, in bf16.
    let extra = json!({"max_steps": 40, "learning_rate": 0.03, "peft": {"target_modules": ["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"]}});
    let (rows, dev) = (lm_rows(64, 3), lm_rows(16, 4));
    let dir = TempDir::new("bf16");
    let run = setup(dir.path(), "llama", "causal_lm", &rows, &dev, extra.clone());
    let cli = Overrides { mixed_precision: Some("bf16".into()), ..quiet() };
    let s = train::run(&run, &cli).unwrap();
    let losses = train_losses(&dir.path().join("out"));
    assert!(mean(&losses[35..]) < 0.7 * mean(&losses[..3]), "bf16 loss did not go down: {losses:?}");
    let (before, after) = (s.eval_before["dev"].perplexity.unwrap(), s.eval_after["dev"].perplexity.unwrap());
    assert!(after < 0.5 * before, "bf16 dev perplexity {before} -> {after}");
    // `peft eval` in bf16 reproduces the trainer's evaluation of the trained adapter; in f32 it differs.
    let eval = |autocast| {
        let options = peft::eval::EvalOptions { autocast, ..Default::default() };
        let (model, adapter) = (fixture_model("llama"), dir.path().join("out/adapter"));
        peft::eval::run(&model, Some(&adapter), &dir.path().join("dev.jsonl"), &options)
            .unwrap()
            .metrics
            .perplexity
            .unwrap()
    };
    let (in_bf16, in_f32) = (eval(Some(engine::DType::BF16)), eval(None));
    assert!((in_bf16 - after).abs() <= 1e-6 * after, "peft eval in bf16 {in_bf16}, the trainer's {after}");
    assert!((in_f32 - after).abs() > 1e-7 * after, "peft eval in f32 ignored nothing? {in_f32} vs {after}");
    // The run file's key gives the same run as the command line.
    let file_dir = TempDir::new("bf16-file");
    let mut with_key = extra.clone();
    with_key["mixed_precision"] = json!("bf16");
    let run_key = setup(file_dir.path(), "llama", "causal_lm", &rows, &dev, with_key);
    train::run(&run_key, &quiet()).unwrap();
    assert_eq!(train_losses(&file_dir.path().join("out")), losses);
    // "no" (the default) is plain f32, which computes differently from the first step on.
    let f32_dir = TempDir::new("bf16-vs-f32");
    let mut no = extra;
    no["mixed_precision"] = json!("no");
    let run_f32 = setup(f32_dir.path(), "llama", "causal_lm", &rows, &dev, no);
    let f = train::run(&run_f32, &quiet()).unwrap();
    let f32_losses = train_losses(&f32_dir.path().join("out"));
    assert!((f32_losses[0] - losses[0]).abs() > 1e-6 * f32_losses[0], "{f32_losses:?} vs {losses:?}");
    let f_before = f.eval_before["dev"].perplexity.unwrap();
    assert!((f_before - before).abs() > 1e-7 * f_before, "evaluation ignored bf16 ({before} vs {f_before})");
    // fp16 (would need loss scaling) and unknown values are clear errors.
    for (value, want) in [("fp16", "loss scaling"), ("fp8", "\"no\", \"bf16\"")] {
        let e = train::run(&run_f32, &Overrides { mixed_precision: Some(value.into()), ..quiet() }).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("mixed_precision") && e.contains(want), "{e}");
    }
}
