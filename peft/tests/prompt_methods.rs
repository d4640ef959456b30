//! Prompt tuning and P-tuning against Hugging Face PEFT: saved adapters reproduce PEFT's outputs
//! (library and `peft forward --adapter`), a model built from a grad fixture's values gives PyTorch's
//! loss and gradients, parameter counts are PEFT's, and adapters survive a save → load round trip.
use engine::io::{save_safetensors, SafeTensors};
use engine::models::{load, ForwardInput, Model};
use engine::Tensor;
use integration_tests::{assert_grads, assert_within, fixtures_dir as fixtures, input_ids as ids, manifest};
use peft::method::{build_adapter_model, from_pretrained, load_adapter_model, AdapterModel};
use peft::train::data::Batch;
use peft::train::Task;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("peft-prompt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn prompt_cases() -> Vec<Value> {
    let m = manifest();
    let cases: Vec<Value> = m["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["peft_type"] == "PROMPT_TUNING" || c["peft_type"] == "P_TUNING")
        .cloned()
        .collect();
    assert_eq!(cases.len(), 7, "the manifest's prompt-tuning and P-tuning cases");
    cases
}

fn expected(case: &Value) -> Tensor {
    let out = case["output"].as_str().unwrap();
    SafeTensors::open(fixtures().join(case["expected"].as_str().unwrap())).unwrap().tensor_f32(out).unwrap()
}

fn tolerances(case: &Value) -> (f32, f32) {
    (case["rtol"].as_f64().unwrap() as f32, case["atol"].as_f64().unwrap() as f32)
}

fn run(model: &dyn Model, x: &Tensor) -> Tensor {
    model.forward(&ForwardInput { input_ids: Some(x), ..Default::default() }, None).unwrap().main().1.clone()
}

#[test]
fn saved_peft_prompt_adapters_reproduce_peft_outputs() {
    for case in prompt_cases() {
        let name = case["name"].as_str().unwrap();
        let model_dir = fixtures().join(case["model_dir"].as_str().unwrap());
        let adapter_dir = fixtures().join(case["adapter_dir"].as_str().unwrap());
        let (model, warnings) = from_pretrained(&model_dir, &adapter_dir).unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        assert_eq!(model.peft_type(), case["peft_type"].as_str().unwrap());
        let got = run(model.as_ref(), &ids(&case));
        let want = expected(&case);
        assert_eq!(got.shape(), want.shape(), "{name}: outputs for the real positions only");
        let (rtol, atol) = tolerances(&case);
        assert_within(name, &got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap(), rtol, atol);
    }
}

#[test]
fn peft_forward_with_a_prompt_adapter_matches_peft() {
    let dir = TempDir::new("cli");
    for case in prompt_cases() {
        let name = case["name"].as_str().unwrap();
        let input = dir.0.join(format!("{name}-in.safetensors"));
        let out = dir.0.join(format!("{name}-out.safetensors"));
        save_safetensors(&input, &[("input_ids".to_string(), ids(&case))], None).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_peft"))
            .arg("forward")
            .arg("--model")
            .arg(fixtures().join(case["model_dir"].as_str().unwrap()))
            .arg("--adapter")
            .arg(fixtures().join(case["adapter_dir"].as_str().unwrap()))
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let got = SafeTensors::open(&out).unwrap().tensor_f32(case["output"].as_str().unwrap()).unwrap();
        let (rtol, atol) = tolerances(&case);
        assert_within(name, &got.to_vec_f32().unwrap(), &expected(&case).to_vec_f32().unwrap(), rtol, atol);
    }
}

/// Writes a folder in our format (PEFT's files + the encoder file) holding a grad fixture's `param.*`
/// values, so that loading it builds the model PyTorch differentiated.
fn folder_from_grad_fixture(case: &Value, file: &SafeTensors, dir: &Path) {
    let mut config = case["peft_config"].clone();
    config["inference_mode"] = json!(true);
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    let params: Vec<(String, Tensor)> = file
        .names()
        .filter_map(|n| n.strip_prefix("param.").map(|p| (p.to_string(), file.tensor_f32(n).unwrap())))
        .collect();
    let table = params.iter().find(|(n, _)| n == "prompt_encoder.default.embedding.weight").unwrap().1.clone();
    let mut prompt = table.clone();
    if config["peft_type"] == "P_TUNING" {
        // PEFT's file holds the encoder's output (loading checks that the encoder file remakes it)
        let (c, _) = peft::prompt::PromptEncoderConfig::from_json(config.clone()).unwrap();
        let local: std::collections::HashMap<String, Tensor> = params
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix("prompt_encoder.default.")?.to_string(), t.clone())))
            .collect();
        let encoder = peft::prompt::encoder::PromptEncoder::from_named(&c, table.shape()[1], &local).unwrap();
        prompt = encoder.forward(&table, None).unwrap();
        save_safetensors(dir.join(peft::prompt::ENCODER_FILE), &params, None).unwrap();
    }
    save_safetensors(dir.join("adapter_model.safetensors"), &[("prompt_embeddings".to_string(), prompt)], None)
        .unwrap();
}

#[test]
fn loss_and_gradients_match_pytorch() {
    let m = manifest();
    let cases: Vec<&Value> = m["grads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| matches!(c["method"].as_str(), Some("prompt_tuning" | "p_tuning_mlp" | "p_tuning_lstm")))
        .collect();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let file = SafeTensors::open(fixtures().join(case["expected"].as_str().unwrap())).unwrap();
        let dir = TempDir::new(name);
        folder_from_grad_fixture(case, &file, &dir.0);
        let base = load(fixtures().join(case["model_dir"].as_str().unwrap())).unwrap();
        let (model, warnings) = load_adapter_model(base, &dir.0, true).unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        let input_ids = file.tensor("input_ids").unwrap();
        let labels = file.tensor("labels").unwrap();
        let (b, t) = (input_ids.shape()[0], input_ids.shape()[1]);
        let batch = Batch {
            attention_mask: Tensor::ones(&[b, t], engine::DType::I64).unwrap(),
            token_type_ids: None,
            input_ids,
            labels,
            label_values: Vec::new(),
            tokens: b * t,
            padded_tokens: b * t,
            items: b * (t - 1),
        };
        model.train(true);
        let (_, loss) = model.batch_loss(Task::CausalLm, &batch).unwrap();
        let want_loss = case["loss"].as_f64().unwrap() as f32;
        let got_loss = loss.to_scalar().unwrap();
        assert!((got_loss - want_loss).abs() < 1e-5, "{name}: loss {got_loss}, PyTorch {want_loss}");
        let grads = loss.backward().unwrap();
        let named = model.trainable_parameters();
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        let want_names: Vec<&str> =
            case["parameters"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        let mut want_sorted = want_names.clone();
        want_sorted.sort();
        assert_eq!(sorted, want_sorted, "{name}: PEFT's trainable parameter names");
        let (rtol, atol) = (case["rtol"].as_f64().unwrap() as f32, case["atol"].as_f64().unwrap() as f32);
        assert_grads(name, name, &grads, &named, &file, rtol, atol);
    }
}

#[test]
fn parameter_counts_are_peft_s() {
    // PEFT 0.21.2's `get_nb_trainable_parameters()` for these configs on the fixture models, from
    // assets/pyenv: get_peft_model(AutoModelFor...from_pretrained(dir), Prompt{Tuning,Encoder}Config(...)).
    let cases = [
        ("llama", Task::CausalLm, json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 5}), (160, 25088)),
        (
            "llama",
            Task::CausalLm,
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 4, "encoder_reparameterization_type": "LSTM",
                   "encoder_hidden_size": 16}),
            (15040, 39968),
        ),
        (
            "gpt2",
            Task::CausalLm,
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 4, "encoder_hidden_size": 16}),
            (1472, 32160),
        ),
        (
            "bert-cls",
            Task::SequenceClassification,
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4}),
            (194, 20238),
        ),
    ];
    for (model, task, section, want) in cases {
        let base = load(fixtures().join("models").join(model)).unwrap();
        let m = build_adapter_model(base, &section, task, 0).unwrap();
        assert_eq!(m.parameter_counts(), want, "{model} {section}");
    }
}

fn fresh(model: &str, task: Task, section: Value, seed: u64) -> Box<dyn AdapterModel> {
    build_adapter_model(load(fixtures().join("models").join(model)).unwrap(), &section, task, seed).unwrap()
}

#[test]
fn save_then_load_gives_the_same_model_and_peft_s_files() {
    let x = Tensor::from_vec(vec![5i64, 9, 17, 33, 2, 70], &[2, 3]).unwrap();
    let sections = [
        ("gpt2", Task::CausalLm, json!({"peft_type": "P_TUNING", "num_virtual_tokens": 3, "encoder_hidden_size": 8})),
        (
            "llama",
            Task::CausalLm,
            json!({"peft_type": "P_TUNING", "num_virtual_tokens": 3, "encoder_reparameterization_type": "LSTM",
                   "encoder_hidden_size": 8, "encoder_dropout": 0.1}),
        ),
        ("bert-cls", Task::SequenceClassification, json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2})),
    ];
    for (model_name, task, section) in sections {
        let dir = TempDir::new(&format!("rt-{model_name}"));
        let model = fresh(model_name, task, section.clone(), 7);
        let before = run(model.as_ref(), &x).to_vec_f32().unwrap();
        model.save_adapter(&dir.0).unwrap();
        let file = SafeTensors::open(dir.0.join("adapter_model.safetensors")).unwrap();
        let mut keys: Vec<&str> = file.names().collect();
        keys.sort();
        let want_keys: Vec<&str> = if task == Task::SequenceClassification {
            vec!["base_model.classifier.bias", "base_model.classifier.weight", "prompt_embeddings"]
        } else {
            vec!["prompt_embeddings"]
        };
        assert_eq!(keys, want_keys, "{model_name}: PEFT's keys");
        let base = || load(fixtures().join("models").join(model_name)).unwrap();
        let (again, warnings) = load_adapter_model(base(), &dir.0, true).unwrap();
        assert!(warnings.is_empty(), "{model_name}: {warnings:?}");
        assert_eq!(run(again.as_ref(), &x).to_vec_f32().unwrap(), before, "{model_name}: same outputs after loading");
        let names = |m: &dyn AdapterModel| m.trainable_parameters().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(again.as_ref()), names(model.as_ref()), "{model_name}: trainable again, same names");
        if section["peft_type"] == "P_TUNING" {
            // an encoder file that does not belong to the PEFT file is refused
            let other = TempDir::new(&format!("rt-other-{model_name}"));
            fresh(model_name, task, section.clone(), 8).save_adapter(&other.0).unwrap();
            let enc = peft::prompt::ENCODER_FILE;
            std::fs::copy(dir.0.join(enc), dir.0.join("kept")).unwrap();
            std::fs::copy(other.0.join(enc), dir.0.join(enc)).unwrap();
            let err = load_adapter_model(base(), &dir.0, true).err().unwrap().to_string();
            assert!(err.contains("does not reproduce"), "{err}");
            std::fs::rename(dir.0.join("kept"), dir.0.join(enc)).unwrap();
            // PEFT's files alone: the saved prompt, frozen, said so; same outputs
            std::fs::remove_file(dir.0.join(peft::prompt::ENCODER_FILE)).unwrap();
            let (frozen, warnings) = load_adapter_model(base(), &dir.0, true).unwrap();
            assert!(warnings.iter().any(|w| w.contains("inference only")), "{warnings:?}");
            assert!(frozen.trainable_parameters().is_empty());
            let got = run(frozen.as_ref(), &x).to_vec_f32().unwrap();
            assert_within(model_name, &got, &before, 1e-5, 1e-6);
        }
    }
}

#[test]
fn initializations() {
    let table = |m: &dyn AdapterModel| {
        m.trainable_parameters()
            .into_iter()
            .find(|(n, _)| n.ends_with("embedding.weight"))
            .unwrap()
            .1
            .to_vec_f32()
            .unwrap()
    };
    // RANDOM is PEFT's N(0, 1); our bound draws U(-b, b) (the paper's 0.5).
    let normal = table(
        fresh("gpt2", Task::CausalLm, json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 40}), 1).as_ref(),
    );
    let uniform = table(
        fresh(
            "gpt2",
            Task::CausalLm,
            json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 40, "prompt_tuning_init_uniform_bound": 0.5}),
            1,
        )
        .as_ref(),
    );
    let std = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    assert!((std(&normal) - 1.0).abs() < 0.05, "N(0,1): std {}", std(&normal));
    assert!(uniform.iter().all(|x| x.abs() <= 0.5));
    assert!((std(&uniform) - 0.5 / 3f32.sqrt()).abs() < 0.02, "U(-0.5,0.5): std {}", std(&uniform));
    // SAMPLE_VOCAB: every row is a row of the word-embedding table.
    let m = fresh(
        "gpt2",
        Task::CausalLm,
        json!({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 6, "prompt_tuning_init": "SAMPLE_VOCAB"}),
        3,
    );
    let wte: BTreeMap<String, Tensor> = m.named_parameters().into_iter().collect();
    let wte = wte["transformer.wte.weight"].to_vec_f32().unwrap();
    let dim = m.config().hidden_size;
    for row in table(m.as_ref()).chunks(dim) {
        assert!(wte.chunks(dim).any(|w| w == row), "a SAMPLE_VOCAB row that is no token's embedding");
    }
}

/// A copy of a fixture adapter folder with `template` added to its config.
fn with_template(case: &str, template: Value, dir: &Path) -> PathBuf {
    let src = fixtures().join("adapters").join(case);
    let out = dir.join(format!("{case}-{}", template.to_string().replace([',', '[', ']'], "_")));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(src.join("adapter_model.safetensors"), out.join("adapter_model.safetensors")).unwrap();
    let mut config: Value = serde_json::from_slice(&std::fs::read(src.join("adapter_config.json")).unwrap()).unwrap();
    config["template"] = template;
    std::fs::write(out.join("adapter_config.json"), config.to_string()).unwrap();
    out
}

#[test]
fn templates_place_virtual_tokens_between_segments() {
    let dir = TempDir::new("template");
    let case =
        manifest()["adapters"].as_array().unwrap().iter().find(|c| c["name"] == "llama-p_tuning_mlp").unwrap().clone();
    let llama = fixtures().join("models/llama");
    let x = ids(&case);
    // all virtual tokens first: PEFT's layout, PEFT's outputs
    let (m, _) = from_pretrained(&llama, &with_template("llama-p_tuning_mlp", json!([4, 0]), &dir.0)).unwrap();
    let (rtol, atol) = tolerances(&case);
    assert_within(
        "[4, 0]",
        &run(m.as_ref(), &x).to_vec_f32().unwrap(),
        &expected(&case).to_vec_f32().unwrap(),
        rtol,
        atol,
    );
    // all virtual tokens after the input: a causal LM's tokens cannot see them
    let (m, _) = from_pretrained(&llama, &with_template("llama-p_tuning_mlp", json!([0, 4]), &dir.0)).unwrap();
    let plain = run(load(&llama).unwrap().as_ref(), &x).to_vec_f32().unwrap();
    assert_within("[0, 4]", &run(m.as_ref(), &x).to_vec_f32().unwrap(), &plain, 1e-5, 1e-6);

    // BERT, two segments (token_type_ids 0 0 0 1 1 1), template [1, 2, 1]: the model sees
    // p0 a a a p1 p2 b b b p3 with the segment ids of the tokens next to each virtual token.
    let bert = fixtures().join("models/bert-cls");
    let folder = dir.0.join("bert-p_tuning");
    let section =
        json!({"peft_type": "P_TUNING", "num_virtual_tokens": 4, "encoder_hidden_size": 8, "template": [1, 2, 1]});
    let model = build_adapter_model(load(&bert).unwrap(), &section, Task::SequenceClassification, 5).unwrap();
    model.save_adapter(&folder).unwrap();
    let saved: Value = serde_json::from_slice(&std::fs::read(folder.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(saved["template"], json!([1, 2, 1]), "the template is saved with the adapter");
    let x = Tensor::from_vec(vec![5i64, 6, 7, 8, 9, 10], &[1, 6]).unwrap();
    let types = Tensor::from_vec(vec![0i64, 0, 0, 1, 1, 1], &[1, 6]).unwrap();
    let got = model
        .forward(&ForwardInput { input_ids: Some(&x), token_type_ids: Some(&types), ..Default::default() }, None)
        .unwrap()
        .main()
        .1
        .to_vec_f32()
        .unwrap();
    let prompt =
        SafeTensors::open(folder.join("adapter_model.safetensors")).unwrap().tensor_f32("prompt_embeddings").unwrap();
    let base = load(&bert).unwrap();
    let e = base.embed_tokens(&x).unwrap().reshape(&[6, 32]).unwrap();
    let p = |i: usize, n: usize| prompt.narrow(0, i, n).unwrap();
    let tok = |i: usize, n: usize| e.narrow(0, i, n).unwrap();
    let parts = [p(0, 1), tok(0, 3), p(1, 2), tok(3, 3), p(3, 1)];
    let embeds = Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0).unwrap().reshape(&[1, 10, 32]).unwrap();
    let full_types = Tensor::from_vec(vec![0i64, 0, 0, 0, 1, 1, 1, 1, 1, 1], &[1, 10]).unwrap();
    // the classifier is the saved copy (the fresh copy equals the base's head)
    let want = base
        .forward(
            &ForwardInput { inputs_embeds: Some(&embeds), token_type_ids: Some(&full_types), ..Default::default() },
            None,
        )
        .unwrap()
        .main()
        .1
        .to_vec_f32()
        .unwrap();
    assert_within("bert [1, 2, 1]", &got, &want, 1e-5, 1e-6);
    // a row whose segments do not fit the template is refused, naming the template
    let one_segment = Tensor::zeros(&[1, 6], engine::DType::I64);
    let err = model
        .forward(&ForwardInput { input_ids: Some(&x), token_type_ids: Some(&one_segment), ..Default::default() }, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("template"), "{err}");
    // a template that does not add up to num_virtual_tokens is a config error
    let bad = json!({"peft_type": "P_TUNING", "num_virtual_tokens": 4, "template": [1, 1]});
    assert!(build_adapter_model(load(&bert).unwrap(), &bad, Task::SequenceClassification, 0).is_err());
}

#[test]
fn generation_with_a_soft_prompt_is_the_same_with_and_without_the_cache() {
    use engine::models::sampling::{generate, SamplingConfig};
    for case in ["gpt2-prompt_tuning", "llama-p_tuning_lstm"] {
        let model_name = case.split('-').next().unwrap();
        let (m, _) =
            from_pretrained(&fixtures().join("models").join(model_name), &fixtures().join("adapters").join(case))
                .unwrap();
        let cfg = SamplingConfig::default();
        let cached = generate(m.as_ref(), &[5, 17, 33], 6, &[], &cfg, true).unwrap();
        let uncached = generate(m.as_ref(), &[5, 17, 33], 6, &[], &cfg, false).unwrap();
        assert_eq!(cached, uncached, "{case}");
        // and the first new token is the argmax of the prompted model's last logits
        let x = Tensor::from_vec(vec![5i64, 17, 33], &[1, 3]).unwrap();
        let last = run(m.as_ref(), &x).narrow(1, 2, 1).unwrap().to_vec_f32().unwrap();
        let argmax = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
        assert_eq!(cached[0], argmax as i64, "{case}");
    }
}

#[test]
fn merge_refuses_a_prompt_adapter_and_the_example_configs_are_valid() {
    let dir = TempDir::new("merge");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_peft"))
        .arg("merge")
        .arg("--model")
        .arg(fixtures().join("models/gpt2"))
        .arg("--adapter")
        .arg(fixtures().join("adapters/gpt2-p_tuning_mlp"))
        .arg("--out")
        .arg(dir.0.join("merged"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("P_TUNING") && err.contains("LoRA"), "{err}");
    for (file, peft_type) in
        [("sentiment-prompt-tuning.json", "PROMPT_TUNING"), ("sentiment-p-tuning.json", "P_TUNING")]
    {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
        let c = peft::train::TrainConfig::load(&path).unwrap();
        let section = c.peft_section().unwrap().unwrap();
        assert_eq!(section["peft_type"], peft_type);
        let config = peft::method::prompt_config_from_section(&section, c.task).unwrap();
        assert_eq!(config.common().modules_to_save, Some(vec!["classifier".to_string(), "score".to_string()]));
    }
}

#[test]
fn evaluation_weighs_every_loss_term_once() {
    // The prompt's last virtual token predicts each row's first token: a term the batch's `items` do
    // not count. The mean loss must not depend on how examples are batched.
    use peft::train::data::{Example, Labels};
    let (m, _) =
        from_pretrained(&fixtures().join("models/gpt2"), &fixtures().join("adapters/gpt2-prompt_tuning")).unwrap();
    let examples: Vec<Example> = [vec![5i64, 6, 7], vec![8, 9, 10, 11, 12, 13, 14], vec![20, 21]]
        .into_iter()
        .map(|ids| Example { labels: Labels::Tokens(ids.clone()), input_ids: ids, token_type_ids: None })
        .collect();
    let one = peft::eval::evaluate(m.as_ref(), Task::CausalLm, &examples, 1, 0).unwrap();
    let all = peft::eval::evaluate(m.as_ref(), Task::CausalLm, &examples, 3, 0).unwrap();
    assert_eq!((one.items, all.items), (12, 12), "9 next-token terms + 3 first tokens");
    assert!((one.loss - all.loss).abs() < 1e-5, "batched {} vs one by one {}", all.loss, one.loss);
}
