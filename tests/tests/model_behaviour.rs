//! Model behaviour beyond the fixtures: gradients through each architecture against finite
//! differences, the KV cache against full recomputation, padding masks against unpadded runs,
//! prefixes against their definition.
use engine::gradcheck::{check_gradients, GradCheck};
use engine::models::{load, ForwardInput, KvCache, KvPrefix, Model};
use engine::{no_grad, DType, Tensor};
use integration_tests::fixtures_dir;

fn model(name: &str) -> Box<dyn Model> {
    load(fixtures_dir().join("models").join(name)).unwrap()
}

fn ids(v: &[i64], b: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[b, v.len() / b]).unwrap()
}

fn close(a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst <= tol, "max difference {worst} > {tol}");
}

#[test]
fn gradients_flow_through_every_architecture() {
    for name in ["bert", "bert-cls", "gpt2", "llama"] {
        let m = model(name);
        let h = m.config().hidden_size;
        let embeds = Tensor::randn(&[1, 3, h], 0.0, 1.0, 7).unwrap();
        let f = |v: &[Tensor]| {
            let out = m.forward(&ForwardInput { inputs_embeds: Some(&v[0]), ..Default::default() }, None)?;
            Ok(out.main().1.clone())
        };
        check_gradients(f, &[embeds], GradCheck { eps: 1e-2, rtol: 2e-2, atol: 3e-3 })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn gradients_reach_prefixes() {
    for name in ["bert", "llama"] {
        let m = model(name);
        let c = m.config().clone();
        let input = ids(&[5, 9, 3], 1);
        let key = Tensor::randn(&[1, c.num_kv_heads, 2, c.head_dim], 0.0, 1.0, 3).unwrap();
        let value = Tensor::randn(&[1, c.num_kv_heads, 2, c.head_dim], 0.0, 1.0, 4).unwrap();
        let f = |v: &[Tensor]| {
            let mut prefix = vec![KvPrefix { key: key.clone(), value: value.clone() }; c.num_layers];
            prefix[0] = KvPrefix { key: v[0].clone(), value: v[1].clone() };
            let out = m.forward(
                &ForwardInput { input_ids: Some(&input), prefix: Some(&prefix), ..Default::default() },
                None,
            )?;
            Ok(out.main().1.clone())
        };
        check_gradients(f, &[key.clone(), value.clone()], GradCheck { eps: 1e-2, rtol: 2e-2, atol: 3e-3 })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn kv_cache_equals_recomputation() {
    let _g = no_grad();
    for name in ["gpt2", "llama"] {
        let m = model(name);
        let seq = [3i64, 17, 42, 8, 99 - 1, 23, 5];
        let full = m.forward(&ForwardInput { input_ids: Some(&ids(&seq, 1)), ..Default::default() }, None).unwrap();
        let logits = full.logits.unwrap();
        let mut cache = KvCache::new(m.config().num_layers);
        // prompt of 4, then one token at a time
        let first = m
            .forward(&ForwardInput { input_ids: Some(&ids(&seq[..4], 1)), ..Default::default() }, Some(&mut cache))
            .unwrap();
        close(&first.logits.unwrap(), &logits.narrow(1, 0, 4).unwrap(), 1e-5);
        for t in 4..seq.len() {
            let step = m
                .forward(
                    &ForwardInput { input_ids: Some(&ids(&seq[t..t + 1], 1)), ..Default::default() },
                    Some(&mut cache),
                )
                .unwrap();
            close(&step.logits.unwrap(), &logits.narrow(1, t, 1).unwrap(), 1e-5);
        }
        assert_eq!(cache.len(), seq.len(), "{name}");
    }
}

#[test]
fn padding_masks_leave_real_positions_unchanged() {
    let _g = no_grad();
    for name in ["bert", "gpt2", "llama"] {
        let m = model(name);
        let short = [11i64, 12, 13];
        let alone = m.forward(&ForwardInput { input_ids: Some(&ids(&short, 1)), ..Default::default() }, None).unwrap();
        let alone = alone.main().1.clone();
        // right padding: positions unchanged
        let padded = ids(&[11, 12, 13, 0, 0], 1);
        let mask = Tensor::from_vec(vec![1i64, 1, 1, 0, 0], &[1, 5]).unwrap();
        let out = m
            .forward(
                &ForwardInput { input_ids: Some(&padded), attention_mask: Some(&mask), ..Default::default() },
                None,
            )
            .unwrap();
        let got = out.main().1.clone();
        let got = if got.rank() == 3 { got.narrow(1, 0, 3).unwrap() } else { got };
        close(&got, &alone, 2e-5);
        if name == "bert" {
            continue;
        }
        // left padding with position ids counted from the first real token, as generate() does
        let padded = ids(&[0, 0, 11, 12, 13], 1);
        let mask = Tensor::from_vec(vec![0i64, 0, 1, 1, 1], &[1, 5]).unwrap();
        let pos = Tensor::from_vec(vec![1i64, 1, 0, 1, 2], &[1, 5]).unwrap();
        let input = ForwardInput {
            input_ids: Some(&padded),
            attention_mask: Some(&mask),
            position_ids: Some(&pos),
            ..Default::default()
        };
        let got = m.forward(&input, None).unwrap().logits.unwrap().narrow(1, 2, 3).unwrap();
        close(&got, &alone, 2e-5);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let m = model("llama");
    let seq = ids(&[1, 2, 3], 1);
    let wrong_mask = Tensor::ones(&[1, 4], DType::I64).unwrap();
    assert!(m
        .forward(&ForwardInput { input_ids: Some(&seq), attention_mask: Some(&wrong_mask), ..Default::default() }, None)
        .is_err());
    assert!(m.forward(&ForwardInput::default(), None).is_err());
    let out_of_vocab = ids(&[1, 500], 1);
    let err = m.forward(&ForwardInput { input_ids: Some(&out_of_vocab), ..Default::default() }, None).unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    let bad_prefix =
        vec![
            KvPrefix { key: Tensor::zeros(&[1, 3, 2, 8], DType::F32), value: Tensor::zeros(&[1, 3, 2, 8], DType::F32) };
            2
        ];
    assert!(m
        .forward(&ForwardInput { input_ids: Some(&seq), prefix: Some(&bad_prefix), ..Default::default() }, None)
        .is_err());
}
