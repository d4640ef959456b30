//! Mistral and Qwen2 checkpoints (LLaMA-shaped; Qwen2 with q/k/v biases) compute what transformers
//! computes. The tiny checkpoints and their logits were made by `scripts/make-extra-fixtures.py`
//! (transformers 4.57.6) into `tests/fixtures-extra`.
use engine::io::SafeTensors;
use engine::models::{load, ForwardInput};
use integration_tests::worst_excess;
use std::path::PathBuf;

fn extra() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures-extra")
}

#[test]
fn mistral_and_qwen2_match_transformers() {
    for name in ["mistral", "qwen2"] {
        let model = load(extra().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = SafeTensors::open(extra().join(format!("{name}-expected.safetensors"))).unwrap();
        let ids = expected.tensor("input_ids").unwrap();
        let out = model.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None).unwrap();
        let got = out.logits.unwrap().to_vec::<f32>().unwrap();
        let want = expected.tensor_f32("logits").unwrap().to_vec::<f32>().unwrap();
        // PyTorch against itself is ~1e-6 here; 5x the models manifest's tolerance.
        let (excess, at) = worst_excess(&got, &want, 5e-4, 5e-5);
        assert!(excess <= 0.0, "{name}: element {at} off by {excess} beyond tolerance");
    }
    // Qwen2's q/k/v biases are used (the parameter list has them)
    let qwen = load(extra().join("qwen2")).unwrap();
    assert!(qwen.named_parameters().iter().any(|(n, _)| n == "model.layers.0.self_attn.q_proj.bias"));
}

#[test]
fn sequences_past_mistrals_window_are_refused() {
    let model = load(extra().join("mistral")).unwrap();
    let ids = engine::Tensor::from_vec(vec![1i64; 40], &[1, 40]).unwrap();
    let err = model.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None).unwrap_err();
    assert!(err.to_string().contains("sliding attention window of 32"), "{err}");
}
