//! Every kernel against a CPU reference computed here (naive f64 loops, finite differences for the norm
//! backward), on random inputs whose shapes are no tile multiples. Tolerances: f32 kernels 1e-5 relative
//! to the scale of the computation (sum of |terms|); tensor-core GEMM 1e-2 against f32 inputs (bf16
//! rounding) and 1e-5 against the bf16-rounded inputs. Without a GPU every test returns early after
//! printing why, unless REQUIRE_GPU=1, where a missing GPU fails them.
#![cfg(feature = "driver")]

mod common;

use common::device;
use cuda::ops::{self, AdamW, CrossEntropy, Norm, Rope, Strided};
use cuda::{Device, GemmShape};
use kernels::ops::{Binary, Reduce, Unary};

/// Deterministic values in [-1, 1) (a 64-bit LCG; no dependency needed).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// |got - want| <= rel * scale (+ tiny absolute slack for values near 0).
fn assert_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let tol = rel * scale[i].max(1.0) + 1e-7;
        let err = (f64::from(got[i]) - want[i]).abs();
        assert!(err <= tol, "{what}[{i}]: got {}, want {}, |err| {err:e} > {tol:e}", got[i], want[i]);
    }
}

fn close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    let scale: Vec<f64> = want.iter().map(|w| w.abs()).collect();
    assert_close(what, got, want, &scale, rel);
}

#[test]
fn opening_a_missing_device_is_a_clear_error() {
    let e = Device::new(9999).unwrap_err().to_string();
    assert!(e.starts_with("CUDA driver: ") && e.contains("failed: "), "{e}");
}

/// Reference GEMM in f64 with the kernel's strides: (values, scales = sum |a b|).
fn gemm_ref(a: &[f32], b: &[f32], c0: &[f32], g: &GemmShape) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; c0.len()];
    let mut scale = vec![0.0; c0.len()];
    for z in 0..g.batch {
        for i in 0..g.m {
            for j in 0..g.n {
                let (mut s, mut sa) = (0.0f64, 0.0f64);
                for p in 0..g.k {
                    let x = f64::from(a[z * g.a_batch + i * g.a_m + p * g.a_k]);
                    let y = f64::from(b[z * g.b_batch + p * g.b_k + j * g.b_n]);
                    s += x * y;
                    sa += (x * y).abs();
                }
                let at = z * g.c_batch + i * g.c_m + j;
                out[at] = f64::from(g.alpha) * s + f64::from(g.beta) * f64::from(c0[at]);
                scale[at] = f64::from(g.alpha.abs()) * sa + f64::from(g.beta.abs() * c0[at].abs());
            }
        }
    }
    (out, scale)
}

#[test]
fn gemm_f32_matches_the_reference_with_transposes_batches_and_beta() {
    let Some(dev) = device() else { return };
    for (m, n, k, batch) in [(1, 1, 1, 1), (77, 131, 45, 3), (130, 257, 9, 1)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut g = GemmShape::row_major(m, n, k, batch, ta, tb);
            g.alpha = 0.5;
            g.beta = if ta { 2.0 } else { 0.0 };
            let a = random(m * k * batch, 1);
            let b = random(k * n * batch, 2);
            let c0 = random(m * n * batch, 3);
            let (da, db, mut dc) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap(), dev.upload(&c0).unwrap());
            ops::gemm_f32(&dev, &da, &db, &mut dc, &g).unwrap();
            let (want, scale) = gemm_ref(&a, &b, &c0, &g);
            assert_close(
                &format!("gemm_f32 {m}x{n}x{k} ta={ta} tb={tb}"),
                &dev.download(&dc).unwrap(),
                &want,
                &scale,
                1e-5,
            );
        }
    }
}

fn to_half(v: &[f32], bf16: bool) -> (Vec<u16>, Vec<f32>) {
    let bits: Vec<u16> = v
        .iter()
        .map(|&x| if bf16 { half::bf16::from_f32(x).to_bits() } else { half::f16::from_f32(x).to_bits() })
        .collect();
    let back = bits
        .iter()
        .map(|&h| if bf16 { half::bf16::from_bits(h).to_f32() } else { half::f16::from_bits(h).to_f32() })
        .collect();
    (bits, back)
}

#[test]
fn tensor_core_gemm_matches_the_reference_for_bf16_and_f16() {
    let Some(dev) = device() else { return };
    for bf16 in [true, false] {
        for (m, n, k, batch, ta, tb) in
            [(77, 131, 45, 2, false, false), (129, 200, 70, 1, true, true), (16, 8, 16, 1, false, true)]
        {
            let g = GemmShape::row_major(m, n, k, batch, ta, tb);
            let a = random(m * k * batch, 4);
            let b = random(k * n * batch, 5);
            let ((ha, ra), (hb, rb)) = (to_half(&a, bf16), to_half(&b, bf16));
            let (da, db, mut dc) =
                (dev.upload(&ha).unwrap(), dev.upload(&hb).unwrap(), dev.zeros::<f32>(m * n * batch).unwrap());
            ops::gemm_half(&dev, &da, &db, &mut dc, &g, bf16).unwrap();
            let got = dev.download(&dc).unwrap();
            let c0 = vec![0.0; m * n * batch];
            let what = format!("gemm bf16={bf16} {m}x{n}x{k} ta={ta} tb={tb}");
            let (want, scale) = gemm_ref(&ra, &rb, &c0, &g);
            assert_close(&format!("{what} (rounded inputs)"), &got, &want, &scale, 1e-5);
            let (want, scale) = gemm_ref(&a, &b, &c0, &g);
            assert_close(&format!("{what} (f32 inputs)"), &got, &want, &scale, 1e-2);
        }
    }
}

/// `gemm_half` / `gemm_half_at` in all four layouts (A row-major or transposed, B row-major or [n, k]), on
/// shapes and offsets that take the cp.async / ldmatrix kernel (aligned, 8-element runs: padded leading
/// dims, an 8-element offset, batches, alpha / beta, partial tiles, k no multiple of 32) and on ones that
/// fall back to the plain kernel (a 3-element offset; dims no multiple of 8). `half_gemm_fast_ok` says
/// which kernel runs; both must match the reference on the rounded inputs.
#[test]
fn tensor_core_gemm_fast_and_fallback_paths_match_the_reference_in_every_layout() {
    let Some(dev) = device() else { return };
    // (m, n, k, batch, leading-dim padding, A offset, takes the fast kernel)
    let cases = [
        (136, 200, 136, 2, 8, 8, true),
        (40, 24, 16, 1, 0, 0, true),
        (136, 72, 40, 1, 0, 3, false),
        (37, 45, 20, 2, 0, 0, false),
    ];
    for bf16 in [true, false] {
        for (m, n, k, batch, pad, a_off, fast) in cases {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let lda = if ta { m } else { k } + pad;
                let ldb = if tb { k } else { n } + pad;
                let g = GemmShape {
                    m,
                    n,
                    k,
                    batch,
                    a_m: if ta { 1 } else { lda },
                    a_k: if ta { lda } else { 1 },
                    b_k: if tb { 1 } else { ldb },
                    b_n: if tb { ldb } else { 1 },
                    c_m: n,
                    a_batch: lda * if ta { k } else { m },
                    b_batch: ldb * if tb { n } else { k },
                    c_batch: m * n,
                    alpha: 0.5,
                    beta: if batch > 1 { 2.0 } else { 0.0 },
                };
                let a = random(a_off + g.a_batch * batch, 6);
                let b = random(g.b_batch * batch, 7);
                let c0 = random(m * n * batch, 8);
                let ((ha, ra), (hb, rb)) = (to_half(&a, bf16), to_half(&b, bf16));
                let (da, db, mut dc) = (dev.upload(&ha).unwrap(), dev.upload(&hb).unwrap(), dev.upload(&c0).unwrap());
                let (cuda::Arg::Ptr(pa), cuda::Arg::Ptr(pb)) = (da.arg_at(a_off), db.arg()) else { unreachable!() };
                let what = format!("gemm bf16={bf16} {m}x{n}x{k} batch {batch} ta={ta} tb={tb} A offset {a_off}");
                assert_eq!(ops::half_gemm_fast_ok(&g, pa, pb), fast, "{what}: kernel choice");
                if a_off == 0 {
                    ops::gemm_half(&dev, &da, &db, &mut dc, &g, bf16).unwrap();
                } else {
                    ops::gemm_half_at(&dev, &da, a_off, &db, 0, &mut dc, 0, &g, bf16).unwrap();
                }
                let (want, scale) = gemm_ref(&ra[a_off..], &rb, &c0, &g);
                assert_close(&what, &dev.download(&dc).unwrap(), &want, &scale, 1e-5);
            }
        }
    }
}

fn unary_ref(op: Unary, x: f64, s: f64) -> f64 {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let erf = |x: f64| {
        // Abramowitz-Stegun 7.1.26 is too coarse for 1e-5; integrate exp(-t^2) by Simpson instead.
        let n = 200;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut acc = f(0.0) + f(x);
        for i in 1..n {
            acc += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        acc * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    };
    match op {
        Unary::Neg => -x,
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Relu => x.max(0.0),
        Unary::GeluTanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
        Unary::GeluErf => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        Unary::Silu => x * sig(x),
        Unary::Tanh => x.tanh(),
        Unary::Sigmoid => sig(x),
        Unary::Sqrt => x.sqrt(),
        Unary::Rsqrt => 1.0 / x.sqrt(),
        Unary::Abs => x.abs(),
        Unary::Square => x * x,
        Unary::Recip => 1.0 / x,
        Unary::Scale => x * s,
        Unary::AddScalar => x + s,
        Unary::PowScalar => x.powf(s),
        Unary::Copy => x,
    }
}

#[test]
fn unary_ops_on_a_transposed_view() {
    let Some(dev) = device() else { return };
    let (r, c) = (37, 29);
    // x stored [c, r]; viewed as [r, c] with strides (1, r). Positive inputs for log/sqrt/pow.
    let x: Vec<f32> = random(r * c, 6).iter().map(|v| v * 2.0 + 2.5).collect();
    let dx = dev.upload(&x).unwrap();
    let mut dy = dev.zeros::<f32>(r * c).unwrap();
    let all = Unary::ALL;
    for op in all {
        ops::unary(&dev, Strided::new(&dx, &[1, r as isize]), &mut dy, &[r, c], op, 1.5).unwrap();
        let want: Vec<f64> = (0..r * c).map(|i| unary_ref(op, f64::from(x[(i % c) * r + i / c]), 1.5)).collect();
        close(&format!("{op:?}"), &dev.download(&dy).unwrap(), &want, 1e-5);
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    let Some(dev) = device() else { return };
    let (r, c) = (33, 70);
    let a: Vec<f32> = random(r * c, 7).iter().map(|v| v + 1.5).collect();
    let b: Vec<f32> = random(c, 8).iter().map(|v| v + 1.5).collect(); // one row, broadcast over r
    let (da, db) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
    let mut out = dev.zeros::<f32>(r * c).unwrap();
    for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Max, Binary::Min, Binary::Pow] {
        ops::binary(&dev, Strided::new(&da, &[c as isize, 1]), Strided::new(&db, &[0, 1]), &mut out, &[r, c], op)
            .unwrap();
        let want: Vec<f64> = (0..r * c)
            .map(|i| {
                let (x, y) = (f64::from(a[i]), f64::from(b[i % c]));
                match op {
                    Binary::Add => x + y,
                    Binary::Sub => x - y,
                    Binary::Mul => x * y,
                    Binary::Div => x / y,
                    Binary::Max => x.max(y),
                    Binary::Min => x.min(y),
                    _ => x.powf(y),
                }
            })
            .collect();
        close(&format!("{op:?}"), &dev.download(&out).unwrap(), &want, 1e-5);
    }
    // Activation backwards: d/dx of the forward at x (finite differences of the f64 reference).
    let x: Vec<f32> = random(r * c, 9).iter().map(|v| v * 3.0).collect();
    let dx = dev.upload(&x).unwrap();
    for (op, f) in [
        (Binary::ReluBwd, Unary::Relu),
        (Binary::SiluBwd, Unary::Silu),
        (Binary::GeluTanhBwd, Unary::GeluTanh),
        (Binary::GeluErfBwd, Unary::GeluErf),
        (Binary::TanhBwd, Unary::Tanh),
        (Binary::SigmoidBwd, Unary::Sigmoid),
    ] {
        ops::binary(&dev, Strided::new(&dx, &[c as isize, 1]), Strided::new(&db, &[0, 1]), &mut out, &[r, c], op)
            .unwrap();
        let h = 1e-5;
        let want: Vec<f64> = (0..r * c)
            .map(|i| {
                let xi = f64::from(x[i]);
                let d = (unary_ref(f, xi + h, 0.0) - unary_ref(f, xi - h, 0.0)) / (2.0 * h);
                d * f64::from(b[i % c])
            })
            .collect();
        close(&format!("{op:?}"), &dev.download(&out).unwrap(), &want, 1e-4);
    }
}

#[test]
fn reductions_over_the_last_and_a_middle_dim() {
    let Some(dev) = device() else { return };
    let (outer, len, inner) = (5, 300, 7);
    let x = random(outer * len * inner, 10);
    let dx = dev.upload(&x).unwrap();
    for op in [Reduce::Sum, Reduce::Max, Reduce::Mean] {
        for inner in [1, inner] {
            let mut y = dev.zeros::<f32>(outer * inner).unwrap();
            ops::reduce(&dev, &dx, &mut y, outer, len, inner, op).unwrap();
            let (mut want, mut scale) = (vec![], vec![]);
            for o in 0..outer {
                for i in 0..inner {
                    let v: Vec<f64> = (0..len).map(|j| f64::from(x[(o * len + j) * inner + i])).collect();
                    let abs: f64 = v.iter().map(|a| a.abs()).sum();
                    let (w, s) = match op {
                        Reduce::Sum => (v.iter().sum(), abs),
                        Reduce::Max => (v.iter().cloned().fold(f64::MIN, f64::max), 1.0),
                        Reduce::Mean => (v.iter().sum::<f64>() / len as f64, abs / len as f64),
                    };
                    want.push(w);
                    scale.push(s);
                }
            }
            assert_close(&format!("{op:?} inner={inner}"), &dev.download(&y).unwrap(), &want, &scale, 1e-5);
        }
    }
}

fn softmax_ref(row: &[f32]) -> Vec<f64> {
    let mx = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let e: Vec<f64> = row.iter().map(|&v| (f64::from(v) - mx).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn softmax_and_log_softmax_forward_and_backward() {
    let Some(dev) = device() else { return };
    let (rows, cols) = (9, 1500);
    let x: Vec<f32> = random(rows * cols, 11).iter().map(|v| v * 8.0).collect();
    let dyv = random(rows * cols, 12);
    let (dx_in, ddy) = (dev.upload(&x).unwrap(), dev.upload(&dyv).unwrap());
    let (mut y, mut dx) = (dev.zeros::<f32>(rows * cols).unwrap(), dev.zeros::<f32>(rows * cols).unwrap());
    for log in [false, true] {
        ops::softmax(&dev, &dx_in, &mut y, rows, cols, log).unwrap();
        ops::softmax_bwd(&dev, &y, &ddy, &mut dx, rows, cols, log).unwrap();
        let (mut want_y, mut want_dx) = (vec![], vec![]);
        for r in 0..rows {
            let p = softmax_ref(&x[r * cols..(r + 1) * cols]);
            let g = &dyv[r * cols..(r + 1) * cols];
            let dot: f64 = if log {
                g.iter().map(|&v| f64::from(v)).sum()
            } else {
                (0..cols).map(|i| p[i] * f64::from(g[i])).sum()
            };
            for i in 0..cols {
                want_y.push(if log { p[i].ln() } else { p[i] });
                want_dx.push(if log { f64::from(g[i]) - p[i] * dot } else { p[i] * (f64::from(g[i]) - dot) });
            }
        }
        close(&format!("softmax log={log}"), &dev.download(&y).unwrap(), &want_y, 1e-5);
        // The backward's sum runs over 1500 terms of size ~1: scale by the row's sum |dy|.
        let scale = vec![cols as f64 / 10.0; rows * cols];
        assert_close(&format!("softmax_bwd log={log}"), &dev.download(&dx).unwrap(), &want_dx, &scale, 1e-5);
    }
}

#[test]
fn cross_entropy_skips_ignored_rows() {
    let Some(dev) = device() else { return };
    let (rows, cols) = (6, 1001);
    let x: Vec<f32> = random(rows * cols, 13).iter().map(|v| v * 5.0).collect();
    let t: Vec<i32> = vec![3, -100, 1000, 0, -100, 517];
    let (dx_in, dt) = (dev.upload(&x).unwrap(), dev.upload(&t).unwrap());
    let ce = CrossEntropy { logits: &dx_in, targets: &dt, host_targets: &t, rows, cols, ignore_index: -100 };
    let (mut loss, mut lse, mut grad) =
        (dev.zeros::<f32>(rows).unwrap(), dev.zeros::<f32>(rows).unwrap(), dev.zeros::<f32>(rows * cols).unwrap());
    ce.forward(&dev, &mut loss, &mut lse).unwrap();
    let scale = 0.25f32;
    ce.backward(&dev, &lse, &mut grad, scale).unwrap();
    let (mut want_loss, mut want_grad) = (vec![], vec![]);
    for r in 0..rows {
        let p = softmax_ref(&x[r * cols..(r + 1) * cols]);
        let ignored = t[r] == -100;
        want_loss.push(if ignored { 0.0 } else { -p[t[r] as usize].ln() });
        for (i, pi) in p.iter().enumerate() {
            let onehot = if i as i32 == t[r] { 1.0 } else { 0.0 };
            want_grad.push(if ignored { 0.0 } else { f64::from(scale) * (pi - onehot) });
        }
    }
    close("cross_entropy loss", &dev.download(&loss).unwrap(), &want_loss, 1e-5);
    close("cross_entropy grad", &dev.download(&grad).unwrap(), &want_grad, 1e-5);
    let bad = [3, -100, 1001, 0, -100, 517];
    let ce = CrossEntropy { host_targets: &bad, ..ce };
    assert!(ce.forward(&dev, &mut loss, &mut lse).unwrap_err().to_string().contains("target 1001 out of range"));
}

/// f64 layer/RMS norm of one row with weight and bias.
fn norm_row(x: &[f64], w: &[f64], b: &[f64], eps: f64, rms: bool) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = if rms { 0.0 } else { x.iter().sum::<f64>() / n };
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    (0..x.len()).map(|i| (x[i] - mean) * rstd * w[i] + if rms { 0.0 } else { b[i] }).collect()
}

#[test]
fn layer_norm_and_rms_norm_forward_and_backward_match_finite_differences() {
    let Some(dev) = device() else { return };
    let (rows, cols, eps) = (3, 37, 1e-5f32);
    let x = random(rows * cols, 14);
    let w: Vec<f32> = random(cols, 15).iter().map(|v| v + 1.0).collect();
    let bias = random(cols, 16);
    let dyv = random(rows * cols, 17);
    let f64s = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
    let (xd, wd, bd, dyd) = (f64s(&x), f64s(&w), f64s(&bias), f64s(&dyv));
    let (gx, gw, gb, gdy) =
        (dev.upload(&x).unwrap(), dev.upload(&w).unwrap(), dev.upload(&bias).unwrap(), dev.upload(&dyv).unwrap());
    for rms in [false, true] {
        let norm = Norm { rows, cols, eps, rms, weight: Some(&gw), bias: if rms { None } else { Some(&gb) } };
        let mut y = dev.zeros::<f32>(rows * cols).unwrap();
        let (mut mean, mut rstd) = (dev.zeros::<f32>(rows).unwrap(), dev.zeros::<f32>(rows).unwrap());
        norm.forward(&dev, &gx, &mut y, if rms { None } else { Some(&mut mean) }, &mut rstd).unwrap();
        let mut dx = dev.zeros::<f32>(rows * cols).unwrap();
        let (mut dw, mut db) = (dev.zeros::<f32>(cols).unwrap(), dev.zeros::<f32>(cols).unwrap());
        norm.backward(
            &dev,
            &gx,
            if rms { None } else { Some(&mean) },
            &rstd,
            &gdy,
            &mut dx,
            Some(&mut dw),
            if rms { None } else { Some(&mut db) },
        )
        .unwrap();
        // Reference: loss = sum(dy * y); gradients by central differences in f64.
        let loss = |xs: &[f64], ws: &[f64], bs: &[f64]| -> f64 {
            (0..rows)
                .map(|r| {
                    let y = norm_row(&xs[r * cols..(r + 1) * cols], ws, bs, f64::from(eps), rms);
                    (0..cols).map(|i| y[i] * dyd[r * cols + i]).sum::<f64>()
                })
                .sum()
        };
        let h = 1e-6;
        let fd = |v: &[f64], i: usize, f: &dyn Fn(&[f64]) -> f64| {
            let (mut p, mut m) = (v.to_vec(), v.to_vec());
            p[i] += h;
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h)
        };
        let want_y: Vec<f64> =
            (0..rows).flat_map(|r| norm_row(&xd[r * cols..(r + 1) * cols], &wd, &bd, f64::from(eps), rms)).collect();
        let want_dx: Vec<f64> = (0..rows * cols).map(|i| fd(&xd, i, &|v| loss(v, &wd, &bd))).collect();
        let want_dw: Vec<f64> = (0..cols).map(|i| fd(&wd, i, &|v| loss(&xd, v, &bd))).collect();
        close(&format!("norm rms={rms} y"), &dev.download(&y).unwrap(), &want_y, 1e-5);
        close(&format!("norm rms={rms} dx"), &dev.download(&dx).unwrap(), &want_dx, 1e-4);
        close(&format!("norm rms={rms} dw"), &dev.download(&dw).unwrap(), &want_dw, 1e-4);
        if !rms {
            let want_db: Vec<f64> = (0..cols).map(|i| fd(&bd, i, &|v| loss(&xd, &wd, v))).collect();
            close("layer norm db", &dev.download(&db).unwrap(), &want_db, 1e-4);
        }
    }
}

#[test]
fn embedding_gather_and_scatter_add_with_repeated_ids() {
    let Some(dev) = device() else { return };
    let (vocab, dim) = (50, 19);
    let table = random(vocab * dim, 18);
    let ids: Vec<u32> = vec![3, 49, 3, 0, 17, 3];
    let (gt, gi) = (dev.upload(&table).unwrap(), dev.upload(&ids).unwrap());
    let mut out = dev.zeros::<f32>(ids.len() * dim).unwrap();
    ops::embedding(&dev, &gi, &ids, &gt, &mut out, vocab, dim).unwrap();
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| table[i as usize * dim..(i as usize + 1) * dim].iter().map(|&v| f64::from(v)))
        .collect();
    close("embedding", &dev.download(&out).unwrap(), &want, 0.0);
    let dout = random(ids.len() * dim, 19);
    let gdo = dev.upload(&dout).unwrap();
    let mut dtable = dev.zeros::<f32>(vocab * dim).unwrap();
    ops::embedding_bwd(&dev, &gi, &ids, &gdo, &mut dtable, vocab, dim).unwrap();
    let mut want = vec![0.0f64; vocab * dim];
    for (n, &i) in ids.iter().enumerate() {
        for d in 0..dim {
            want[i as usize * dim + d] += f64::from(dout[n * dim + d]);
        }
    }
    close("embedding_bwd", &dev.download(&dtable).unwrap(), &want, 1e-6);
    assert!(ops::embedding(&dev, &gi, &[3, 50], &gt, &mut out, vocab, dim).unwrap_err().to_string().contains("id 50"));
}

#[test]
fn rope_forward_matches_rotate_half_and_transpose_is_its_adjoint() {
    let Some(dev) = device() else { return };
    let (batch, heads, seq, hd) = (2, 3, 5, 8);
    let n = batch * heads * seq * hd;
    let x = random(n, 20);
    let yv = random(n, 21);
    let half = hd / 2;
    let (mut cos, mut sin) = (vec![0f32; seq * hd], vec![0f32; seq * hd]);
    for t in 0..seq {
        for i in 0..half {
            let a = (t + 3) as f32 / 10000f32.powf(2.0 * i as f32 / hd as f32);
            for j in [i, i + half] {
                cos[t * hd + j] = a.cos();
                sin[t * hd + j] = a.sin();
            }
        }
    }
    let rope = Rope { batch, heads, seq, head_dim: hd, per_batch: false };
    let (gx, gy, gc, gs) =
        (dev.upload(&x).unwrap(), dev.upload(&yv).unwrap(), dev.upload(&cos).unwrap(), dev.upload(&sin).unwrap());
    let (mut rx, mut rty) = (dev.zeros::<f32>(n).unwrap(), dev.zeros::<f32>(n).unwrap());
    rope.apply(&dev, &gx, &gc, &gs, &mut rx, false).unwrap();
    rope.apply(&dev, &gy, &gc, &gs, &mut rty, true).unwrap();
    let mut want = vec![0f64; n];
    for row in 0..batch * heads * seq {
        let t = row % seq;
        for j in 0..hd {
            let rot = if j < half { -x[row * hd + j + half] } else { x[row * hd + j - half] };
            want[row * hd + j] =
                f64::from(x[row * hd + j]) * f64::from(cos[t * hd + j]) + f64::from(rot) * f64::from(sin[t * hd + j]);
        }
    }
    let rx = dev.download(&rx).unwrap();
    close("rope", &rx, &want, 1e-5);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum::<f64>();
    let (lhs, rhs) = (dot(&rx, &yv), dot(&x, &dev.download(&rty).unwrap()));
    assert!((lhs - rhs).abs() < 1e-4, "<Rx, y> = {lhs} but <x, R^T y> = {rhs}");
}

#[test]
fn attention_softmax_applies_causal_padding_and_prefix_masks() {
    let Some(dev) = device() else { return };
    let (batch, heads, q, k) = (2, 2, 5, 7); // a 2-position key/value prefix
    let s = random(batch * heads * q * k, 22);
    let valid: Vec<u8> = vec![1, 1, 1, 1, 1, 0, 0, /* batch 1: */ 0, 0, 0, 0, 0, 0, 0];
    let (mut gs, gv) = (dev.upload(&s).unwrap(), dev.upload(&valid).unwrap());
    ops::attention_softmax(&dev, &mut gs, Some(&gv), batch, heads, q, k, true).unwrap();
    let mut want = vec![0f64; s.len()];
    for row in 0..batch * heads * q {
        let (qi, b) = (row % q, row / (heads * q));
        let vis: Vec<usize> = (0..k).filter(|&j| valid[b * k + j] == 1 && j <= qi + (k - q)).collect();
        if vis.is_empty() {
            continue; // fully masked: zeros
        }
        let mx = vis.iter().map(|&j| f64::from(s[row * k + j])).fold(f64::MIN, f64::max);
        let z: f64 = vis.iter().map(|&j| (f64::from(s[row * k + j]) - mx).exp()).sum();
        for &j in &vis {
            want[row * k + j] = (f64::from(s[row * k + j]) - mx).exp() / z;
        }
    }
    close("attention_softmax", &dev.download(&gs).unwrap(), &want, 1e-5);
}

#[test]
fn dropout_mask_is_the_cpu_philox_mask() {
    let Some(dev) = device() else { return };
    let n = 10_007;
    let x = random(n, 23);
    let (p, seed, offset) = (0.3f32, 0x1234_5678_9abc_def0u64, 42u64);
    let gx = dev.upload(&x).unwrap();
    let mut y = dev.zeros::<f32>(n).unwrap();
    ops::dropout(&dev, &gx, &mut y, n, p, seed, offset).unwrap();
    let want: Vec<f64> = (0..n)
        .map(|i| {
            if kernels::philox::dropout_keep(i as u64, p, seed, offset) {
                f64::from(x[i] * (1.0 / (1.0 - p)))
            } else {
                0.0
            }
        })
        .collect();
    close("dropout", &dev.download(&y).unwrap(), &want, 1e-6);
}

#[test]
fn adamw_and_sgd_follow_the_torch_update_rules_over_three_steps() {
    let Some(dev) = device() else { return };
    let n = 1003;
    let p0 = random(n, 24);
    let grads: Vec<Vec<f32>> = (0..3).map(|s| random(n, 25 + s)).collect();
    let h = AdamW { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, step: 0 };
    let (mut gp, mut gm, mut gv) =
        (dev.upload(&p0).unwrap(), dev.zeros::<f32>(n).unwrap(), dev.zeros::<f32>(n).unwrap());
    let (mut p, mut m, mut v) = (p0.iter().map(|&a| f64::from(a)).collect::<Vec<_>>(), vec![0f64; n], vec![0f64; n]);
    for (s, g) in grads.iter().enumerate() {
        let gg = dev.upload(g).unwrap();
        ops::adamw(&dev, &mut gp, &gg, &mut gm, &mut gv, &AdamW { step: s as u32 + 1, ..h }).unwrap();
        let t = s as i32 + 1;
        for i in 0..n {
            let gi = f64::from(g[i]);
            p[i] *= 1.0 - f64::from(h.lr * h.weight_decay);
            m[i] = 0.9 * m[i] + 0.1 * gi;
            v[i] = 0.999 * v[i] + 0.001 * gi * gi;
            let (mh, vh) = (m[i] / (1.0 - 0.9f64.powi(t)), v[i] / (1.0 - 0.999f64.powi(t)));
            p[i] -= f64::from(h.lr) * mh / (vh.sqrt() + 1e-8);
        }
    }
    close("adamw", &dev.download(&gp).unwrap(), &p, 1e-5);
    let (mut gp, mut gb) = (dev.upload(&p0).unwrap(), dev.zeros::<f32>(n).unwrap());
    let (mut p, mut b) = (p0.iter().map(|&a| f64::from(a)).collect::<Vec<_>>(), vec![0f64; n]);
    for (s, g) in grads.iter().enumerate() {
        let gg = dev.upload(g).unwrap();
        ops::sgd(&dev, &mut gp, &gg, Some(&mut gb), 0.1, 0.9, 0.01, s == 0).unwrap();
        for i in 0..n {
            let d = f64::from(g[i]) + 0.01 * p[i];
            b[i] = if s == 0 { d } else { 0.9 * b[i] + d };
            p[i] -= 0.1 * b[i];
        }
    }
    close("sgd", &dev.download(&gp).unwrap(), &p, 1e-5);
}

#[test]
fn casts_round_to_nearest_even_like_the_half_crate() {
    let Some(dev) = device() else { return };
    let mut x = random(4099, 26);
    x.extend([0.0, -0.0, 1e-40, 65504.0, 70000.0, f32::INFINITY, f32::NEG_INFINITY, 1.0 + 1.0 / 256.0]);
    let gx = dev.upload(&x).unwrap();
    for bf16 in [true, false] {
        let mut h = dev.zeros::<u16>(x.len()).unwrap();
        ops::cast_to_half(&dev, &gx, &mut h, bf16).unwrap();
        let (want_bits, want_back) = to_half(&x, bf16);
        let bits = dev.download(&h).unwrap();
        assert_eq!(bits, want_bits, "bf16={bf16}");
        let mut back = dev.zeros::<f32>(x.len()).unwrap();
        ops::cast_from_half(&dev, &h, &mut back, bf16).unwrap();
        let back = dev.download(&back).unwrap();
        assert!(back.iter().zip(&want_back).all(|(a, b)| a.to_bits() == b.to_bits()), "bf16={bf16} widening");
    }
}
