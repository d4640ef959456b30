//! Prefix tuning and P-tuning v2 against Hugging Face PEFT: adapters PEFT saved reproduce its outputs,
//! a fresh prefix model's loss and gradients match PyTorch's for the same parameter values, configs
//! fill from the model as PEFT fills them (grouped-query rule included) with PEFT's parameter counts,
//! files round-trip, and generation with the KV cache equals recomputation.
use engine::io::SafeTensors;
use engine::models::sampling::{generate, SamplingConfig};
use engine::models::{load, ForwardInput, Model};
use engine::Tensor;
use peft::method::{load_base_for_adapter, AdapterModel};
use peft::prefix::files::ENCODER_FILE;
use peft::prefix::{PrefixModel, PrefixTuningConfig};
use std::path::Path;

use integration_tests::{assert_grads, assert_within, fixtures_dir as fixtures, input_ids as ids, manifest, TempDir};

fn tolerances(case: &serde_json::Value) -> (f32, f32) {
    (case["rtol"].as_f64().unwrap() as f32, case["atol"].as_f64().unwrap() as f32)
}

fn forward_main(model: &dyn Model, x: &Tensor) -> Vec<f32> {
    let out = model.forward(&ForwardInput { input_ids: Some(x), ..Default::default() }, None).unwrap();
    out.main().1.to_vec_f32().unwrap()
}

fn prefix_cases(section: &str) -> Vec<serde_json::Value> {
    let m = manifest();
    m[section]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["peft_type"] == "PREFIX_TUNING" || c["peft_config"]["peft_type"] == "PREFIX_TUNING")
        .cloned()
        .collect()
}

#[test]
fn saved_prefix_adapters_reproduce_peft_outputs() {
    let cases = prefix_cases("adapters");
    let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in [
        "llama-prefix_tuning",
        "llama-prefix_tuning_projection",
        "gpt2-prefix_tuning",
        "gpt2-prefix_tuning_projection",
        "bert-cls-p_tuning_v2",
    ] {
        assert!(names.contains(&want), "{want} missing from the manifest");
    }
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let adapter_dir = fixtures().join(case["adapter_dir"].as_str().unwrap());
        let base = load_base_for_adapter(&fixtures().join(case["model_dir"].as_str().unwrap()), &adapter_dir).unwrap();
        let (model, warnings) = PrefixModel::load(base, &adapter_dir, false).unwrap();
        // PEFT's folders with a projection have no encoder file: that is the one expected note.
        let projection = model.prefix_config().prefix_projection;
        assert_eq!(warnings.len(), usize::from(projection), "{name}: {warnings:?}");
        let x = ids(case);
        let out = model.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let (out_name, got) = out.main();
        assert_eq!(out_name, case["output"].as_str().unwrap());
        let want = SafeTensors::open(fixtures().join(case["expected"].as_str().unwrap()))
            .unwrap()
            .tensor_f32(out_name)
            .unwrap();
        let (rtol, atol) = tolerances(case);
        assert_within(name, &got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap(), rtol, atol);
        // And the prefixes matter: the base alone computes something else.
        let plain = load_base_for_adapter(&fixtures().join(case["model_dir"].as_str().unwrap()), &adapter_dir).unwrap();
        let base_out = forward_main(plain.as_ref(), &x);
        let differs = base_out.iter().zip(&want.to_vec_f32().unwrap()).any(|(a, b)| (a - b).abs() > 1e-3);
        assert!(differs, "{name}: the prefixes changed nothing");
    }
}

/// The config PEFT builds from these few fields (the rest filled from the model), the values of
/// its parameters and the batch, from a gradient fixture.
fn grad_case_model(case: &serde_json::Value) -> (PrefixModel, SafeTensors) {
    let pc = &case["peft_config"];
    let mut config = PrefixTuningConfig::new(pc["num_virtual_tokens"].as_u64().unwrap() as usize);
    config.common.task_type = Some(pc["task_type"].as_str().unwrap().to_string());
    config.prefix_projection = pc["prefix_projection"].as_bool().unwrap();
    if config.prefix_projection {
        config.encoder_hidden_size = Some(pc["encoder_hidden_size"].as_u64().unwrap() as usize);
    }
    let base = load(fixtures().join(case["model_dir"].as_str().unwrap())).unwrap();
    let model = PrefixModel::new(base, config, 7).unwrap();
    let expected = SafeTensors::open(fixtures().join(case["expected"].as_str().unwrap())).unwrap();
    (model, expected)
}

#[test]
fn configs_fill_from_the_model_as_peft_does_with_its_parameter_counts() {
    // (trainable, all) from PEFT 0.21.2 itself: `get_peft_model(AutoModelFor<task>.from_pretrained(dir),
    // PrefixTuningConfig(task_type, num_virtual_tokens, prefix_projection, encoder_hidden_size))
    // .get_nb_trainable_parameters()` in assets/pyenv, for each gradient fixture's model and config.
    let peft_counts = [
        ("grad-bert-cls-p_tuning_v2", (706, 20750)),
        ("grad-gpt2-prefix_tuning_projection", (2832, 33520)),
        ("grad-llama-prefix_tuning", (256, 25184)),
    ];
    let cases = prefix_cases("grads");
    assert_eq!(cases.len(), peft_counts.len());
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let (model, _) = grad_case_model(case);
        let filled = model.prefix_config();
        let pc = &case["peft_config"];
        // The grouped-query rule shows on llama (4 heads, 2 key/value heads of 8): token_dim 16, 2 heads.
        for (field, got) in [
            ("token_dim", filled.common.token_dim),
            ("num_attention_heads", filled.common.num_attention_heads),
            ("num_layers", filled.common.num_layers),
            ("encoder_hidden_size", filled.encoder_hidden_size),
            ("num_transformer_submodules", filled.common.num_transformer_submodules),
        ] {
            assert_eq!(got, Some(pc[field].as_u64().unwrap() as usize), "{name}: {field}");
        }
        let want = peft_counts.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(model.parameter_counts(), want, "{name}");
        let (t, a) = want;
        let line = AdapterModel::trainable_parameters_line(&model);
        assert!(line.contains(&format!("trainable%: {:.4}", 100.0 * t as f64 / a as f64)), "{line}");
    }
}

#[test]
fn prefix_gradients_match_pytorch() {
    let cases = prefix_cases("grads");
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let (model, expected) = grad_case_model(case);
        let params = model.trainable_parameters();
        let mut got_names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
        let mut want_names: Vec<String> =
            expected.names().filter_map(|n| n.strip_prefix("param.")).map(str::to_string).collect();
        got_names.sort();
        want_names.sort();
        assert_eq!(got_names, want_names, "{name}: trainable parameter names");
        for (pname, t) in &params {
            t.assign(&expected.tensor_f32(&format!("param.{pname}")).unwrap()).unwrap();
        }
        AdapterModel::train(&model, true);
        let x = expected.tensor("input_ids").unwrap();
        let labels = expected.tensor("labels").unwrap();
        let logits = model.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let logits = logits.logits.unwrap();
        let loss = if case["peft_config"]["task_type"] == "SEQ_CLS" {
            peft::loss::classification_loss(&logits, &labels).unwrap()
        } else {
            peft::loss::causal_lm_loss(&logits, &labels).unwrap()
        };
        let (rtol, atol) = tolerances(case);
        let want_loss = expected.tensor_f32("loss").unwrap().to_vec::<f32>().unwrap()[0];
        assert_within(&format!("{name} loss"), &[loss.to_scalar().unwrap()], &[want_loss], rtol, atol);
        let grads = loss.backward().unwrap();
        assert_grads(name, &format!("{name} grad"), &grads, &params, &expected, rtol, atol);
    }
}

fn gpt2() -> Box<dyn Model> {
    load(fixtures().join("models/gpt2")).unwrap()
}

fn projected_config(dropout: f32) -> PrefixTuningConfig {
    let mut c = PrefixTuningConfig::new(3);
    c.common.task_type = Some("CAUSAL_LM".into());
    c.prefix_projection = true;
    c.encoder_hidden_size = Some(8);
    c.prefix_dropout = dropout;
    c
}

fn file_bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[test]
fn saved_adapters_load_back_with_their_reparameterization() {
    let tmp = TempDir::new("round-trip");
    let model = PrefixModel::new(gpt2(), projected_config(0.0), 3).unwrap();
    AdapterModel::save_adapter(&model, tmp.dir()).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors", ENCODER_FILE] {
        assert!(tmp.path(f).is_file(), "{f} not written");
    }
    let config: serde_json::Value = serde_json::from_slice(&file_bytes(tmp.dir(), "adapter_config.json")).unwrap();
    assert_eq!(config["peft_type"], "PREFIX_TUNING");
    assert_eq!(config["inference_mode"], true);
    assert_eq!(config["token_dim"], 32);
    assert!(config.get("prefix_dropout").is_none(), "our extension is written only when set");
    // PEFT's file holds exactly the projected table (and PEFT's key).
    let saved = SafeTensors::open(tmp.path("adapter_model.safetensors")).unwrap();
    assert_eq!(saved.names().collect::<Vec<_>>(), vec!["prompt_embeddings"]);
    let table = model.encoder().table().unwrap().to_vec_f32().unwrap();
    assert_eq!(saved.tensor_f32("prompt_embeddings").unwrap().to_vec_f32().unwrap(), table);

    let x = Tensor::from_vec(vec![5i64, 9, 2, 40, 7], &[1, 5]).unwrap();
    let want = forward_main(&model, &x);
    let (back, warnings) = PrefixModel::load(gpt2(), tmp.dir(), true).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(forward_main(&back, &x), want);
    let names = |m: &PrefixModel| m.trainable_parameters().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&back), names(&model), "the reparameterization is trainable again");
    assert_eq!(names(&back).len(), 5);

    // A PEFT folder (no encoder file) loads as a flat table, with a note; same outputs.
    std::fs::remove_file(tmp.path(ENCODER_FILE)).unwrap();
    let (flat, warnings) = PrefixModel::load(gpt2(), tmp.dir(), false).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains(ENCODER_FILE), "{warnings:?}");
    assert_eq!(forward_main(&flat, &x), want);
    assert!(flat.trainable_parameters().is_empty());
    // As a starting point for training, the table itself is what trains then.
    let (table_only, warnings) = PrefixModel::load(gpt2(), tmp.dir(), true).unwrap();
    assert!(warnings[0].contains("training continues on the table"), "{warnings:?}");
    assert_eq!(names(&table_only), ["prompt_encoder.default.embedding.weight"]);
    assert_eq!(table_only.trainable_parameters()[0].1.shape(), [3, 128]);
}

#[test]
fn zero_init_gives_zero_prefixes() {
    for projection in [false, true] {
        let mut c = projected_config(0.0);
        c.prefix_projection = projection;
        c.init_weights = Some("zero".into());
        let model = PrefixModel::new(gpt2(), c, 1).unwrap();
        assert!(model.encoder().table().unwrap().to_vec_f32().unwrap().iter().all(|&v| v == 0.0));
        // With a projection the embedding is still random (only the last Linear is zero), as PEFT.
        let embedding = model.encoder().embedding.to_vec_f32().unwrap();
        assert_eq!(embedding.iter().any(|&v| v != 0.0), projection);
    }
}

#[test]
fn mismatched_or_malformed_files_are_refused() {
    let tmp = TempDir::new("mismatch");
    let a = PrefixModel::new(gpt2(), projected_config(0.0), 1).unwrap();
    AdapterModel::save_adapter(&a, tmp.dir()).unwrap();
    let other = TempDir::new("mismatch-other");
    let b = PrefixModel::new(gpt2(), projected_config(0.0), 2).unwrap();
    AdapterModel::save_adapter(&b, other.dir()).unwrap();
    std::fs::copy(other.path(ENCODER_FILE), tmp.path(ENCODER_FILE)).unwrap();
    let err = PrefixModel::load(gpt2(), tmp.dir(), false).err().unwrap().to_string();
    assert!(err.contains("does not reproduce prompt_embeddings"), "{err}");

    // A config for another model: the table shape names what is wrong.
    let llama = load(fixtures().join("models/llama")).unwrap();
    // (PEFT's grouped-query rule rewrites token_dim for llama, so the table no longer fits.)
    let err = PrefixModel::load(llama, other.dir(), false).err().unwrap().to_string();
    assert!(err.contains("`prompt_embeddings` has shape [3, 128], the config implies [3, 64]"), "{err}");

    let mut c = PrefixTuningConfig::new(2);
    c.common.num_transformer_submodules = Some(2);
    assert!(PrefixModel::new(gpt2(), c, 0).err().unwrap().to_string().contains("num_transformer_submodules"));
    let mut c = PrefixTuningConfig::new(2);
    c.common.token_dim = Some(16);
    assert!(PrefixModel::new(gpt2(), c, 0).err().unwrap().to_string().contains("head_dim"));
    assert!(PrefixModel::new(gpt2(), PrefixTuningConfig::new(0), 0).is_err());
    let (_, warnings) = PrefixTuningConfig::from_json(
        serde_json::json!({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2, "frobnicate": 1}),
    )
    .unwrap();
    assert_eq!(warnings, vec!["adapter_config: unknown key `frobnicate` ignored".to_string()]);
}

/// Steps of plain SGD on a causal-LM loss, seeding dropout by (seed, step) as the trainer does.
fn sgd_steps(model: &PrefixModel, steps: std::ops::Range<u64>) {
    let x = Tensor::from_vec(vec![3i64, 14, 15, 92, 65, 35, 8, 9], &[2, 4]).unwrap();
    let params: Vec<Tensor> = model.trainable_parameters().into_iter().map(|(_, t)| t).collect();
    let mut opt = engine::optim::Sgd::new(0.1);
    AdapterModel::train(model, true);
    for step in steps {
        AdapterModel::set_dropout_seed(model, 11, step);
        let logits = model.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let loss = peft::loss::causal_lm_loss(&logits.logits.unwrap(), &x).unwrap();
        opt.step(&params, &loss.backward().unwrap()).unwrap();
    }
    AdapterModel::train(model, false);
}

#[test]
fn training_resumes_exactly_from_saved_files() {
    let (whole, first, resumed) = (TempDir::new("whole"), TempDir::new("first"), TempDir::new("resumed"));
    let model = PrefixModel::new(gpt2(), projected_config(0.3), 5).unwrap();
    sgd_steps(&model, 0..4);
    AdapterModel::save_adapter(&model, whole.dir()).unwrap();

    let model = PrefixModel::new(gpt2(), projected_config(0.3), 5).unwrap();
    sgd_steps(&model, 0..2);
    AdapterModel::save_adapter(&model, first.dir()).unwrap();
    let (model, _) = PrefixModel::load(gpt2(), first.dir(), true).unwrap();
    assert_eq!(model.prefix_config().prefix_dropout, 0.3, "the dropout travels in the config");
    sgd_steps(&model, 2..4);
    AdapterModel::save_adapter(&model, resumed.dir()).unwrap();
    for f in ["adapter_model.safetensors", ENCODER_FILE, "adapter_config.json"] {
        assert!(file_bytes(whole.dir(), f) == file_bytes(resumed.dir(), f), "{f} differs after resuming");
    }
    assert!(file_bytes(whole.dir(), ENCODER_FILE) != file_bytes(first.dir(), ENCODER_FILE), "training changed nothing");
}

#[test]
fn prefix_dropout_only_while_training_and_seeded() {
    let model = PrefixModel::new(gpt2(), projected_config(0.5), 9).unwrap();
    let x = Tensor::from_vec(vec![3i64, 14, 15, 92, 65, 35, 8, 9], &[2, 4]).unwrap();
    let eval = forward_main(&model, &x);
    let no_dropout = PrefixModel::new(gpt2(), projected_config(0.0), 9).unwrap();
    assert_eq!(eval, forward_main(&no_dropout, &x), "no dropout outside training");
    let twin = PrefixModel::new(gpt2(), projected_config(0.5), 9).unwrap();
    let at = |m: &PrefixModel, step: u64| {
        AdapterModel::train(m, true);
        AdapterModel::set_dropout_seed(m, 1, step);
        forward_main(m, &x)
    };
    let a = at(&model, 4);
    assert!(a != eval, "dropout changed nothing while training");
    assert_eq!(a, at(&twin, 4), "same (seed, step, call within the step): same masks");
    assert!(a != at(&model, 4), "the next micro-batch of a step draws other masks");
    assert!(at(&twin, 4) != at(&twin, 5), "another step: other masks");
    // One mask per row, as P-tuning v2 drops out the batch-expanded prefixes: identical rows differ.
    let same_rows = Tensor::from_vec(vec![3i64, 14, 15, 92, 3, 14, 15, 92], &[2, 4]).unwrap();
    AdapterModel::set_dropout_seed(&model, 1, 6);
    let out = forward_main(&model, &same_rows);
    let half = out.len() / 2;
    assert!(out[..half] != out[half..]);
}

#[test]
fn cached_generation_equals_recomputation() {
    for case in prefix_cases("adapters").iter().filter(|c| c["base"] != "bert-cls") {
        let name = case["name"].as_str().unwrap();
        let adapter_dir = fixtures().join(case["adapter_dir"].as_str().unwrap());
        let base = load(fixtures().join(case["model_dir"].as_str().unwrap())).unwrap();
        let (model, _) = PrefixModel::load(base, &adapter_dir, false).unwrap();
        let prompt = [5i64, 17, 3];
        let greedy = SamplingConfig::greedy();
        let cached = generate(&model, &prompt, 8, &[], &greedy, true).unwrap();
        let recomputed = generate(&model, &prompt, 8, &[], &greedy, false).unwrap();
        assert_eq!(cached, recomputed, "{name}");
        assert_eq!(cached.len(), 8);
        // The logits themselves: the last position of a cached call equals the full recomputation.
        let full: Vec<i64> = prompt.iter().chain(&cached).copied().collect();
        let x = Tensor::from_vec(full.clone(), &[1, full.len()]).unwrap();
        let want = forward_main(&model, &x);
        let mut cache = engine::models::KvCache::new(model.config().num_layers);
        let head = Tensor::from_vec(full[..full.len() - 1].to_vec(), &[1, full.len() - 1]).unwrap();
        let _ = model.forward(&ForwardInput { input_ids: Some(&head), ..Default::default() }, Some(&mut cache));
        assert_eq!(cache.len(), full.len() - 1, "{name}: the cache holds tokens only, not the prefix");
        let last = Tensor::from_vec(vec![full[full.len() - 1]], &[1, 1]).unwrap();
        let got = model
            .forward(&ForwardInput { input_ids: Some(&last), ..Default::default() }, Some(&mut cache))
            .unwrap()
            .main()
            .1
            .to_vec_f32()
            .unwrap();
        let vocab = got.len();
        assert_within(&format!("{name} cached logits"), &got, &want[want.len() - vocab..], 1e-4, 1e-5);
    }
}

/// P-tuning v2 for sequence labelling: a token-classification BERT, prefixes and the per-token
/// classifier trained; the loss's gradient checked against central differences.
#[test]
fn token_classification_trains_prefixes_and_head_with_correct_gradients() {
    use engine::models::{load_as, Architecture};
    let base =
        load_as(fixtures().join("models/bert"), Some(Architecture::BertForTokenClassification), Some(3)).unwrap();
    let mut config = PrefixTuningConfig::new(2);
    config.common.task_type = Some("TOKEN_CLS".into());
    let model = PrefixModel::new(base, config, 4).unwrap();
    let names: Vec<String> = model.trainable_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "base_model.classifier.modules_to_save.default.weight",
            "base_model.classifier.modules_to_save.default.bias",
            "prompt_encoder.default.embedding.weight",
        ]
    );
    let x = Tensor::from_vec(vec![3i64, 14, 15, 92, 65, 35, 8, 9], &[2, 4]).unwrap();
    let labels = Tensor::from_vec(vec![0i64, 2, 1, -100, 1, 1, 0, 2], &[2, 4]).unwrap();
    let loss_of = |m: &PrefixModel| {
        let logits = m.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let logits = logits.logits.unwrap();
        assert_eq!(logits.shape(), [2, 4, 3]);
        logits.reshape(&[8, 3]).unwrap().cross_entropy(&labels.reshape(&[8]).unwrap()).unwrap()
    };
    let loss = loss_of(&model);
    let grads = loss.backward().unwrap();
    let params = model.trainable_parameters();
    for (pname, t) in &params {
        let g = grads.get(t).unwrap().to_vec_f32().unwrap();
        let n = t.numel();
        for i in [0, n / 3, n - 1] {
            let v = t.to_vec_f32().unwrap();
            let eps = 1e-2f32;
            let at = |d: f32| {
                let mut w = v.clone();
                w[i] += d;
                t.assign(&Tensor::from_vec(w, t.shape()).unwrap()).unwrap();
                let l = engine::no_grad_scope(|| loss_of(&model).to_scalar().unwrap());
                t.assign(&Tensor::from_vec(v.clone(), t.shape()).unwrap()).unwrap();
                l
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!((fd - g[i]).abs() <= 2e-3 + 2e-2 * fd.abs(), "{pname}[{i}]: analytic {}, numeric {fd}", g[i]);
        }
    }
}

fn peft_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_peft")).args(args).output().expect("the peft binary runs")
}

fn assert_cli_ok(o: &std::process::Output, what: &str) {
    assert!(o.status.success(), "{what}: exit {:?}, stderr: {}", o.status.code(), String::from_utf8_lossy(&o.stderr));
}

#[test]
fn peft_forward_and_generate_with_prefix_adapters() {
    let tmp = TempDir::new("cli");
    for case in prefix_cases("adapters") {
        let name = case["name"].as_str().unwrap();
        let (model_dir, adapter_dir) = (
            fixtures().join(case["model_dir"].as_str().unwrap()),
            fixtures().join(case["adapter_dir"].as_str().unwrap()),
        );
        let input = tmp.path(&format!("{name}-in.safetensors"));
        let out = tmp.path(&format!("{name}-out.safetensors"));
        engine::io::save_safetensors(&input, &[("input_ids".to_string(), ids(&case))], None).unwrap();
        let o = peft_cli(&[
            "forward",
            "--model",
            model_dir.to_str().unwrap(),
            "--adapter",
            adapter_dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_cli_ok(&o, name);
        let output = case["output"].as_str().unwrap();
        let got = SafeTensors::open(&out).unwrap().tensor_f32(output).unwrap();
        let want =
            SafeTensors::open(fixtures().join(case["expected"].as_str().unwrap())).unwrap().tensor_f32(output).unwrap();
        assert_eq!(got.shape(), want.shape(), "{name}");
        let (rtol, atol) = tolerances(&case);
        assert_within(
            &format!("{name} (peft forward)"),
            &got.to_vec_f32().unwrap(),
            &want.to_vec_f32().unwrap(),
            rtol,
            atol,
        );
        if case["base"] != "bert-cls" {
            let generate = |extra: &[&str]| {
                let mut args = vec![
                    "generate",
                    "--model",
                    model_dir.to_str().unwrap(),
                    "--adapter",
                    adapter_dir.to_str().unwrap(),
                    "--prompt-ids",
                    "5,17,3",
                    "--max-new-tokens",
                    "6",
                ];
                args.extend_from_slice(extra);
                let o = peft_cli(&args);
                assert_cli_ok(&o, name);
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            };
            let cached = generate(&[]);
            assert_eq!(cached.split(',').count(), 6, "{name}: {cached}");
            assert_eq!(cached, generate(&["--no-cache"]), "{name}");
        }
    }
}

/// `peft train` with both methods on the tiny fixtures: a run resumed from a mid-run checkpoint ends
/// with the same adapter bytes (the reparameterization included) as one that never stopped.
#[test]
fn peft_train_resumes_prefix_methods_exactly() {
    use peft::train::{run, Overrides};
    let rows = |n: usize, task: &str| -> String {
        (0..n)
            .map(|i| {
                let ids: Vec<i64> = (0..3 + i % 5).map(|j| (10 + 7 * i + 3 * j) as i64 % 90 + 5).collect();
                let row = match task {
                    "sequence_classification" => serde_json::json!({"input_ids": ids, "label": i % 2}),
                    "token_classification" => {
                        let labels: Vec<i64> = ids.iter().map(|t| t % 3).collect();
                        serde_json::json!({"input_ids": ids, "labels": labels})
                    }
                    _ => serde_json::json!({"input_ids": ids}),
                };
                format!("{row}\n")
            })
            .collect()
    };
    let cases = [
        (
            "llama",
            "causal_lm",
            serde_json::json!({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 3,
            "prefix_projection": true, "encoder_hidden_size": 8, "prefix_dropout": 0.2}),
        ),
        (
            "bert-cls",
            "sequence_classification",
            serde_json::json!({"peft_type": "PREFIX_TUNING",
            "num_virtual_tokens": 4, "prefix_dropout": 0.1}),
        ),
        // P-tuning v2 for sequence labelling: a bare encoder becomes a token classifier.
        ("bert", "token_classification", serde_json::json!({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2})),
    ];
    for (model, task, peft) in cases {
        let tmp = TempDir::new(&format!("train-{model}"));
        std::fs::write(tmp.path("train.jsonl"), rows(12, task)).unwrap();
        let config = serde_json::json!({
            "model": fixtures().join("models").join(model), "task": task, "peft": peft,
            "data": {"train": "train.jsonl", "dev": "train.jsonl"}, "output_dir": "out",
            "batch_size": 2, "gradient_accumulation_steps": 2, "max_steps": 6, "save_steps": 3,
            "learning_rate": 0.01, "lr_scheduler": "linear", "seed": 3, "logging_steps": 3,
        });
        let mut config = config;
        if task == "token_classification" {
            config["num_labels"] = serde_json::json!(3);
        }
        let run_file = tmp.path("run.json");
        std::fs::write(&run_file, config.to_string()).unwrap();
        let quiet = Overrides { quiet: true, ..Default::default() };
        let full = tmp.path("full");
        let s = run(&run_file, &Overrides { output_dir: Some(full.clone()), ..quiet.clone() }).unwrap();
        assert!(s.trainable_line.starts_with("trainable params: "), "{}", s.trainable_line);
        let resumed = tmp.path("resumed");
        let ckpt = full.join("checkpoint-3").display().to_string();
        // A run file whose prefix differs from the checkpoint's is refused.
        let mut other = config.clone();
        other["peft"]["num_virtual_tokens"] = serde_json::json!(5);
        let other_file = tmp.path("other.json");
        std::fs::write(&other_file, other.to_string()).unwrap();
        let overrides = Overrides { resume_from: Some(ckpt.clone()), output_dir: Some(tmp.path("x")), ..quiet.clone() };
        let err = run(&other_file, &overrides).err().unwrap().to_string();
        assert!(err.contains("differs from the run file's `peft` section"), "{err}");
        run(&run_file, &Overrides { output_dir: Some(resumed.clone()), resume_from: Some(ckpt), ..quiet }).unwrap();
        let mut files = vec!["adapter_model.safetensors", "adapter_config.json"];
        if task == "causal_lm" {
            files.push(ENCODER_FILE);
        }
        for f in files {
            let (a, b) = (file_bytes(&full.join("adapter"), f), file_bytes(&resumed.join("adapter"), f));
            assert!(a == b, "{model}: {f} differs after resuming");
        }
        // The trained adapter moved away from the checkpoint and loads back through the method seam.
        let first = file_bytes(&full.join("checkpoint-3"), "adapter_model.safetensors");
        assert!(first != file_bytes(&full.join("adapter"), "adapter_model.safetensors"));
        let (loaded, _) =
            peft::method::from_pretrained(&fixtures().join("models").join(model), &full.join("adapter")).unwrap();
        assert_eq!(loaded.peft_type(), "PREFIX_TUNING");
    }
}
