//! Several named adapters on one model (add, switch, disable, delete), PEFT's targeting rules, and
//! config errors, on the tiny fixture models.
use engine::models::{load, ForwardInput, Model};
use engine::Tensor;
use peft::config::{InitLoraWeights, Layers, TargetModules};
use peft::{LoraConfig, PeftModel};
use std::path::PathBuf;

fn model(name: &str) -> Box<dyn Model> {
    load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models").join(name)).unwrap()
}

fn out(m: &PeftModel) -> Vec<f32> {
    let ids = Tensor::from_vec(vec![3i64, 14, 15, 92, 65], &[1, 5]).unwrap();
    m.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None)
        .unwrap()
        .logits
        .unwrap()
        .to_vec()
        .unwrap()
}

fn visible(targets: &[&str]) -> LoraConfig {
    let mut c = LoraConfig::new(4, 8.0, targets);
    c.init_lora_weights = InitLoraWeights::Flag(false); // B non-zero: the adapter changes outputs
    c
}

#[test]
fn named_adapters_switch_disable_and_delete() {
    let base = out(&PeftModel::new(model("llama")));
    let mut m = PeftModel::new(model("llama"));
    m.add_adapter("a", visible(&["q_proj", "v_proj"]), 1).unwrap();
    let with_a = out(&m);
    m.add_adapter("b", visible(&["down_proj"]), 2).unwrap();
    assert_eq!(m.active_adapter(), Some("b"));
    let with_b = out(&m);
    assert_ne!(with_a, base);
    assert_ne!(with_b, base);
    assert_ne!(with_a, with_b);
    m.set_adapter("a").unwrap();
    assert_eq!(out(&m), with_a, "switching back gives the same outputs");
    m.set_disabled(true).unwrap();
    assert_eq!(out(&m), base, "disabled = the base model, bit for bit");
    m.set_disabled(false).unwrap();
    assert_eq!(out(&m), with_a);
    // only the active adapter's tensors train
    assert!(m.trainable_parameters().iter().all(|(n, _)| n.contains(".a.weight")));
    m.delete_adapter("a").unwrap();
    assert_eq!(m.adapter_names(), vec!["b".to_string()]);
    assert_eq!(m.active_adapter(), Some("b"));
    assert_eq!(out(&m), with_b);
    m.delete_adapter("b").unwrap();
    assert_eq!(out(&m), base, "no adapters left: the base model");
    assert!(m.set_adapter("a").is_err());
    assert!(m.add_adapter("c", visible(&["q_proj"]), 3).is_ok());
    assert!(m.add_adapter("c", visible(&["q_proj"]), 3).unwrap_err().to_string().contains("exists already"));
}

#[test]
fn targeting_follows_peft() {
    let count = |c: LoraConfig| {
        let mut m = PeftModel::new(model("llama"));
        m.add_adapter("default", c, 0).unwrap();
        m.trainable_parameters().len() / 2
    };
    // names match exactly or as a dotted suffix
    assert_eq!(count(LoraConfig::new(4, 8.0, &["q_proj"])), 2);
    assert_eq!(count(LoraConfig::new(4, 8.0, &["self_attn.q_proj"])), 2);
    // all-linear: the 7 projections of 2 layers, not the lm_head
    let mut all = LoraConfig::new(4, 8.0, &[]);
    all.target_modules = Some(TargetModules::Pattern("all-linear".into()));
    assert_eq!(count(all.clone()), 14);
    // a regex must match the whole path
    let mut re = LoraConfig::new(4, 8.0, &[]);
    re.target_modules = Some(TargetModules::Pattern(r"model\.layers\.1\.mlp\..*".into()));
    assert_eq!(count(re), 3);
    let mut partial = LoraConfig::new(4, 8.0, &[]);
    partial.target_modules = Some(TargetModules::Pattern("q_proj".into()));
    assert!(PeftModel::new(model("llama")).add_adapter("default", partial, 0).is_err());
    // exclude_modules and layers_to_transform
    let mut ex = all.clone();
    ex.exclude_modules = Some(TargetModules::Names(vec!["down_proj".into()]));
    assert_eq!(count(ex), 12);
    let mut layer = LoraConfig::new(4, 8.0, &["q_proj", "k_proj"]);
    layer.layers_to_transform = Some(Layers::One(1));
    assert_eq!(count(layer), 2);
    // a target that matches nothing names the modules that exist
    let err =
        PeftModel::new(model("llama")).add_adapter("default", LoraConfig::new(4, 8.0, &["query"]), 0).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("matched no Linear") && msg.contains("model.layers.0.self_attn.q_proj"), "{msg}");
}

#[test]
fn lora_config_checks() {
    let bad = |v: serde_json::Value| LoraConfig::from_json(v).unwrap_err().to_string();
    assert!(bad(serde_json::json!({"peft_type": "LORA", "r": 0})).contains("r must be positive"));
    assert!(bad(serde_json::json!({"peft_type": "LORA", "bias": "some"})).contains("bias"));
    assert!(bad(serde_json::json!({"peft_type": "LORA", "use_dora": true})).contains("use_dora"));
    assert!(bad(serde_json::json!({"peft_type": "PREFIX_TUNING"})).contains("LORA"));
    assert!(bad(serde_json::json!({"peft_type": "LORA", "init_lora_weights": "pissa"})).contains("pissa"));
    let (_, warnings) = LoraConfig::from_json(serde_json::json!({"peft_type": "LORA", "frobnicate": 1})).unwrap();
    assert_eq!(warnings, vec!["adapter_config: unknown key `frobnicate` ignored".to_string()]);
    // scaling: alpha/r, or alpha/sqrt(r) with rsLoRA; rank_pattern and alpha_pattern by path
    let mut c = LoraConfig::new(16, 32.0, &["q_proj"]);
    assert_eq!(c.scaling(16, 32.0), 2.0);
    c.use_rslora = true;
    assert_eq!(c.scaling(16, 32.0), 8.0);
    c.rank_pattern.insert("q_proj".into(), 4);
    c.alpha_pattern.insert(r"layers\.1\..*".into(), 3.0);
    assert_eq!(c.rank_for("model.layers.0.self_attn.q_proj").unwrap(), 4);
    assert_eq!(c.rank_for("model.layers.0.self_attn.k_proj").unwrap(), 16);
    assert_eq!(c.alpha_for("model.layers.1.self_attn.k_proj").unwrap(), 3.0);
    assert_eq!(c.alpha_for("model.layers.0.self_attn.k_proj").unwrap(), 32.0);
}
