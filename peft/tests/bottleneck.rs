//! Bottleneck adapters against AdapterHub's `adapters` 1.3.0: its saved adapters reproduce its
//! outputs (library and `peft forward --adapter`), adapters on GPT-2 and LLaMA have the gradients
//! finite differences give, folders we write load back unchanged and carry `adapters`' keys, and
//! parameter counts equal what `adapters` reports.
use engine::gradcheck::{check_gradients, GradCheck};
use engine::io::{save_safetensors, SafeTensors};
use engine::models::{load, ForwardInput, Model};
use engine::Tensor;
use integration_tests::{fixtures_dir, input_ids, manifest, worst_excess, TempDir};
use peft::bottleneck::BottleneckModel;
use peft::method::AdapterModel;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Our kernels sum in a different order from PyTorch: allow this multiple of the manifest's tolerances.
const MULTIPLE: f32 = 5.0;

fn adapterhub_cases() -> Vec<serde_json::Value> {
    let m = manifest();
    m["adapters"].as_array().unwrap().iter().filter(|c| c["format"] == "adapterhub").cloned().collect()
}

fn run(model: &dyn Model, ids: &Tensor) -> Tensor {
    model.forward(&ForwardInput { input_ids: Some(ids), ..Default::default() }, None).unwrap().main().1.clone()
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor, rtol: f32, atol: f32) {
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    let (excess, i) =
        worst_excess(&got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap(), MULTIPLE * rtol, MULTIPLE * atol);
    assert!(excess <= 0.0, "{name}: element {i} is off by {excess} beyond {MULTIPLE}x the tolerance");
}

#[test]
fn adapterhub_fixtures_reproduce_adapters_outputs() {
    let cases = adapterhub_cases();
    assert_eq!(cases.len(), 4);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let model_dir = fixtures_dir().join(case["model_dir"].as_str().unwrap());
        let adapter_dir = fixtures_dir().join(case["adapter_dir"].as_str().unwrap());
        let (model, warnings) = BottleneckModel::load(load(&model_dir).unwrap(), &adapter_dir, false).unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        let ids = input_ids(case);
        let expected = SafeTensors::open(fixtures_dir().join(case["expected"].as_str().unwrap())).unwrap();
        let want = expected.tensor_f32(case["output"].as_str().unwrap()).unwrap();
        let (rtol, atol) = (case["rtol"].as_f64().unwrap() as f32, case["atol"].as_f64().unwrap() as f32);
        assert_close(name, &run(&model, &ids), &want, rtol, atol);
        // Off: the base model's outputs bit for bit (the hooks fall back to the model's own residual).
        model.set_enabled(false);
        let plain = run(load(&model_dir).unwrap().as_ref(), &ids);
        assert_eq!(run(&model, &ids).to_vec_f32().unwrap(), plain.to_vec_f32().unwrap(), "{name}: disabled");
        // Removed: the same.
        let base = model.into_base().unwrap();
        assert_eq!(run(base.as_ref(), &ids).to_vec_f32().unwrap(), plain.to_vec_f32().unwrap(), "{name}: removed");
    }
}

/// Adapters made with `adapters` 1.3.0 on GPT-2, LLaMA and a BERT classifier
/// (`scripts/make-adapterhub-fixtures.py`), with its outputs and parameter counts.
fn extra_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures-extra/adapterhub")
}

#[test]
fn adapters_made_on_gpt2_and_llama_reproduce_adapters_outputs_and_counts() {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(extra_dir().join("manifest.json")).unwrap()).unwrap();
    let cases = m["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let model_dir = fixtures_dir().join(case["model_dir"].as_str().unwrap());
        let adapter_dir = extra_dir().join(case["adapter_dir"].as_str().unwrap());
        let expected = SafeTensors::open(extra_dir().join(case["expected"].as_str().unwrap())).unwrap();
        let ids = expected.tensor("input_ids").unwrap();
        let want = expected.tensor_f32("logits").unwrap();
        // Loaded for training, as `adapters`' train_adapter leaves it: the counts are its counts.
        let (model, warnings) = BottleneckModel::load(load(&model_dir).unwrap(), &adapter_dir, true).unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        assert_close(name, &run(&model, &ids), &want, 1e-4, 1e-5);
        let count = |k: &str| case[k].as_u64().unwrap() as usize;
        assert_eq!(model.parameter_counts(), (count("trainable_params"), count("all_params")), "{name}");
        assert_eq!(model.adapter_parameter_count(), count("adapter_params"), "{name}");
        // The fixture is not vacuous: without the adapter the outputs differ.
        model.set_enabled(false);
        let (excess, _) =
            worst_excess(&run(&model, &ids).to_vec_f32().unwrap(), &want.to_vec_f32().unwrap(), 0.0, 1e-3);
        assert!(excess > 0.0, "{name}: the adapter does not change the outputs");
    }
}

#[test]
fn peft_forward_with_an_adapterhub_adapter_matches_adapters() {
    let tmp = TempDir::new("cli");
    for case in adapterhub_cases() {
        let name = case["name"].as_str().unwrap();
        let input = tmp.path(&format!("{name}-in.safetensors"));
        save_safetensors(&input, &[("input_ids".to_string(), input_ids(&case))], None).unwrap();
        let out = tmp.path(&format!("{name}-out.safetensors"));
        let path = |k: &str| fixtures_dir().join(case[k].as_str().unwrap()).to_str().unwrap().to_string();
        let o = Command::new(env!("CARGO_BIN_EXE_peft"))
            .args(["forward", "--model", &path("model_dir"), "--adapter", &path("adapter_dir")])
            .args(["--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let output = case["output"].as_str().unwrap();
        let got = SafeTensors::open(&out).unwrap().tensor_f32(output).unwrap();
        let want = SafeTensors::open(path("expected")).unwrap().tensor_f32(output).unwrap();
        let (rtol, atol) = (case["rtol"].as_f64().unwrap() as f32, case["atol"].as_f64().unwrap() as f32);
        assert_close(name, &got, &want, rtol, atol);
    }
}

/// Every tensor of every adapter replaced by noise, so no part of the computation is a no-op
/// (fresh adapters start near identity, `mam_adapter`'s up-projection at zero).
fn randomize(model: &BottleneckModel, std: f32) {
    for (k, (_, t)) in model.adapter_tensors(false).into_iter().enumerate() {
        let noise = Tensor::randn(t.shape(), 0.0, std, 1000 + k as u64).unwrap();
        t.assign(&noise.add(&t.detach()).unwrap()).unwrap();
    }
}

#[test]
fn saved_folders_load_back_unchanged_with_adapters_keys() {
    let tmp = TempDir::new("roundtrip");
    let bert = fixtures_dir().join("models/bert");
    let ids = Tensor::from_vec(vec![3i64, 14, 15, 92, 65, 35], &[1, 6]).unwrap();
    let sections = [
        json!({"preset": "double_seq_bn", "reduction_factor": 8, "name": "houlsby"}),
        json!({"preset": "seq_bn", "reduction_factor": 8, "ln_before": true, "ln_after": true, "use_gating": true}),
        json!({"preset": "scaled_par_bn", "reduction_factor": {"0": 4, "default": 8}, "leave_out": [1]}),
        json!({"architecture": "bottleneck", "mh_adapter": true, "output_adapter": false, "reduction_factor": 2,
               "non_linearity": "gelu", "scaling": "channel", "residual_before_ln": "post_add",
               "original_ln_before": true, "init_weights": "houlsby"}),
    ];
    for (i, section) in sections.iter().enumerate() {
        let model = BottleneckModel::new(load(&bert).unwrap(), section, 7).unwrap();
        randomize(&model, 0.3);
        let dir = tmp.path(&format!("a{i}"));
        model.save_adapter(&dir).unwrap();
        let (back, warnings) = BottleneckModel::load(load(&bert).unwrap(), &dir, false).unwrap();
        assert!(warnings.is_empty(), "{section}: {warnings:?}");
        assert_eq!(back.spec().config, model.spec().config, "{section}");
        assert_eq!(run(&back, &ids).to_vec_f32().unwrap(), run(&model, &ids).to_vec_f32().unwrap(), "{section}");
        assert_eq!(back.parameter_counts().1, model.parameter_counts().1);
    }
    // The Houlsby folder has exactly the keys and config `adapters` wrote for the same adapter.
    let fixture = fixtures_dir().join("adapters/bert-adapterhub-houlsby");
    let keys = |d: &Path| {
        let mut k: Vec<String> =
            SafeTensors::open(d.join("adapter.safetensors")).unwrap().names().map(String::from).collect();
        k.sort();
        k
    };
    assert_eq!(keys(&tmp.path("a0")), keys(&fixture));
    let read = |p: PathBuf| serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap();
    let (ours, theirs) = (read(tmp.path("a0/adapter_config.json")), read(fixture.join("adapter_config.json")));
    assert_eq!(ours["config"], theirs["config"]);
    for k in ["hidden_size", "model_class", "model_type", "name", "version"] {
        assert_eq!(ours[k], theirs[k], "{k}");
    }
}

/// The gradients of the first installed adapter's tensors (through the whole model's logits) against
/// central differences.
fn check_adapter_gradients(model_dir: &str, section: serde_json::Value) {
    let base = load(fixtures_dir().join(model_dir)).unwrap();
    let model = BottleneckModel::new(base, &section, 3).unwrap();
    randomize(&model, 0.3);
    let first = model.site_weights(0).unwrap().clone();
    let inputs: Vec<Tensor> = first.named_tensors(false).into_iter().map(|(_, t)| t.detach()).collect();
    let model = Mutex::new(model);
    let ids = Tensor::from_vec(vec![5i64, 17, 2, 40, 9], &[1, 5]).unwrap();
    let f = |ts: &[Tensor]| {
        let mut m = model.lock().unwrap();
        m.set_site_weights(0, first.with_tensors(ts)?)?;
        Ok(run(&*m, &ids))
    };
    check_gradients(f, &inputs, GradCheck::default()).unwrap_or_else(|e| panic!("{model_dir} {section}: {e}"));
}

#[test]
fn adapter_gradients_on_gpt2_match_finite_differences() {
    // Houlsby placement with every optional part: layer norms in the adapter, learned scaling, gate.
    check_adapter_gradients(
        "models/gpt2",
        json!({"preset": "double_seq_bn", "reduction_factor": 8, "ln_before": true, "ln_after": true,
               "scaling": "learned", "use_gating": true}),
    );
    // Pfeiffer with the residual taken after the (norm-less) pre-add, gelu.
    check_adapter_gradients(
        "models/gpt2",
        json!({"preset": "seq_bn", "reduction_factor": 8, "non_linearity": "gelu", "residual_before_ln": false}),
    );
}

#[test]
fn adapter_gradients_on_llama_match_finite_differences() {
    // Parallel to the MLP, reading the block input, with a per-channel scaling.
    check_adapter_gradients(
        "models/llama",
        json!({"preset": "par_bn", "reduction_factor": 8, "non_linearity": "tanh", "scaling": "channel"}),
    );
    check_adapter_gradients(
        "models/llama",
        json!({"preset": "double_seq_bn", "reduction_factor": 8, "adapter_residual_before_ln": true, "ln_after": true}),
    );
}

#[test]
fn parameter_counts_of_the_team_fixtures_equal_adapters_counts() {
    // (trainable, all) from adapters 1.3.0 after `train_adapter`, by
    // PYTHONPATH=assets/adapters-lib assets/pyenv/bin/python -c "import adapters; from transformers import \
    //   BertModel as C; m = C.from_pretrained('tests/fixtures/models/bert'); adapters.init(m); \
    //   n = m.load_adapter('tests/fixtures/adapters/bert-adapterhub-houlsby', use_safetensors=True); \
    //   m.train_adapter(n); print(sum(p.numel() for p in m.parameters() if p.requires_grad), \
    //   sum(p.numel() for p in m.parameters()))"
    // (BertForSequenceClassification and models/bert-cls for the last case). The classifier trains too.
    let expected = [
        ("bert-adapterhub-houlsby", 1168, 21146),
        ("bert-adapterhub-pfeiffer", 584, 20562),
        ("bert-adapterhub-parallel", 584, 20562),
        ("bert-cls-adapterhub-houlsby", 1234, 21212),
    ];
    for (case, trainable, all) in expected {
        let adapter_dir = fixtures_dir().join("adapters").join(case);
        let model_dir =
            fixtures_dir().join(if case.starts_with("bert-cls") { "models/bert-cls" } else { "models/bert" });
        let (model, _) = BottleneckModel::load(load(&model_dir).unwrap(), &adapter_dir, true).unwrap();
        assert_eq!(model.parameter_counts(), (trainable, all), "{case}");
        if case == "bert-adapterhub-houlsby" {
            let line = model.trainable_parameters_line();
            assert_eq!(line, "trainable params: 1,168 || all params: 21,146 || trainable%: 5.5235");
        }
    }
}

#[test]
fn a_trained_head_loads_onto_a_bare_encoder_folder() {
    // Trained as a classifier (head noise included), saved, then loaded from the bare `BertModel`
    // folder as `peft forward/eval --model bert --adapter DIR` do: the saved head makes the task model.
    let tmp = TempDir::new("head");
    let bert = fixtures_dir().join("models/bert");
    let cls =
        engine::models::load_as(&bert, Some(engine::models::Architecture::BertForSequenceClassification), Some(2))
            .unwrap();
    let model = BottleneckModel::new(cls, &json!({"preset": "seq_bn", "reduction_factor": 8}), 5).unwrap();
    for (k, (name, t)) in model.trainable_parameters().into_iter().enumerate() {
        let noise = Tensor::randn(t.shape(), 0.0, 0.3, 77 + k as u64).unwrap();
        t.assign(&noise.add(&t.detach()).unwrap()).unwrap();
        assert!(t.is_variable(), "{name}");
    }
    let names: Vec<String> = model.trainable_parameters().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"classifier.weight".to_string()), "{names:?}");
    let dir = tmp.path("adapter");
    model.save_adapter(&dir).unwrap();
    let (back, warnings) = peft::method::from_pretrained(&bert, &dir).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(peft::method::adapter_task(&dir).unwrap(), Some(peft::train::Task::SequenceClassification));
    let ids = Tensor::from_vec(vec![3i64, 14, 15, 92, 65, 35], &[1, 6]).unwrap();
    let (ours, theirs) = (run(&model, &ids), run(back.as_ref(), &ids));
    assert_eq!(ours.shape(), &[1, 2]);
    assert_eq!(theirs.to_vec_f32().unwrap(), ours.to_vec_f32().unwrap());
}

#[test]
fn the_sentiment_example_configs_are_valid() {
    for (file, preset_sites) in [
        ("sentiment-houlsby.json", (true, true)),
        ("sentiment-pfeiffer.json", (false, true)),
        ("sentiment-parallel.json", (false, true)),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
        let c = peft::train::TrainConfig::load(&path).unwrap();
        assert_eq!(c.task, peft::train::Task::SequenceClassification, "{file}");
        let section = c.peft_section().unwrap().unwrap();
        assert_eq!(peft::method::section_method(&section).unwrap(), "BOTTLENECK", "{file}");
        let (spec, warnings) = peft::bottleneck::BottleneckSpec::from_section(&section).unwrap();
        assert!(warnings.is_empty(), "{file}: {warnings:?}");
        assert_eq!((spec.config.mh_adapter, spec.config.output_adapter), preset_sites, "{file}");
        assert_eq!(spec.config.bottleneck_size(384, 0).unwrap(), 24, "{file}");
        assert!(spec.train_head && !spec.train_layer_norms, "{file}");
    }
}

#[test]
fn bad_bottleneck_configs_are_clear_errors() {
    let bert = || load(fixtures_dir().join("models/bert")).unwrap();
    let err = |section: serde_json::Value| match BottleneckModel::new(bert(), &section, 0) {
        Ok(_) => panic!("{section} was accepted"),
        Err(e) => e.to_string(),
    };
    let cases = [
        (json!({"preset": "houlsbee"}), "unknown bottleneck preset `houlsbee`"),
        (json!({"preset": "seq_bn", "reduction_factr": 8}), "unknown field `reduction_factr`"),
        (json!({"preset": "seq_bn", "phm_layer": true}), "phm_layer"),
        (json!({"preset": "seq_bn", "inv_adapter": "nice"}), "inv_adapter"),
        (json!({"preset": "seq_bn", "scaling": "big"}), "`scaling` must be a number, \"learned\" or \"channel\""),
        (json!({"preset": "seq_bn", "non_linearity": "softplus"}), "non_linearity `softplus` is not supported"),
        (json!({"preset": "seq_bn", "reduction_factor": {"0": 4}}), "no entry for layer 1"),
        (json!({"preset": "seq_bn", "reduction_factor": 0}), "must be positive"),
        (json!({"preset": "seq_bn", "leave_out": [5]}), "leave_out names layer 5, but the model has 2 layers"),
        (json!({"preset": "seq_bn", "dropout": 1.5}), "`dropout` = 1.5 must be in [0, 1)"),
        (json!({"architecture": "bottleneck", "mh_adapter": true}), "`output_adapter` is required"),
        (json!({"architecture": "lora", "preset": "seq_bn"}), "`architecture` is \"lora\""),
        (json!({"preset": "seq_bn", "config": {}}), "either `preset` or `config`"),
        (json!({"preset": "seq_bn", "name": "a.b"}), "without dots"),
    ];
    for (section, needle) in cases {
        let e = err(section.clone());
        assert!(e.contains(needle), "{section}: {e}");
    }
    // `post_add` needs a post-norm to take the residual from: refused when run on GPT-2.
    let gpt2 = load(fixtures_dir().join("models/gpt2")).unwrap();
    let section = json!({"preset": "seq_bn", "residual_before_ln": "post_add"});
    let model = BottleneckModel::new(gpt2, &section, 0).unwrap();
    let ids = Tensor::from_vec(vec![1i64, 2, 3], &[1, 3]).unwrap();
    let e = model.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None).unwrap_err();
    assert!(e.to_string().contains("post_add"), "{e}");
    // A file whose adapter lacks a tensor names it.
    let tmp = TempDir::new("bad-file");
    let src = fixtures_dir().join("adapters/bert-adapterhub-pfeiffer");
    std::fs::copy(src.join("adapter_config.json"), tmp.path("adapter_config.json")).unwrap();
    let st = SafeTensors::open(src.join("adapter.safetensors")).unwrap();
    let kept: Vec<(String, Tensor)> =
        st.names().filter(|n| !n.contains("layer.1.")).map(|n| (n.to_string(), st.tensor(n).unwrap())).collect();
    save_safetensors(tmp.path("adapter.safetensors"), &kept, None).unwrap();
    let e = BottleneckModel::load(bert(), tmp.dir(), false).err().unwrap().to_string();
    assert!(e.contains("missing `encoder.layer.1.output.adapters.pfeiffer.adapter_down.0.weight`"), "{e}");
}

#[test]
fn fresh_adapters_start_by_their_presets_init_rules() {
    let bert = || load(fixtures_dir().join("models/bert")).unwrap();
    let ids = Tensor::from_vec(vec![3i64, 14, 15, 92, 65, 35], &[1, 6]).unwrap();
    let plain = run(bert().as_ref(), &ids).to_vec_f32().unwrap();
    // mam_adapter (par_bn): the up-projection starts at zero, so the model is exactly the base model.
    let par = BottleneckModel::new(bert(), &json!({"preset": "par_bn"}), 1).unwrap();
    assert_eq!(run(&par, &ids).to_vec_f32().unwrap(), plain);
    let down = par.site_weights(0).unwrap().down.weight.to_vec_f32().unwrap();
    let bound = 1.0 / (32f32).sqrt(); // Kaiming-uniform with a = √5: U(±1/√fan_in)
    assert!(down.iter().all(|w| w.abs() <= bound) && down.iter().any(|w| w.abs() > bound / 2.0));
    // bert: N(0, 0.02) weights, zero biases: near the base model, not equal to it.
    let houlsby = BottleneckModel::new(bert(), &json!({"preset": "double_seq_bn", "reduction_factor": 2}), 1).unwrap();
    let w: Vec<f32> = houlsby.site_weights(0).unwrap().up.weight.to_vec_f32().unwrap();
    let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    assert!((0.015..0.025).contains(&std), "bert init std {std}");
    assert!(houlsby.site_weights(0).unwrap().up.bias.as_ref().unwrap().to_vec_f32().unwrap().iter().all(|b| *b == 0.0));
    let out = run(&houlsby, &ids).to_vec_f32().unwrap();
    let (excess, _) = worst_excess(&out, &plain, 0.0, 0.05);
    assert!(excess <= 0.0 && out != plain, "a fresh Houlsby adapter is near, not at, identity");
    // houlsby: truncated N(0, 0.01²) within ±0.02.
    let section = json!({"preset": "seq_bn", "reduction_factor": 2, "init_weights": "houlsby"});
    let t = BottleneckModel::new(bert(), &section, 1).unwrap();
    let w = t.site_weights(0).unwrap().down.weight.to_vec_f32().unwrap();
    assert!(w.iter().all(|x| x.abs() <= 0.02) && w.iter().any(|x| x.abs() > 0.01));
}

#[test]
fn adapters_compute_the_same_with_the_generation_cache() {
    for model_dir in ["models/gpt2", "models/llama"] {
        let base = load(fixtures_dir().join(model_dir)).unwrap();
        let section = json!({"preset": "double_seq_bn", "reduction_factor": 8, "ln_after": true});
        let model = BottleneckModel::new(base, &section, 2).unwrap();
        randomize(&model, 0.3);
        let ids = Tensor::from_vec(vec![5i64, 17, 2, 40, 9], &[1, 5]).unwrap();
        let full = run(&model, &ids);
        let mut cache = engine::models::KvCache::default();
        let step = |t: &Tensor, cache: &mut engine::models::KvCache| {
            let input = ForwardInput { input_ids: Some(t), ..Default::default() };
            model.forward(&input, Some(cache)).unwrap().main().1.clone()
        };
        step(&ids.narrow(1, 0, 3).unwrap().contiguous().unwrap(), &mut cache);
        let last = step(&ids.narrow(1, 3, 2).unwrap().contiguous().unwrap(), &mut cache);
        let want = full.narrow(1, 3, 2).unwrap().contiguous().unwrap();
        assert_close(model_dir, &last, &want, 1e-5, 1e-5);
    }
}
