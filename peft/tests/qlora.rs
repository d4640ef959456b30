//! QLoRA: LoRA over a base quantized to 4 bits while loading. Gradients of the LoRA parameters
//! against finite differences of the 4-bit model's loss, and merging (dequantize + delta in f32)
//! against the unmerged 4-bit model.
use engine::models::{load, ForwardInput, Model};
use engine::quant::{quantize_model, Bnb4bitConfig};
use engine::Tensor;
use integration_tests::fixtures_dir;
use peft::{LoraConfig, PeftModel};

fn qlora_llama() -> PeftModel {
    let mut base = load(fixtures_dir().join("models/llama")).unwrap();
    let cfg = Bnb4bitConfig { double_quant: true, ..Default::default() };
    let report = quantize_model(base.as_mut(), &cfg).unwrap();
    assert_eq!(report.quantized.len(), 14, "every projection of the two layers");
    assert_eq!(report.skipped, ["lm_head"]);
    assert!(report.bits_per_param() < 4.2, "{} bits per parameter", report.bits_per_param());
    let mut model = PeftModel::new(base);
    let mut lc = LoraConfig::new(4, 8.0, &["q_proj", "v_proj", "down_proj"]);
    // Both A and B random, so that every gradient is non-zero.
    lc.init_lora_weights = serde_json::from_value(serde_json::json!(false)).unwrap();
    model.add_adapter("default", lc, 3).unwrap();
    model
}

fn loss(model: &PeftModel, ids: &Tensor) -> Tensor {
    let logits =
        model.forward(&ForwardInput { input_ids: Some(ids), ..Default::default() }, None).unwrap().logits.unwrap();
    peft::loss::causal_lm_loss(&logits, ids).unwrap()
}

#[test]
fn lora_gradients_over_a_4bit_base_match_finite_differences() {
    let model = qlora_llama();
    let ids = Tensor::from_vec(vec![5i64, 81, 65, 96, 48, 14, 5, 51, 35, 56, 85, 43], &[2, 6]).unwrap();
    let params = model.trainable_parameters();
    assert_eq!(params.len(), 12);
    let grads = loss(&model, &ids).backward().unwrap();
    let eps = 1e-2f32;
    for (name, t) in &params {
        let g = grads.get(t).unwrap_or_else(|| panic!("no gradient for {name}")).to_vec_f32().unwrap();
        let base = t.to_vec::<f32>().unwrap();
        for &i in &[0, base.len() / 2, base.len() - 1] {
            let at = |v: f32| {
                let mut p = base.clone();
                p[i] = v;
                t.assign(&Tensor::from_vec(p, t.shape()).unwrap()).unwrap();
                let _g = engine::no_grad();
                loss(&model, &ids).to_scalar().unwrap() as f64
            };
            let fd = ((at(base[i] + eps) - at(base[i] - eps)) / (2.0 * eps as f64)) as f32;
            t.assign(&Tensor::from_vec(base.clone(), t.shape()).unwrap()).unwrap();
            assert!(
                (g[i] - fd).abs() <= 2e-3 + 2e-2 * fd.abs(),
                "{name}[{i}]: analytic {} vs finite difference {fd}",
                g[i]
            );
        }
    }
}

#[test]
fn merged_4bit_lora_model_equals_the_unmerged_one() {
    let model = qlora_llama();
    let ids = Tensor::from_vec(vec![1i64, 7, 42, 98, 3, 3, 60], &[1, 7]).unwrap();
    let run = |m: &dyn Model| {
        m.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None)
            .unwrap()
            .logits
            .unwrap()
            .to_vec_f32()
            .unwrap()
    };
    let want = run(&model);
    let merged = model.merge_and_unload().unwrap();
    for (name, t) in merged.named_parameters() {
        assert_eq!(t.dtype(), engine::DType::F32, "{name} is exported as a float weight");
    }
    let got = run(merged.as_ref());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 + 1e-5 * b.abs(), "{a} vs {b}");
    }
}
