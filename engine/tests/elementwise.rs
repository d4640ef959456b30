//! Elementwise, view and reduction ops: values against naive loops, gradients against finite
//! differences, on shapes that are not multiples of the SIMD width.
mod common;
use common::*;
use engine::{DType, Tensor};

fn erf_ref(x: f64) -> f64 {
    // Taylor series, converges fast for |x| < 3
    let mut sum = 0.0;
    let mut term = x;
    let mut n = 0;
    while term.abs() > 1e-17 || n < 5 {
        sum += term / (2 * n + 1) as f64;
        n += 1;
        term *= -x * x / n as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn unary_values_match_scalar_math() {
    let x = randn(&[3, 37], 1).mul_scalar(2.0).unwrap();
    let xv = x.to_vec::<f32>().unwrap();
    type F = fn(f64) -> f64;
    let cases: Vec<(&str, Tensor, F)> = vec![
        ("exp", x.exp().unwrap(), |v| v.exp()),
        ("tanh", x.tanh().unwrap(), |v| v.tanh()),
        ("sigmoid", x.sigmoid().unwrap(), |v| 1.0 / (1.0 + (-v).exp())),
        ("silu", x.silu().unwrap(), |v| v / (1.0 + (-v).exp())),
        ("relu", x.relu().unwrap(), |v| v.max(0.0)),
        ("gelu", x.gelu().unwrap(), |v| 0.5 * v * (1.0 + erf_ref(v / 2f64.sqrt()))),
        ("gelu_tanh", x.gelu_tanh().unwrap(), |v| {
            0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
        }),
        ("neg", x.neg().unwrap(), |v| -v),
        ("sqr", x.sqr().unwrap(), |v| v * v),
    ];
    for (name, t, f) in cases {
        let want: Vec<f32> = xv.iter().map(|&v| f(v as f64) as f32).collect();
        let got = t.to_vec::<f32>().unwrap();
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 2e-6 + 2e-6 * w.abs(), "{name}[{i}]: {g} vs {w}");
        }
    }
    let pos = x.abs_for_test();
    let pv = pos.to_vec::<f32>().unwrap();
    assert_close(
        &pos.log().unwrap().to_vec::<f32>().unwrap(),
        &pv.iter().map(|v| v.ln()).collect::<Vec<_>>(),
        1e-6,
        1e-6,
    );
    assert_close(
        &pos.sqrt().unwrap().to_vec::<f32>().unwrap(),
        &pv.iter().map(|v| v.sqrt()).collect::<Vec<_>>(),
        1e-6,
        0.0,
    );
    assert_close(
        &pos.recip().unwrap().to_vec::<f32>().unwrap(),
        &pv.iter().map(|v| 1.0 / v).collect::<Vec<_>>(),
        1e-6,
        0.0,
    );
}

trait AbsForTest {
    fn abs_for_test(&self) -> Tensor;
}
impl AbsForTest for Tensor {
    fn abs_for_test(&self) -> Tensor {
        let v: Vec<f32> = self.to_vec::<f32>().unwrap().iter().map(|x| x.abs() + 0.1).collect();
        Tensor::from_vec(v, self.shape()).unwrap()
    }
}

#[test]
fn unary_gradients() {
    let x = randn(&[2, 11], 2);
    let p = x.abs_for_test();
    gradcheck(|v| v[0].exp(), std::slice::from_ref(&x));
    gradcheck(|v| v[0].tanh(), std::slice::from_ref(&x));
    gradcheck(|v| v[0].sigmoid(), std::slice::from_ref(&x));
    gradcheck(|v| v[0].silu(), std::slice::from_ref(&x));
    gradcheck(|v| v[0].gelu(), std::slice::from_ref(&x));
    gradcheck(|v| v[0].gelu_tanh(), std::slice::from_ref(&x));
    // relu has a kink at 0: keep inputs a step away from it
    let away: Vec<f32> =
        p.to_vec::<f32>().unwrap().iter().enumerate().map(|(i, v)| if i % 2 == 0 { *v } else { -v }).collect();
    gradcheck(|v| v[0].relu(), &[Tensor::from_vec(away, &[2, 11]).unwrap()]);
    gradcheck(|v| v[0].neg(), std::slice::from_ref(&x));
    gradcheck(|v| v[0].affine(1.5, -2.0), std::slice::from_ref(&x));
    gradcheck(|v| v[0].powf(3.0), std::slice::from_ref(&x));
    gradcheck(|v| v[0].log(), std::slice::from_ref(&p));
    gradcheck(|v| v[0].sqrt(), std::slice::from_ref(&p));
    gradcheck(|v| v[0].recip(), std::slice::from_ref(&p));
    gradcheck(|v| v[0].powf(-0.5), &[p]);
}

/// Reference broadcasting: index each operand by the output index, right-aligned, size-1 dims fixed.
fn broadcast_ref(a: &Tensor, b: &Tensor, f: fn(f32, f32) -> f32) -> (Vec<usize>, Vec<f32>) {
    let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
    let rank = sa.len().max(sb.len());
    let pad = |s: &[usize]| {
        let mut p = vec![1; rank - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (pa, pb) = (pad(&sa), pad(&sb));
    let out: Vec<usize> = (0..rank).map(|i| pa[i].max(pb[i])).collect();
    let (va, vb) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    let n: usize = out.iter().product();
    let mut res = Vec::with_capacity(n);
    for flat in 0..n {
        let mut rem = flat;
        let mut idx = vec![0; rank];
        for d in (0..rank).rev() {
            idx[d] = rem % out[d];
            rem /= out[d];
        }
        let lin = |p: &[usize]| {
            let mut l = 0;
            for d in 0..rank {
                l = l * p[d] + if p[d] == 1 { 0 } else { idx[d] };
            }
            l
        };
        res.push(f(va[lin(&pa)], vb[lin(&pb)]));
    }
    (out, res)
}

#[test]
fn broadcasting_matches_reference() {
    let shapes: &[(&[usize], &[usize])] = &[
        (&[3, 9], &[3, 9]),
        (&[3, 9], &[9]),
        (&[3, 1], &[1, 9]),
        (&[2, 3, 9], &[3, 1]),
        (&[1], &[4, 5]),
        (&[2, 1, 5, 1], &[3, 1, 7]),
        (&[], &[5]),
        (&[1000, 3], &[1000, 1]),
        (&[70000], &[70000]),
    ];
    type Scalar2 = fn(f32, f32) -> f32;
    let ops: [(&str, Scalar2); 4] =
        [("add", |a, b| a + b), ("sub", |a, b| a - b), ("mul", |a, b| a * b), ("div", |a, b| a / b)];
    for (i, (sa, sb)) in shapes.iter().enumerate() {
        let a = randn(sa, 10 + i as u64);
        let b = randn(sb, 20 + i as u64).abs_for_test();
        for (name, f) in ops {
            let got = match name {
                "add" => a.add(&b),
                "sub" => a.sub(&b),
                "mul" => a.mul(&b),
                _ => a.div(&b),
            }
            .unwrap();
            let (shape, want) = broadcast_ref(&a, &b, f);
            assert_eq!(got.shape(), &shape[..], "{name} {sa:?} {sb:?}");
            assert_close(&got.to_vec::<f32>().unwrap(), &want, 1e-6, 0.0);
        }
    }
    // strided operands: a transposed view and a narrowed one
    let a = randn(&[7, 5], 3).t().unwrap();
    let b = randn(&[5, 9], 4).narrow(1, 2, 7).unwrap();
    let (_, want) = broadcast_ref(&a, &b, |x, y| x * y);
    assert_close(&a.mul(&b).unwrap().to_vec::<f32>().unwrap(), &want, 1e-6, 0.0);
    assert!(randn(&[3, 2], 1).add(&randn(&[3], 1)).is_err());
}

#[test]
fn binary_gradients_with_broadcasting() {
    let a = randn(&[2, 3, 5], 5);
    let b = randn(&[3, 1], 6).abs_for_test();
    gradcheck(|v| v[0].add(&v[1]), &[a.clone(), b.clone()]);
    gradcheck(|v| v[0].sub(&v[1]), &[a.clone(), b.clone()]);
    gradcheck(|v| v[0].mul(&v[1]), &[a.clone(), b.clone()]);
    gradcheck(|v| v[0].div(&v[1]), &[a.clone(), b.clone()]);
    gradcheck(|v| v[0].maximum(&v[1]), &[a.clone(), randn(&[5], 7)]);
    // the same tensor used twice accumulates
    gradcheck(|v| v[0].mul(&v[0])?.add(&v[0]), &[a]);
}

#[test]
fn views_and_their_gradients() {
    let x = randn(&[2, 3, 4], 8);
    let v = x.to_vec::<f32>().unwrap();
    let t = x.permute(&[2, 0, 1]).unwrap();
    assert_eq!(t.shape(), &[4, 2, 3]);
    assert!(!t.is_contiguous());
    let tv = t.to_vec::<f32>().unwrap();
    assert_eq!(tv[1], v[4]); // t[0,0,1] = x[0,1,0]
    assert!(t.same_storage(&x));
    assert_eq!(t.contiguous().unwrap().to_vec::<f32>().unwrap(), tv);
    let n = x.narrow(2, 1, 2).unwrap();
    assert_eq!(n.to_vec::<f32>().unwrap()[..2], v[1..3]);
    gradcheck(|v| v[0].permute(&[2, 0, 1])?.contiguous()?.reshape(&[8, 3])?.exp(), std::slice::from_ref(&x));
    gradcheck(|v| v[0].narrow(2, 1, 2)?.tanh(), std::slice::from_ref(&x));
    gradcheck(|v| v[0].transpose(0, 2)?.unsqueeze(1)?.squeeze(1)?.sigmoid(), std::slice::from_ref(&x));
    gradcheck(|v| v[0].narrow(1, 1, 1)?.broadcast_as(&[2, 3, 4])?.mul(&v[0]), std::slice::from_ref(&x));
    gradcheck(|v| v[0].flatten(0, 1)?.sqr(), &[x]);
}

#[test]
fn reductions() {
    let x = randn(&[3, 5, 7], 9);
    let v = x.to_vec::<f32>().unwrap();
    let s1 = x.sum(&[1], false).unwrap();
    assert_eq!(s1.shape(), &[3, 7]);
    let want: Vec<f32> = (0..21).map(|k| (0..5).map(|j| v[(k / 7) * 35 + j * 7 + k % 7]).sum()).collect();
    assert_close(&s1.to_vec::<f32>().unwrap(), &want, 1e-5, 1e-6);
    let all = x.sum_all().unwrap().to_scalar().unwrap();
    assert!((all - v.iter().sum::<f32>()).abs() < 1e-4);
    let m = x.max(2, true).unwrap();
    assert_eq!(m.shape(), &[3, 5, 1]);
    let wm: Vec<f32> = (0..15).map(|r| v[r * 7..r * 7 + 7].iter().cloned().fold(f32::MIN, f32::max)).collect();
    assert_eq!(m.to_vec::<f32>().unwrap(), wm);
    let am = x.argmax(2, false).unwrap().to_vec::<i64>().unwrap();
    for r in 0..15 {
        assert_eq!(v[r * 7 + am[r] as usize], wm[r]);
    }
    // a long reduction that takes the parallel path
    let big = Tensor::ones(&[300_001], DType::F32).unwrap();
    assert_eq!(big.sum_all().unwrap().to_scalar().unwrap(), 300_001.0);
    let wide = Tensor::ones(&[3, 70_000], DType::F32).unwrap().sum(&[0], false).unwrap();
    assert!(wide.to_vec::<f32>().unwrap().iter().all(|&s| s == 3.0));
    gradcheck(|v| v[0].sum(&[0, 2], false), std::slice::from_ref(&x));
    gradcheck(|v| v[0].mean(&[1], true), std::slice::from_ref(&x));
    gradcheck(|v| v[0].max(1, false), std::slice::from_ref(&x));
    gradcheck(|v| v[0].mean_all(), &[x]);
}

#[test]
fn dtypes_convert() {
    let x = Tensor::from_vec(vec![1.5f32, -2.25, 3.0], &[3]).unwrap();
    let b = x.to_dtype(DType::BF16).unwrap();
    assert_eq!(b.dtype(), DType::BF16);
    assert_eq!(b.to_vec_f32().unwrap(), vec![1.5, -2.25, 3.0]);
    // bf16 inputs are converted on use
    assert_eq!(b.add(&x).unwrap().to_vec::<f32>().unwrap(), vec![3.0, -4.5, 6.0]);
    let h = x.to_dtype(DType::F16).unwrap();
    assert_eq!(h.to_vec_f32().unwrap(), vec![1.5, -2.25, 3.0]);
    let i = Tensor::from_vec(vec![3i64, 4], &[2]).unwrap();
    assert_eq!(i.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
    assert!(i.exp().is_err());
    assert!(x.requires_grad().unwrap().to_dtype(DType::BF16).is_err());
}

#[test]
fn autograd_records_only_what_needs_it() {
    let w = randn(&[4, 4], 1); // frozen: no variable
    let x = randn(&[4, 4], 2).requires_grad().unwrap();
    let frozen = w.exp().unwrap();
    assert!(!frozen.tracks_grad());
    let y = x.mul(&frozen).unwrap().sum_all().unwrap();
    assert!(y.tracks_grad());
    let g = y.backward().unwrap();
    assert_eq!(g.len(), 1);
    assert_close(&g.get(&x).unwrap().to_vec::<f32>().unwrap(), &frozen.to_vec::<f32>().unwrap(), 0.0, 0.0);
    // the graph is freed by the backward pass, as PyTorch does without retain_graph
    let err = y.backward().unwrap_err().to_string();
    assert!(err.contains("already"), "{err}");
    let z = engine::no_grad_scope(|| x.exp().unwrap());
    assert!(!z.tracks_grad());
    assert!(z.backward().is_err());
    assert!(!x.exp().unwrap().detach().tracks_grad());
}

#[test]
fn display_and_creation() {
    let t = Tensor::arange(0.0, 6.0, 1.0).unwrap().reshape(&[2, 3]).unwrap();
    let s = format!("{t}");
    assert!(s.starts_with("[[0.0000, 1.0000, 2.0000],\n [3.0000, 4.0000, 5.0000]]"), "{s}");
    let k = Tensor::kaiming_uniform(&[64, 100], 5f32.sqrt(), 3).unwrap().to_vec::<f32>().unwrap();
    let bound = 1.0 / 10.0;
    assert!(k.iter().all(|v| v.abs() <= bound));
    assert!(k.iter().cloned().fold(0.0, f32::max) > 0.9 * bound);
    assert_eq!(
        Tensor::randn(&[5], 0.0, 1.0, 9).unwrap().to_vec::<f32>().unwrap(),
        Tensor::randn(&[5], 0.0, 1.0, 9).unwrap().to_vec::<f32>().unwrap()
    );
    assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).is_err());
}
