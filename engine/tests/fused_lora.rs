//! The fused LoRA linear against the same computation composed from primitive ops, values and
//! gradients (finite differences), with and without bias, dropout input and strided weights.
mod common;
use common::*;
use engine::{lora_linear, Tensor};

fn composed(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    s: f32,
    xd: &Tensor,
) -> engine::Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    let y = match bias {
        Some(bb) => y.add(bb)?,
        None => y,
    };
    y.add(&xd.matmul(&a.t()?)?.matmul(&b.t()?)?.mul_scalar(s)?)
}

#[test]
fn matches_composition() {
    let x = randn(&[2, 5, 7], 1);
    let w = randn(&[6, 7], 2);
    let bias = randn(&[6], 3);
    let a = randn(&[3, 7], 4);
    let b = randn(&[6, 3], 5);
    let xd = randn(&[2, 5, 7], 6);
    let got = lora_linear(&x, &w, Some(&bias), &a, &b, 0.5, Some(&xd)).unwrap();
    let want = composed(&x, &w, Some(&bias), &a, &b, 0.5, &xd).unwrap();
    assert_close(&got.to_vec::<f32>().unwrap(), &want.to_vec::<f32>().unwrap(), 1e-5, 1e-5);
    // a transposed weight view (GPT-2's Conv1D layout) and no bias
    let wt = randn(&[7, 6], 7).t().unwrap();
    let got = lora_linear(&x, &wt, None, &a, &b, 2.0, None).unwrap();
    let want = composed(&x, &wt, None, &a, &b, 2.0, &x).unwrap();
    assert_close(&got.to_vec::<f32>().unwrap(), &want.to_vec::<f32>().unwrap(), 1e-5, 1e-5);
    assert!(lora_linear(&x, &w, None, &randn(&[3, 6], 1), &b, 1.0, None).is_err());
}

#[test]
fn gradients() {
    let (x, w, bias) = (randn(&[2, 3, 5], 1), randn(&[4, 5], 2), randn(&[4], 3));
    let (a, b) = (randn(&[2, 5], 4), randn(&[4, 2], 5));
    // every input, with a separate dropout input
    gradcheck(
        |v| lora_linear(&v[0], &v[1], Some(&v[2]), &v[3], &v[4], 0.7, Some(&v[5])),
        &[x.clone(), w.clone(), bias.clone(), a.clone(), b.clone(), randn(&[2, 3, 5], 6)],
    );
    // x used by both paths (no dropout): the two gradients add up
    gradcheck(|v| lora_linear(&v[0], &w, None, &v[1], &v[2], 1.5, None), &[x, a, b]);
}
