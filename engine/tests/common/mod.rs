// Shared by the engine's integration tests (each test file includes it with `mod common;`).
#![allow(dead_code)]
use engine::gradcheck::{check_gradients, GradCheck};
use engine::{Result, Tensor};

pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, seed).unwrap()
}

pub fn gradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    if let Err(e) = check_gradients(f, inputs, GradCheck::default()) {
        panic!("{e}");
    }
}

pub fn assert_close(got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "element {i}: got {g}, want {w}");
    }
}
