//! Whole models on the GPU against the host: the tiny BERT, BERT classifier, GPT-2 and LLaMA fixtures
//! (made with transformers) moved with `models::move_to_device`, every parameter trainable; the
//! forward outputs and the gradient of every parameter of a cross-entropy loss (with padding masked
//! and an ignored label) must match the host's. Tolerance 1e-4 relative: the values pass through a
//! few dozen GEMMs and reductions in another order.
use crate::common::{assert_close, gpu};
use engine::models::{self, ForwardInput};
use engine::{Device, Tensor};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    std::env::var("PEFT_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("tests").join("fixtures"))
        .join("models")
        .join(name)
}

/// Loads the fixture on `device` with every parameter a variable.
fn load(name: &str, device: Device) -> Box<dyn models::Model> {
    let mut m = models::load(fixture(name)).unwrap();
    models::move_to_device(m.as_mut(), device).unwrap();
    m.visit_parameters(&mut |_, t| {
        *t = t.requires_grad()?;
        Ok(())
    })
    .unwrap();
    m
}

fn forward_and_grads(name: &str) {
    let Some(dev) = gpu() else { return };
    let (batch, seq) = (2, 11);
    let ids: Vec<i64> = (0..batch * seq).map(|i| (i as i64 * 37 + 5) % 90 + 3).collect();
    let ids = Tensor::from_vec(ids, &[batch, seq]).unwrap();
    // The second sequence is padded for its last 4 tokens.
    let mask: Vec<i64> = (0..batch * seq).map(|i| i64::from(!(i >= seq && i % seq >= seq - 4))).collect();
    let mask = Tensor::from_vec(mask, &[batch, seq]).unwrap();
    let (host, on_gpu) = (load(name, Device::Cpu), load(name, dev));
    let run = |m: &dyn models::Model| {
        let input = ForwardInput { input_ids: Some(&ids), attention_mask: Some(&mask), ..Default::default() };
        let out = m.forward(&input, None).unwrap();
        let logits = out.logits.unwrap_or(out.hidden);
        let classes = *logits.shape().last().unwrap();
        let rows = logits.numel() / classes;
        let flat = logits.reshape(&[rows, classes]).unwrap();
        let targets: Vec<i64> = (0..rows).map(|r| if r == 3 { -100 } else { (r * 7 % classes) as i64 }).collect();
        let loss = flat.cross_entropy_with(&Tensor::from_vec(targets, &[rows]).unwrap(), -100).unwrap();
        (logits, loss)
    };
    let (lh, loss_h) = run(host.as_ref());
    let (lg, loss_g) = run(on_gpu.as_ref());
    assert_close(&format!("{name} logits"), &lg, &lh, 1e-4);
    assert_close(&format!("{name} loss"), &loss_g, &loss_h, 1e-4);
    let (gh, gg) = (loss_h.backward().unwrap(), loss_g.backward().unwrap());
    let params_g = on_gpu.named_parameters();
    for (pname, ph) in host.named_parameters() {
        let pg = &params_g.iter().find(|(n, _)| *n == pname).unwrap().1;
        match (gh.get(&ph), gg.get(pg)) {
            (Some(want), Some(got)) => assert_close(&format!("{name} grad {pname}"), got, want, 1e-4),
            (None, None) => {}
            (w, g) => panic!("{name} {pname}: host gradient {}, GPU gradient {}", w.is_some(), g.is_some()),
        }
    }
}

#[test]
fn llama_forward_and_every_parameter_gradient_match_the_host() {
    forward_and_grads("llama");
}

#[test]
fn gpt2_forward_and_every_parameter_gradient_match_the_host() {
    forward_and_grads("gpt2");
}

#[test]
fn bert_forward_and_every_parameter_gradient_match_the_host() {
    forward_and_grads("bert");
}

#[test]
fn bert_classifier_forward_and_every_parameter_gradient_match_the_host() {
    forward_and_grads("bert-cls");
}

/// Greedy and sampled generation, with and without the KV cache, on the GPU: the same tokens as on the
/// host (the logits agree to ~1e-5; these tiny models have no near-ties in their top tokens here).
#[test]
fn generation_with_and_without_the_cache_matches_the_host() {
    use engine::models::sampling::{generate, SamplingConfig};
    let Some(dev) = gpu() else { return };
    for name in ["llama", "gpt2"] {
        let (host, on_gpu) = (load(name, Device::Cpu), load(name, dev));
        let prompt = [5i64, 17, 42, 8];
        for cfg in [
            SamplingConfig::default(),
            SamplingConfig { temperature: Some(0.8), top_k: Some(20), ..Default::default() },
        ] {
            let want = generate(host.as_ref(), &prompt, 12, &[], &cfg, true).unwrap();
            for cache in [true, false] {
                let got = generate(on_gpu.as_ref(), &prompt, 12, &[], &cfg, cache).unwrap();
                assert_eq!(got, want, "{name} {cfg:?} cache={cache}");
            }
        }
    }
}
