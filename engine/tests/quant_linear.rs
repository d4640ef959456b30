//! The 4-bit Linear: its output equals an f32 Linear over the dequantized weight, its input
//! gradient matches finite differences, and the weight gets no gradient.
use engine::gradcheck::{check_gradients, GradCheck};
use engine::nn::Linear;
use engine::quant::bnb4::{Bnb4bit, QuantType};
use engine::quant::{dequantize_all, PackedMatrix};
use engine::Tensor;
use std::sync::Arc;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, seed).unwrap()
}

fn packed(out_f: usize, in_f: usize, qt: QuantType, dq: bool) -> Arc<dyn PackedMatrix> {
    let w = randn(&[out_f, in_f], 11).to_vec::<f32>().unwrap();
    Arc::new(Bnb4bit::quantize(&w, [out_f, in_f], qt, 64, dq).unwrap())
}

#[test]
fn forward_equals_dense_linear_over_dequantized_weight() {
    // 300 outputs span several dequantization tiles at this width; 70 inputs leave partial blocks.
    for (out_f, in_f) in [(300, 70), (5, 1000), (40, 33)] {
        let p = packed(out_f, in_f, QuantType::Nf4, true);
        let bias = randn(&[out_f], 3);
        let q = Linear::from_packed(p.clone(), Some(bias.clone())).unwrap();
        assert_eq!(q.weight.shape(), [out_f, in_f], "weight keeps its [out, in] shape");
        let dense = Linear::from_tensors(dequantize_all(p.as_ref()).unwrap(), Some(bias)).unwrap();
        let x = randn(&[3, 4, in_f], 5);
        let (got, want) = (q.forward(&x).unwrap(), dense.forward(&x).unwrap());
        assert_eq!(got.shape(), [3, 4, out_f]);
        let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        for (a, b) in g.iter().zip(&w) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{out_f}x{in_f}: {a} vs {b}");
        }
        assert!(q.forward(&randn(&[2, in_f + 1], 1)).is_err(), "wrong input width");
    }
}

#[test]
fn input_and_bias_gradients_match_finite_differences() {
    for qt in [QuantType::Nf4, QuantType::Fp4] {
        let p = packed(24, 70, qt, qt == QuantType::Nf4);
        let x = randn(&[2, 3, 70], 7);
        let b = randn(&[24], 8);
        check_gradients(
            |v| Linear::from_packed(p.clone(), Some(v[1].clone()))?.forward(&v[0]),
            &[x, b],
            GradCheck::default(),
        )
        .unwrap();
    }
}

#[test]
fn packed_weight_is_frozen_and_dense_reads_fail_clearly() {
    let p = packed(8, 64, QuantType::Nf4, false);
    let l = Linear::from_packed(p, None).unwrap();
    let x = randn(&[2, 64], 1).requires_grad().unwrap();
    let grads = l.forward(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_some());
    assert!(grads.get(&l.weight).is_none(), "no gradient for a packed weight");
    // Code that wants f32 weights gets an error, not zeros; dense_weight() is the explicit path.
    assert!(l.weight.to_vec::<f32>().is_err());
    assert!(l.weight.requires_grad().is_err());
    assert_eq!(l.dense_weight().unwrap().shape(), [8, 64]);
}

#[test]
fn fused_lora_over_a_packed_weight_equals_it_over_the_dequantized_one() {
    let p = packed(24, 70, QuantType::Nf4, true);
    let dense = dequantize_all(p.as_ref()).unwrap();
    let (x, bias) = (randn(&[2, 3, 70], 1), randn(&[24], 2));
    let (a, b, xd) = (randn(&[4, 70], 3), randn(&[24, 4], 4), randn(&[2, 3, 70], 5));
    let got = engine::lora_linear_packed(&x, &p, Some(&bias), &a, &b, 0.5, Some(&xd)).unwrap();
    let want = engine::lora_linear(&x, &dense, Some(&bias), &a, &b, 0.5, Some(&xd)).unwrap();
    for (g, w) in got.to_vec::<f32>().unwrap().iter().zip(want.to_vec::<f32>().unwrap()) {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
    }
    // Gradients of everything but the frozen weight, the dropout input included.
    check_gradients(
        |v| engine::lora_linear_packed(&v[0], &p, Some(&v[1]), &v[2], &v[3], 0.5, Some(&v[4])),
        &[x, bias, a, b, xd],
        GradCheck::default(),
    )
    .unwrap();
}
