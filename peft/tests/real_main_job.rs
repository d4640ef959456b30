//! The README's main job, shortened: LoRA on the real all-MiniLM-L6-v2 over the real sentiment data
//! for 80 optimizer steps must lift dev accuracy well above both its starting point and the
//! majority class (49.3%). The full job (`examples/sentiment-lora.json`, one epoch) reaches ~83%.
//! Needs `scripts/fetch-assets.sh` (CI runs it first); `PEFT_SKIP_REAL_MODELS=1` skips it.
use peft::train::{self, Overrides};
use std::path::PathBuf;

#[test]
fn lora_on_minilm_learns_sentiment() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let assets = std::env::var("PEFT_ASSETS_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("assets"));
    if !assets.join("all-MiniLM-L6-v2/model.safetensors").exists() {
        if std::env::var("PEFT_SKIP_REAL_MODELS").as_deref() == Ok("1") {
            println!("skipped: PEFT_SKIP_REAL_MODELS=1 and no all-MiniLM-L6-v2 in {}", assets.display());
            return;
        }
        panic!("all-MiniLM-L6-v2 is missing from {}: run scripts/fetch-assets.sh", assets.display());
    }
    // The example config with a shorter run, its model path pointed at PEFT_ASSETS_DIR.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("examples/sentiment-lora.json")).unwrap()).unwrap();
    let out = std::env::temp_dir().join(format!("peft-real-main-job-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    config["model"] = serde_json::json!(assets.join("all-MiniLM-L6-v2"));
    for split in ["train", "dev"] {
        config["data"][split] = serde_json::json!(root.join(format!("data/sentiment/{split}.jsonl")));
    }
    config["data"].as_object_mut().unwrap().remove("test");
    config["eval_steps"] = serde_json::json!(0);
    config["save_steps"] = serde_json::json!(0);
    let path = out.join("run.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let overrides =
        Overrides { max_steps: Some(80), output_dir: Some(out.join("run")), quiet: true, ..Default::default() };
    let summary = train::run(&path, &overrides).unwrap();
    let before = summary.eval_before["dev"].accuracy.unwrap();
    let after = summary.eval_after["dev"].accuracy.unwrap();
    println!("dev accuracy {before:.4} -> {after:.4}");
    assert!(after > 0.70 && after > before + 0.15, "dev accuracy {before} -> {after}");
    std::fs::remove_dir_all(&out).ok();
}
