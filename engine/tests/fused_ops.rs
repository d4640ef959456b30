//! Fused softmax / log-softmax, cross-entropy, LayerNorm and RMSNorm: values against naive f64
//! loops, gradients against finite differences (and, on shapes big enough for the parallel
//! kernels, against the same functions composed from primitive ops), edge cases and errors.
mod common;
use common::*;
use engine::{DType, Error, Tensor};
use std::slice::from_ref;

// ----- naive f64 references -----------------------------------------------------------------------

/// `[outer, r, inner]` around `dim`.
fn split(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product())
}

/// Softmax (or log-softmax) of `x` (row-major, `shape`) along `dim`, in f64.
fn softmax_ref(x: &[f32], shape: &[usize], dim: usize, log: bool) -> Vec<f64> {
    let (outer, r, inner) = split(shape, dim);
    let mut out = vec![0.0f64; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * r + j) * inner + i;
            let m = (0..r).map(|j| x[at(j)] as f64).fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = (0..r).map(|j| (x[at(j)] as f64 - m).exp()).sum();
            for j in 0..r {
                let d = x[at(j)] as f64 - m;
                out[at(j)] = if log { d - s.ln() } else { d.exp() / s };
            }
        }
    }
    out
}

fn cross_entropy_ref(x: &[f32], c: usize, targets: &[i64], ignore: i64) -> f64 {
    let (mut total, mut count) = (0.0, 0);
    for (r, &t) in targets.iter().enumerate() {
        if t == ignore {
            continue;
        }
        let row: Vec<f64> = x[r * c..(r + 1) * c].iter().map(|&v| v as f64).collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        total += lse - row[t as usize];
        count += 1;
    }
    total / count as f64
}

/// LayerNorm (`centered`) or RMSNorm over rows of `n`, in f64.
fn norm_ref(x: &[f32], n: usize, w: Option<&[f32]>, b: Option<&[f32]>, eps: f64, centered: bool) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let mean = if centered { row.iter().sum::<f64>() / n as f64 } else { 0.0 };
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (i, v) in row.iter().enumerate() {
            let mut y = (v - mean) * rstd;
            if let Some(w) = w {
                y *= w[i] as f64;
            }
            if let Some(b) = b {
                y += b[i] as f64;
            }
            out.push(y);
        }
    }
    out
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

// ----- softmax / log-softmax ---------------------------------------------------------------------

#[test]
fn softmax_values_every_dim_and_row_length() {
    let cases: &[(&[usize], u64)] = &[
        (&[4, 1], 1),
        (&[3, 13], 2),
        (&[2, 1000], 3),
        (&[3, 5, 13], 4),
        (&[7], 5),
        (&[80, 1000], 6), // big enough for the parallel row loop
    ];
    for &(shape, seed) in cases {
        let x = randn(shape, seed).mul_scalar(3.0).unwrap();
        let xv = vals(&x);
        for dim in 0..shape.len() {
            for log in [false, true] {
                let got = if log { x.log_softmax(dim) } else { x.softmax(dim) }.unwrap();
                assert_eq!(got.shape(), shape);
                let want = to_f32(&softmax_ref(&xv, shape, dim, log));
                let (rtol, atol) = if log { (1e-5, 1e-5) } else { (1e-5, 1e-7) };
                assert_close(&vals(&got), &want, rtol, atol);
            }
        }
    }
}

#[test]
fn softmax_of_a_strided_view_and_of_bf16() {
    let base = randn(&[6, 9], 7);
    let x = base.t().unwrap().narrow(1, 1, 4).unwrap(); // [9, 4], not contiguous
    let xc = x.contiguous().unwrap();
    assert_close(&vals(&x.softmax(1).unwrap()), &vals(&xc.softmax(1).unwrap()), 0.0, 0.0);
    assert_close(&vals(&x.log_softmax(0).unwrap()), &vals(&xc.log_softmax(0).unwrap()), 0.0, 0.0);
    let h = base.to_dtype(DType::BF16).unwrap();
    let got = h.softmax(1).unwrap();
    assert_eq!(got.dtype(), DType::F32);
    let want = to_f32(&softmax_ref(&vals(&h), &[6, 9], 1, false));
    assert_close(&vals(&got), &want, 1e-5, 1e-7);
}

#[test]
fn softmax_is_stable_for_large_logits() {
    // 1e4 + k/4 is exact in f32; exp without the max subtracted would overflow.
    let v: Vec<f32> = (0..26).map(|k| if k % 2 == 0 { 1e4 + k as f32 * 0.25 } else { -1e4 - k as f32 }).collect();
    let x = Tensor::from_vec(v.clone(), &[2, 13]).unwrap();
    for log in [false, true] {
        let got = vals(&if log { x.log_softmax(1) } else { x.softmax(1) }.unwrap());
        assert!(got.iter().all(|g| g.is_finite()), "{got:?}");
        assert_close(&got, &to_f32(&softmax_ref(&v, &[2, 13], 1, log)), 1e-5, 1e-6);
    }
}

#[test]
fn fully_masked_rows_give_zeros_not_nan() {
    let ninf = f32::NEG_INFINITY;
    let mut v = vec![ninf; 13];
    v.extend((0..13).map(|k| if k % 3 == 0 { ninf } else { k as f32 * 0.1 }));
    let x = Tensor::from_vec(v.clone(), &[2, 13]).unwrap();
    let y = vals(&x.softmax(1).unwrap());
    assert!(y[..13].iter().all(|&p| p == 0.0), "{y:?}");
    assert_close(&y[13..], &to_f32(&softmax_ref(&v[13..], &[13], 0, false)), 1e-6, 1e-7);
    assert!(y[13..].iter().step_by(3).all(|&p| p == 0.0));
    let ly = vals(&x.log_softmax(1).unwrap());
    assert!(ly[..13].iter().all(|&p| p == ninf), "{ly:?}");
    assert!(ly.iter().all(|p| !p.is_nan()));

    // Backward stays finite: softmax gives zero gradient on the masked row, log-softmax passes
    // the incoming gradient through.
    let xv = x.requires_grad().unwrap();
    let w = randn(&[2, 13], 8);
    let g = xv.softmax(1).unwrap().mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = vals(g.get(&xv).unwrap());
    assert!(gx[..13].iter().all(|&v| v == 0.0) && gx.iter().all(|v| v.is_finite()), "{gx:?}");
    let g = xv.log_softmax(1).unwrap().narrow(0, 0, 1).unwrap().mul(&w.narrow(0, 0, 1).unwrap()).unwrap();
    let g = g.sum_all().unwrap().backward().unwrap();
    assert_close(&vals(g.get(&xv).unwrap())[..13], &vals(&w)[..13], 0.0, 0.0);

    // A NaN is never hidden.
    let mut v = vec![ninf; 5];
    v[2] = f32::NAN;
    let y = vals(&Tensor::from_vec(v, &[5]).unwrap().softmax(0).unwrap());
    assert!(y.iter().all(|p| p.is_nan()));
}

#[test]
fn softmax_gradients() {
    let x = randn(&[3, 5, 13], 11);
    for dim in 0..3 {
        gradcheck(|v| v[0].softmax(dim), from_ref(&x));
        gradcheck(|v| v[0].log_softmax(dim), from_ref(&x));
    }
    let one = randn(&[4, 1], 12);
    gradcheck(|v| v[0].softmax(1), from_ref(&one));
    gradcheck(|v| v[0].log_softmax(1), &[one]);
}

// ----- cross-entropy -----------------------------------------------------------------------------

#[test]
fn cross_entropy_values() {
    // [3, 5] leading dims, 13 classes, two ignored targets.
    let x = randn(&[3, 5, 13], 21).mul_scalar(2.0).unwrap();
    let t: Vec<i64> = (0..15).map(|i| if i == 4 || i == 9 { -100 } else { (i * 7 % 13) as i64 }).collect();
    let tt = Tensor::from_vec(t.clone(), &[3, 5]).unwrap();
    let loss = x.cross_entropy(&tt).unwrap();
    assert_eq!(loss.shape(), &[] as &[usize]);
    let want = cross_entropy_ref(&vals(&x), 13, &t, -100) as f32;
    assert_close(&[loss.to_scalar().unwrap()], &[want], 1e-6, 1e-6);

    // A custom ignore_index that is also a valid class.
    let t0: Vec<i64> = t.iter().map(|&v| if v == -100 { 3 } else { v }).collect();
    let loss0 = x.cross_entropy_with(&Tensor::from_vec(t0.clone(), &[3, 5]).unwrap(), 3).unwrap();
    assert_close(&[loss0.to_scalar().unwrap()], &[cross_entropy_ref(&vals(&x), 13, &t0, 3) as f32], 1e-6, 1e-6);

    // Rows of 1 class (loss 0) and of 1000 classes; unbatched logits [C] with a 0-dim target.
    let x1 = randn(&[4, 1], 22);
    let l1 = x1.cross_entropy(&Tensor::from_vec(vec![0i64; 4], &[4]).unwrap()).unwrap();
    assert_eq!(l1.to_scalar().unwrap(), 0.0);
    let xb = randn(&[70, 1000], 23);
    let tb: Vec<i64> = (0..70).map(|i| if i % 10 == 3 { -100 } else { (i * 131 % 1000) as i64 }).collect();
    let lb = xb.cross_entropy(&Tensor::from_vec(tb.clone(), &[70]).unwrap()).unwrap();
    assert_close(&[lb.to_scalar().unwrap()], &[cross_entropy_ref(&vals(&xb), 1000, &tb, -100) as f32], 1e-6, 1e-6);
    let xu = randn(&[13], 24);
    let lu = xu.cross_entropy(&Tensor::from_vec(vec![5i64], &[]).unwrap()).unwrap();
    assert_close(&[lu.to_scalar().unwrap()], &[cross_entropy_ref(&vals(&xu), 13, &[5], -100) as f32], 1e-6, 1e-6);
}

#[test]
fn cross_entropy_is_stable_for_large_logits() {
    let v: Vec<f32> = (0..26).map(|k| 1e4 - (k % 13) as f32 * 0.5).collect();
    let x = Tensor::from_vec(v.clone(), &[2, 13]).unwrap();
    let t = [0i64, 7];
    let loss = x.cross_entropy(&Tensor::from_vec(t.to_vec(), &[2]).unwrap()).unwrap().to_scalar().unwrap();
    assert!(loss.is_finite());
    assert_close(&[loss], &[cross_entropy_ref(&v, 13, &t, -100) as f32], 1e-6, 1e-6);
    let g = x.requires_grad().unwrap();
    let gr = g.cross_entropy(&Tensor::from_vec(t.to_vec(), &[2]).unwrap()).unwrap().backward().unwrap();
    assert!(vals(gr.get(&g).unwrap()).iter().all(|v| v.is_finite()));
}

#[test]
fn cross_entropy_all_ignored_is_zero_with_zero_gradient() {
    let x = randn(&[3, 13], 25).requires_grad().unwrap();
    let t = Tensor::from_vec(vec![-100i64; 3], &[3]).unwrap();
    let loss = x.cross_entropy(&t).unwrap();
    assert_eq!(loss.to_scalar().unwrap(), 0.0);
    let g = loss.backward().unwrap();
    assert!(vals(g.get(&x).unwrap()).iter().all(|&v| v == 0.0));
}

#[test]
fn cross_entropy_gradients() {
    let x = randn(&[3, 5, 13], 26);
    let t: Vec<i64> = (0..15).map(|i| if i == 6 { -100 } else { (i * 5 % 13) as i64 }).collect();
    let tt = Tensor::from_vec(t, &[3, 5]).unwrap();
    gradcheck(|v| v[0].cross_entropy(&tt), &[x]);
    // The gradient is (softmax − onehot)/count, zero on the ignored row.
    let x = randn(&[4, 6], 27).requires_grad().unwrap();
    let t = [2i64, -100, 0, 5];
    let g = x.cross_entropy(&Tensor::from_vec(t.to_vec(), &[4]).unwrap()).unwrap().backward().unwrap();
    let gx = vals(g.get(&x).unwrap());
    let p = softmax_ref(&vals(&x), &[4, 6], 1, false);
    for r in 0..4 {
        for j in 0..6 {
            let want = if t[r] == -100 { 0.0 } else { (p[r * 6 + j] - (j as i64 == t[r]) as i32 as f64) / 3.0 };
            assert!((gx[r * 6 + j] as f64 - want).abs() < 1e-6, "[{r},{j}]: {} vs {want}", gx[r * 6 + j]);
        }
    }
}

#[test]
fn cross_entropy_errors() {
    let x = randn(&[2, 3, 5], 28);
    let bad = Tensor::from_vec(vec![0i64, 1, 2, 5, 4, 3], &[2, 3]).unwrap();
    let e = x.cross_entropy(&bad).unwrap_err().to_string();
    assert!(e.contains("target 5") && e.contains("5 classes") && e.contains("[1, 0]"), "{e}");
    let neg = Tensor::from_vec(vec![0i64, 1, 2, -1, 4, 3], &[2, 3]).unwrap();
    let e = x.cross_entropy(&neg).unwrap_err().to_string();
    assert!(e.contains("target -1"), "{e}");
    // -1 is fine when it is the ignore index
    assert!(x.cross_entropy_with(&neg, -1).is_ok());
    let wrong_shape = Tensor::from_vec(vec![0i64; 3], &[3]).unwrap();
    let e = x.cross_entropy(&wrong_shape).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert!(e.to_string().contains("[3]") && e.to_string().contains("[2, 3, 5]"), "{e}");
    let float_targets = Tensor::zeros(&[2, 3], DType::F32);
    assert!(matches!(x.cross_entropy(&float_targets), Err(Error::DType { .. })));
    assert!(Tensor::scalar(1.0).cross_entropy(&Tensor::from_vec(vec![0i64], &[]).unwrap()).is_err());
}

// ----- layer norm / rms norm ---------------------------------------------------------------------

#[test]
fn norm_values() {
    for (shape, seed) in [(&[4, 1][..], 31u64), (&[3, 5, 13][..], 32), (&[2, 1000][..], 33), (&[70, 1000][..], 34)] {
        let n = *shape.last().unwrap();
        let x = randn(shape, seed).mul_scalar(2.0).unwrap().add_scalar(0.5).unwrap();
        let w = randn(&[n], seed + 100);
        let b = randn(&[n], seed + 200);
        let (xv, wv, bv) = (vals(&x), vals(&w), vals(&b));
        let eps = 1e-5;
        let cases = [
            (x.layer_norm(Some(&w), Some(&b), eps).unwrap(), norm_ref(&xv, n, Some(&wv), Some(&bv), 1e-5, true)),
            (x.layer_norm(None, None, eps).unwrap(), norm_ref(&xv, n, None, None, 1e-5, true)),
            (x.layer_norm(Some(&w), None, eps).unwrap(), norm_ref(&xv, n, Some(&wv), None, 1e-5, true)),
            (x.rms_norm(Some(&w), eps).unwrap(), norm_ref(&xv, n, Some(&wv), None, 1e-5, false)),
            (x.rms_norm(None, eps).unwrap(), norm_ref(&xv, n, None, None, 1e-5, false)),
        ];
        for (got, want) in cases {
            assert_eq!(got.shape(), shape);
            assert_close(&vals(&got), &to_f32(&want), 1e-4, 1e-4);
        }
    }
}

#[test]
fn layer_norm_gradients() {
    let x = randn(&[3, 5, 13], 41);
    let w = randn(&[13], 42);
    let b = randn(&[13], 43);
    gradcheck(|v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5), &[x.clone(), w.clone(), b.clone()]);
    gradcheck(|v| v[0].layer_norm(None, None, 1e-5), from_ref(&x));
    gradcheck(|v| v[0].layer_norm(None, Some(&v[1]), 1e-5), &[x.clone(), b]);
    // Gradients only for the parameters (the input a constant), and only for the input.
    gradcheck(|v| x.layer_norm(Some(&v[0]), None, 1e-5), from_ref(&w));
    gradcheck(|v| v[0].layer_norm(Some(&w), None, 1e-5), &[x]);
    // Rows of length 1: the output is the bias, constant in x.
    let x1 = randn(&[4, 1], 44);
    gradcheck(|v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5), &[x1, randn(&[1], 45), randn(&[1], 46)]);
}

#[test]
fn rms_norm_gradients() {
    let x = randn(&[3, 5, 13], 51);
    let w = randn(&[13], 52);
    gradcheck(|v| v[0].rms_norm(Some(&v[1]), 1e-6), &[x.clone(), w.clone()]);
    gradcheck(|v| v[0].rms_norm(None, 1e-6), from_ref(&x));
    gradcheck(|v| x.rms_norm(Some(&v[0]), 1e-6), &[w]);
    gradcheck(|v| v[0].rms_norm(Some(&v[1]), 1e-6), &[randn(&[4, 1], 53), randn(&[1], 54)]);
}

#[test]
fn norm_errors() {
    let x = randn(&[2, 7], 61);
    let e = x.layer_norm(Some(&randn(&[6], 62)), None, 1e-5).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }));
    let msg = e.to_string();
    assert!(msg.contains("weight") && msg.contains("[6]") && msg.contains("[2, 7]") && msg.contains("[7]"), "{msg}");
    let e = x.layer_norm(None, Some(&randn(&[1, 7], 63)), 1e-5).unwrap_err().to_string();
    assert!(e.contains("bias") && e.contains("[1, 7]"), "{e}");
    let e = x.rms_norm(Some(&randn(&[2, 7], 64)), 1e-5).unwrap_err().to_string();
    assert!(e.contains("rms_norm") && e.contains("[2, 7]"), "{e}");
    assert!(x.layer_norm(None, None, -1.0).is_err());
    assert!(Tensor::scalar(1.0).rms_norm(None, 1e-5).is_err());
    assert!(Tensor::from_vec(vec![1i64, 2], &[2]).unwrap().rms_norm(None, 1e-5).is_err());
}

// ----- the parallel paths against the same functions built from primitive ops ---------------------

fn grads_of(f: impl Fn(&[Tensor]) -> engine::Result<Tensor>, inputs: &[Tensor], w: &Tensor) -> Vec<Vec<f32>> {
    let vars: Vec<Tensor> = inputs.iter().map(|t| t.requires_grad().unwrap()).collect();
    let g = f(&vars).unwrap().mul(w).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter().map(|v| vals(g.get(v).unwrap())).collect()
}

#[test]
fn big_shapes_match_composed_primitive_ops() {
    let (rows, n) = (90, 1000); // 90k elements: parallel row loops, several backward blocks
    let x = randn(&[rows, n], 71);
    let w = randn(&[n], 72);
    let b = randn(&[n], 73);
    let up = randn(&[rows, n], 74);
    let last = 1;

    let softmax_composed = |t: &Tensor| -> engine::Result<Tensor> {
        let m = t.detach().max(last, true)?;
        let e = t.sub(&m)?.exp()?;
        e.div(&e.sum(&[last], true)?)
    };
    let got = grads_of(|v| v[0].softmax(last), from_ref(&x), &up);
    let want = grads_of(|v| softmax_composed(&v[0]), from_ref(&x), &up);
    assert_close(&got[0], &want[0], 1e-4, 1e-6);
    let log_composed = |t: &Tensor| -> engine::Result<Tensor> {
        let m = t.detach().max(last, true)?;
        let s = t.sub(&m)?;
        s.sub(&s.exp()?.sum(&[last], true)?.log()?)
    };
    let got = grads_of(|v| v[0].log_softmax(last), from_ref(&x), &up);
    let want = grads_of(|v| log_composed(&v[0]), from_ref(&x), &up);
    assert_close(&got[0], &want[0], 1e-4, 1e-5);

    let ln_composed = |v: &[Tensor]| -> engine::Result<Tensor> {
        let xc = v[0].sub(&v[0].mean(&[last], true)?)?;
        let rstd = xc.sqr()?.mean(&[last], true)?.add_scalar(1e-5)?.powf(-0.5)?;
        xc.mul(&rstd)?.mul(&v[1])?.add(&v[2])
    };
    let inputs = [x.clone(), w.clone(), b.clone()];
    let got = grads_of(|v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5), &inputs, &up);
    let want = grads_of(ln_composed, &inputs, &up);
    assert_close(&got[0], &want[0], 1e-3, 1e-4);
    assert_close(&got[1], &want[1], 1e-3, 1e-3);
    assert_close(&got[2], &want[2], 1e-4, 1e-3);

    let rms_composed = |v: &[Tensor]| -> engine::Result<Tensor> {
        let rstd = v[0].sqr()?.mean(&[last], true)?.add_scalar(1e-6)?.powf(-0.5)?;
        v[0].mul(&rstd)?.mul(&v[1])
    };
    let inputs = [x.clone(), w.clone()];
    let got = grads_of(|v| v[0].rms_norm(Some(&v[1]), 1e-6), &inputs, &up);
    let want = grads_of(rms_composed, &inputs, &up);
    assert_close(&got[0], &want[0], 1e-3, 1e-4);
    assert_close(&got[1], &want[1], 1e-3, 1e-3);

    // Cross-entropy: −Σ onehot ⊙ log_softmax / count, with every 7th row ignored.
    let t: Vec<i64> = (0..rows).map(|r| if r % 7 == 0 { -100 } else { (r * 37 % n) as i64 }).collect();
    let count = t.iter().filter(|&&v| v != -100).count();
    let mut onehot = vec![0.0f32; rows * n];
    for (r, &c) in t.iter().enumerate() {
        if c >= 0 {
            onehot[r * n + c as usize] = 1.0;
        }
    }
    let onehot = Tensor::from_vec(onehot, &[rows, n]).unwrap();
    let tt = Tensor::from_vec(t, &[rows]).unwrap();
    let one = Tensor::scalar(1.0);
    let got = grads_of(|v| v[0].cross_entropy(&tt), from_ref(&x), &one);
    let want =
        grads_of(|v| log_composed(&v[0])?.mul(&onehot)?.sum_all()?.mul_scalar(-1.0 / count as f32), from_ref(&x), &one);
    assert_close(&got[0], &want[0], 1e-4, 1e-8);
}

/// Outputs come from a buffer pool that may hand back a used buffer: every element must be written.
#[test]
fn pooled_buffers_are_fully_overwritten() {
    let (rows, n) = (300, 1000); // above the pool's size threshold
    let poison = || drop(Tensor::full(f64::NAN, &[rows, n], DType::F32).unwrap());
    let x = randn(&[rows, n], 81).requires_grad().unwrap();
    let w = randn(&[n], 82).requires_grad().unwrap();
    let finite = |t: &Tensor| vals(t).iter().all(|v| v.is_finite());
    let t: Vec<i64> = (0..rows).map(|r| if r % 3 == 0 { -100 } else { (r * 7 % n) as i64 }).collect();
    let tt = Tensor::from_vec(t.clone(), &[rows]).unwrap();
    type Op<'a> = Box<dyn Fn() -> engine::Result<Tensor> + 'a>;
    let ops: Vec<(&str, Op)> = vec![
        ("softmax", Box::new(|| x.softmax(1))),
        ("log_softmax", Box::new(|| x.log_softmax(1))),
        ("layer_norm", Box::new(|| x.layer_norm(Some(&w), Some(&w), 1e-5))),
        ("rms_norm", Box::new(|| x.rms_norm(Some(&w), 1e-5))),
    ];
    for (name, op) in &ops {
        poison();
        let y = op().unwrap();
        assert!(finite(&y), "{name} forward");
        poison();
        let g = y.mul(&randn(&[rows, n], 83)).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(finite(g.get(&x).unwrap()), "{name} backward");
    }
    poison();
    let g = x.cross_entropy(&tt).unwrap().backward().unwrap();
    let gx = vals(g.get(&x).unwrap());
    assert!(gx.iter().all(|v| v.is_finite()));
    assert!(gx.chunks(n).zip(&t).all(|(row, &c)| c != -100 || row.iter().all(|&v| v == 0.0)));
}
