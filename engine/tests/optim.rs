//! Optimizers against naive f64 re-implementations of PyTorch's update formulas (and a few values
//! worked out by hand), gradient clipping against a direct computation, LR schedules against their
//! closed forms, and exact resumption from exported optimizer state.
mod common;
use common::*;
use engine::optim::{clip_grad_norm, grad_norm, AdamW, LrSchedule, Optimizer, Sgd};
use engine::{Grads, Result, Tensor};

/// loss = Σ c·(p − t)², so ∂loss/∂p = 2c(p − t).
struct Quadratic {
    c: Vec<f32>,
    t: Vec<f32>,
}

impl Quadratic {
    fn new(n: usize, seed: u64) -> Self {
        let c = Tensor::rand_uniform(&[n], 0.5, 2.0, seed).unwrap().to_vec::<f32>().unwrap();
        let t = randn(&[n], seed + 1).to_vec::<f32>().unwrap();
        Quadratic { c, t }
    }
    fn grads(&self, p: &Tensor) -> Result<Grads> {
        let n = self.c.len();
        let c = Tensor::from_slice(&self.c, &[n])?.reshape(p.shape())?;
        let t = Tensor::from_slice(&self.t, &[n])?.reshape(p.shape())?;
        p.sub(&t)?.sqr()?.mul(&c)?.sum_all()?.backward()
    }
    fn grad_f64(&self, p: &[f64]) -> Vec<f64> {
        p.iter().enumerate().map(|(j, &x)| 2.0 * self.c[j] as f64 * (x - self.t[j] as f64)).collect()
    }
}

fn assert_close_f64(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len());
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= atol + rtol * w.abs(), "{what}[{j}]: got {g}, want {w}");
    }
}

/// torch.optim.SGD's update, in f64.
fn sgd_reference(
    q: &Quadratic,
    p0: &[f32],
    steps: usize,
    lr: f64,
    momentum: f64,
    dampening: f64,
    wd: f64,
    nesterov: bool,
) -> Vec<f64> {
    let mut p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let mut buf: Option<Vec<f64>> = None;
    for _ in 0..steps {
        let mut d = q.grad_f64(&p);
        for j in 0..p.len() {
            d[j] += wd * p[j];
        }
        if momentum != 0.0 {
            let b = match buf.take() {
                None => d.clone(),
                Some(b) => b.iter().zip(&d).map(|(b, d)| momentum * b + (1.0 - dampening) * d).collect(),
            };
            if nesterov {
                for j in 0..p.len() {
                    d[j] += momentum * b[j];
                }
            } else {
                d = b.clone();
            }
            buf = Some(b);
        }
        for j in 0..p.len() {
            p[j] -= lr * d[j];
        }
    }
    p
}

/// torch.optim.AdamW's update, in f64.
fn adamw_reference(q: &Quadratic, p0: &[f32], steps: usize, lr: f64, b1: f64, b2: f64, eps: f64, wd: f64) -> Vec<f64> {
    let mut p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    for t in 1..=steps {
        let g = q.grad_f64(&p);
        for j in 0..p.len() {
            p[j] *= 1.0 - lr * wd;
            m[j] = b1 * m[j] + (1.0 - b1) * g[j];
            v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
            let mhat = m[j] / (1.0 - b1.powi(t as i32));
            let vhat = v[j] / (1.0 - b2.powi(t as i32));
            p[j] -= lr * mhat / (vhat.sqrt() + eps);
        }
    }
    p
}

fn run(opt: &mut dyn Optimizer, q: &Quadratic, p: &Tensor, steps: usize) {
    for _ in 0..steps {
        let g = q.grads(p).unwrap();
        opt.step(std::slice::from_ref(p), &g).unwrap();
    }
}

#[test]
fn sgd_matches_reference() {
    let n = 23;
    let q = Quadratic::new(n, 10);
    let cases: [(f32, f32, f32, f32, bool); 5] = [
        (0.05, 0.0, 0.0, 0.0, false),
        (0.05, 0.0, 0.0, 0.1, false),
        (0.05, 0.9, 0.0, 0.0, false),
        (0.03, 0.8, 0.3, 0.05, false),
        (0.04, 0.9, 0.0, 0.02, true),
    ];
    for (lr, mom, damp, wd, nest) in cases {
        let p0 = randn(&[n], 3).to_vec::<f32>().unwrap();
        let p = Tensor::from_slice(&p0, &[n]).unwrap().requires_grad().unwrap();
        let mut opt = Sgd::new(lr).with_momentum(mom).with_dampening(damp).with_weight_decay(wd).with_nesterov(nest);
        run(&mut opt, &q, &p, 5);
        let want = sgd_reference(&q, &p0, 5, lr as f64, mom as f64, damp as f64, wd as f64, nest);
        assert_close_f64(&p.to_vec::<f32>().unwrap(), &want, 1e-5, 1e-6, &format!("sgd {lr} {mom} {damp} {wd} {nest}"));
    }
}

#[test]
fn sgd_momentum_by_hand() {
    // loss = p², p0 = 1, lr 0.1, momentum 0.9: g0 = 2, b = 2, p1 = 0.8; g1 = 1.6, b = 3.4, p2 = 0.46.
    let p = Tensor::from_vec(vec![1.0f32], &[1]).unwrap().requires_grad().unwrap();
    let mut opt = Sgd::new(0.1).with_momentum(0.9);
    let mut got = vec![];
    for _ in 0..2 {
        let g = p.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        opt.step(std::slice::from_ref(&p), &g).unwrap();
        got.push(p.to_scalar().unwrap());
    }
    assert_close(&got, &[0.8, 0.46], 1e-6, 1e-7);
    // Nesterov: d = g + 0.9·b = 2 + 1.8 = 3.8 → p1 = 1 − 0.38 = 0.62.
    let p = Tensor::from_vec(vec![1.0f32], &[1]).unwrap().requires_grad().unwrap();
    let mut opt = Sgd::new(0.1).with_momentum(0.9).with_nesterov(true);
    let g = p.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    opt.step(std::slice::from_ref(&p), &g).unwrap();
    assert_close(&[p.to_scalar().unwrap()], &[0.62], 1e-6, 1e-7);
}

#[test]
fn sgd_rejects_bad_settings() {
    let p = [Tensor::zeros(&[2], engine::DType::F32).requires_grad().unwrap()];
    let g = Grads::new();
    assert!(Sgd::new(0.1).with_nesterov(true).step(&p, &g).is_err());
    assert!(Sgd::new(0.1).with_momentum(0.9).with_dampening(0.1).with_nesterov(true).step(&p, &g).is_err());
    assert!(Sgd::new(-1.0).step(&p, &g).is_err());
    assert!(AdamW::new(0.1).with_betas(1.0, 0.999).step(&p, &g).is_err());
    assert!(AdamW::new(f32::NAN).step(&p, &g).is_err());
}

#[test]
fn adamw_matches_reference() {
    let n = 19;
    let q = Quadratic::new(n, 20);
    let cases: [(f32, f32, f32, f32, f32); 3] =
        [(1e-3, 0.9, 0.999, 1e-8, 0.01), (0.05, 0.8, 0.99, 1e-6, 0.1), (0.02, 0.3, 0.9, 1e-3, 0.0)];
    for (lr, b1, b2, eps, wd) in cases {
        let p0 = randn(&[n], 5).to_vec::<f32>().unwrap();
        let p = Tensor::from_slice(&p0, &[n]).unwrap().requires_grad().unwrap();
        let mut opt = AdamW::new(lr).with_betas(b1, b2).with_eps(eps).with_weight_decay(wd);
        run(&mut opt, &q, &p, 5);
        let want = adamw_reference(&q, &p0, 5, lr as f64, b1 as f64, b2 as f64, eps as f64, wd as f64);
        assert_close_f64(&p.to_vec::<f32>().unwrap(), &want, 1e-5, 1e-6, &format!("adamw {lr} {b1} {b2} {eps} {wd}"));
        assert_eq!(opt.state().unwrap().params[0].as_ref().unwrap().step, 5);
    }
}

#[test]
fn adamw_defaults_and_first_step_by_hand() {
    let d = AdamW::default();
    assert_eq!((d.lr, d.beta1, d.beta2, d.eps, d.weight_decay), (1e-3, 0.9, 0.999, 1e-8, 0.01));
    // First step: m̂ = g, v̂ = g², so p1 = p0·(1 − lr·wd) − lr·g/(|g| + eps).
    // loss = p², p0 = 1 → g = 2: p1 = 0.999 − 0.1·2/(2 + 1e-8) = 0.899.
    let p = Tensor::from_vec(vec![1.0f32, -3.0], &[2]).unwrap().requires_grad().unwrap();
    let mut opt = AdamW::new(0.1);
    let g = p.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    opt.step(std::slice::from_ref(&p), &g).unwrap();
    // p = −3 → g = −6: p1 = −3·0.999 + 0.1 = −2.897.
    assert_close(&p.to_vec::<f32>().unwrap(), &[0.899, -2.897], 1e-6, 1e-7);
}

#[test]
fn large_parameters_take_the_parallel_path() {
    // More elements than the parallel threshold, and not a multiple of the chunk size.
    let n = 70_001;
    let q = Quadratic::new(n, 30);
    let p0 = randn(&[n], 6).to_vec::<f32>().unwrap();
    let p = Tensor::from_slice(&p0, &[n]).unwrap().requires_grad().unwrap();
    let mut opt = AdamW::new(0.01).with_weight_decay(0.1);
    run(&mut opt, &q, &p, 3);
    let want = adamw_reference(&q, &p0, 3, 0.01, 0.9, 0.999, 1e-8, 0.1);
    assert_close_f64(&p.to_vec::<f32>().unwrap(), &want, 1e-5, 1e-6, "adamw large");
    let p = Tensor::from_slice(&p0, &[n]).unwrap().requires_grad().unwrap();
    let mut opt = Sgd::new(0.01).with_momentum(0.9).with_weight_decay(0.01);
    run(&mut opt, &q, &p, 3);
    let want = sgd_reference(&q, &p0, 3, 0.01, 0.9, 0.0, 0.01, false);
    assert_close_f64(&p.to_vec::<f32>().unwrap(), &want, 1e-5, 1e-6, "sgd large");
    let p = Tensor::from_slice(&p0, &[n]).unwrap().requires_grad().unwrap();
    run(&mut Sgd::new(0.01).with_weight_decay(0.01), &q, &p, 3);
    let want = sgd_reference(&q, &p0, 3, 0.01, 0.0, 0.0, 0.01, false);
    assert_close_f64(&p.to_vec::<f32>().unwrap(), &want, 1e-5, 1e-6, "plain sgd large");
}

#[test]
fn params_without_gradients_are_skipped() {
    let a = randn(&[3], 1).requires_grad().unwrap();
    let frozen = randn(&[4], 2); // a constant: no gradient
    let unused = randn(&[2], 3).requires_grad().unwrap(); // a variable the loss does not use
    let before = (frozen.to_vec::<f32>().unwrap(), unused.to_vec::<f32>().unwrap());
    let params = vec![a.clone(), frozen.clone(), unused.clone()];
    let mut opt = AdamW::new(0.1).with_weight_decay(0.5);
    for _ in 0..2 {
        let g = a.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        opt.step(&params, &g).unwrap();
    }
    assert_eq!(frozen.to_vec::<f32>().unwrap(), before.0);
    assert_eq!(unused.to_vec::<f32>().unwrap(), before.1, "no decay without a gradient (as PyTorch)");
    let st = opt.state().unwrap();
    assert_eq!(st.params[0].as_ref().unwrap().step, 2);
    assert!(st.params[1].is_none() && st.params[2].is_none());
    let mut sgd = Sgd::new(0.1).with_momentum(0.9).with_weight_decay(0.1);
    let g = a.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    sgd.step(&params, &g).unwrap();
    assert_eq!(frozen.to_vec::<f32>().unwrap(), before.0);
    assert!(sgd.state().unwrap().momentum_buffers[1].is_none());
}

#[test]
fn shape_mismatch_is_an_error() {
    let p = randn(&[3], 1).requires_grad().unwrap();
    let mut g = Grads::new();
    g.insert(&p, randn(&[4], 2));
    assert!(AdamW::new(0.1).step(std::slice::from_ref(&p), &g).is_err());
    assert!(Sgd::new(0.1).step(std::slice::from_ref(&p), &g).is_err());
    // State saved for one parameter list does not load into a different one.
    let mut opt = AdamW::new(0.1);
    let g = p.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    opt.step(std::slice::from_ref(&p), &g).unwrap();
    let other = randn(&[5], 3).requires_grad().unwrap();
    assert!(AdamW::new(0.1).load_state(opt.state().unwrap(), std::slice::from_ref(&other)).is_err());
    let tensors = opt.state_tensors(std::slice::from_ref(&p)).unwrap();
    assert!(AdamW::new(0.1).load_state_tensors(&tensors, &[other]).is_err());
}

/// Two parameters (a matrix and a vector) trained on a small least-squares problem.
fn two_param_grads(w: &Tensor, b: &Tensor) -> Grads {
    let x = randn(&[6, 4], 40);
    let y = randn(&[6, 3], 41);
    let pred = x.matmul(w).unwrap().add(b).unwrap();
    pred.sub(&y).unwrap().sqr().unwrap().mean_all().unwrap().backward().unwrap()
}

#[test]
fn adamw_state_export_import_resumes_bit_identically() {
    let (w0, b0) = (randn(&[4, 3], 50), randn(&[3], 51));
    let fresh = || {
        let w = Tensor::from_vec(w0.to_vec::<f32>().unwrap(), &[4, 3]).unwrap().requires_grad().unwrap();
        let b = Tensor::from_vec(b0.to_vec::<f32>().unwrap(), &[3]).unwrap().requires_grad().unwrap();
        (w, b)
    };
    let sched = LrSchedule::linear(2, 8);
    let step = |opt: &mut AdamW, w: &Tensor, b: &Tensor, k: u64| {
        opt.set_lr(sched.lr_at(0.05, k));
        let mut g = two_param_grads(w, b);
        clip_grad_norm(&mut g, &[w.clone(), b.clone()], 0.5).unwrap();
        opt.step(&[w.clone(), b.clone()], &g).unwrap();
    };
    // Uninterrupted run of 6 steps.
    let (w, b) = fresh();
    let mut opt = AdamW::new(0.05).with_weight_decay(0.1);
    for k in 0..6 {
        step(&mut opt, &w, &b, k);
    }
    // 3 steps, export, then 3 more with brand-new tensors (new ids) and a new optimizer.
    let (w1, b1) = fresh();
    let mut opt1 = AdamW::new(0.05).with_weight_decay(0.1);
    for k in 0..3 {
        step(&mut opt1, &w1, &b1, k);
    }
    let saved = opt1.state_tensors(&[w1.clone(), b1.clone()]).unwrap();
    assert_eq!(saved.len(), 6);
    let (w2, b2) = (
        Tensor::from_vec(w1.to_vec::<f32>().unwrap(), &[4, 3]).unwrap().requires_grad().unwrap(),
        Tensor::from_vec(b1.to_vec::<f32>().unwrap(), &[3]).unwrap().requires_grad().unwrap(),
    );
    let mut opt2 = AdamW::new(0.05).with_weight_decay(0.1);
    opt2.load_state_tensors(&saved, &[w2.clone(), b2.clone()]).unwrap();
    for k in 3..6 {
        step(&mut opt2, &w2, &b2, k);
    }
    let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&w), bits(&w2));
    assert_eq!(bits(&b), bits(&b2));
    assert_eq!(opt.state().unwrap(), opt2.state().unwrap());
    // The plain-struct export round-trips too.
    let mut opt3 = AdamW::new(0.05).with_weight_decay(0.1);
    opt3.load_state(opt.state().unwrap(), &[w.clone(), b.clone()]).unwrap();
    assert_eq!(opt3.state().unwrap(), opt.state().unwrap());
}

#[test]
fn sgd_state_export_import_resumes_bit_identically() {
    let (w0, b0) = (randn(&[4, 3], 60), randn(&[3], 61));
    let fresh = || {
        (
            Tensor::from_vec(w0.to_vec::<f32>().unwrap(), &[4, 3]).unwrap().requires_grad().unwrap(),
            Tensor::from_vec(b0.to_vec::<f32>().unwrap(), &[3]).unwrap().requires_grad().unwrap(),
        )
    };
    let mk = || Sgd::new(0.05).with_momentum(0.9).with_weight_decay(0.01).with_nesterov(true);
    let (w, b) = fresh();
    let mut opt = mk();
    for _ in 0..4 {
        opt.step(&[w.clone(), b.clone()], &two_param_grads(&w, &b)).unwrap();
    }
    let (w1, b1) = fresh();
    let mut opt1 = mk();
    for _ in 0..2 {
        opt1.step(&[w1.clone(), b1.clone()], &two_param_grads(&w1, &b1)).unwrap();
    }
    let (w2, b2) = (w1.detach().requires_grad().unwrap(), b1.detach().requires_grad().unwrap());
    let mut opt2 = mk();
    opt2.load_state(opt1.state().unwrap(), &[w2.clone(), b2.clone()]).unwrap();
    for _ in 0..2 {
        opt2.step(&[w2.clone(), b2.clone()], &two_param_grads(&w2, &b2)).unwrap();
    }
    assert_eq!(w.to_vec::<f32>().unwrap(), w2.to_vec::<f32>().unwrap());
    assert_eq!(b.to_vec::<f32>().unwrap(), b2.to_vec::<f32>().unwrap());
}

#[test]
fn clip_grad_norm_matches_direct_computation() {
    let a = randn(&[3, 4], 70).requires_grad().unwrap();
    let b = randn(&[5], 71).requires_grad().unwrap();
    let loss = || {
        a.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .mul_scalar(3.0)
            .unwrap()
            .add(&b.powf(3.0).unwrap().sum_all().unwrap())
            .unwrap()
    };
    let grads = loss().backward().unwrap();
    let ga = grads.get(&a).unwrap().to_vec::<f32>().unwrap();
    let gb = grads.get(&b).unwrap().to_vec::<f32>().unwrap();
    let norm: f64 = ga.iter().chain(&gb).map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let params = [a.clone(), b.clone()];
    assert!((grad_norm(&grads, &params).unwrap() as f64 - norm).abs() < 1e-5 * norm);

    // Above the limit: scaled by max/(norm + 1e-6).
    let max = (norm / 3.0) as f32;
    let mut g = grads.clone();
    let returned = clip_grad_norm(&mut g, &params, max).unwrap();
    assert!((returned as f64 - norm).abs() < 1e-5 * norm);
    let coef = max as f64 / (norm + 1e-6);
    let want: Vec<f32> = ga.iter().map(|&x| (x as f64 * coef) as f32).collect();
    assert_close(&g.get(&a).unwrap().to_vec::<f32>().unwrap(), &want, 1e-5, 1e-7);
    let want: Vec<f32> = gb.iter().map(|&x| (x as f64 * coef) as f32).collect();
    assert_close(&g.get(&b).unwrap().to_vec::<f32>().unwrap(), &want, 1e-5, 1e-7);
    assert!((grad_norm(&g, &params).unwrap() - max).abs() < 1e-4 * max);
    // The original gradients were not modified in place.
    assert_eq!(grads.get(&a).unwrap().to_vec::<f32>().unwrap(), ga);

    // Below the limit: untouched.
    let mut g = grads.clone();
    clip_grad_norm(&mut g, &params, (norm * 2.0) as f32).unwrap();
    assert_eq!(g.get(&a).unwrap().to_vec::<f32>().unwrap(), ga);

    // Only the listed parameters count and are scaled.
    let mut g = grads.clone();
    let na = clip_grad_norm(&mut g, std::slice::from_ref(&a), 1.0).unwrap();
    let direct_a = ga.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    assert!((na as f64 - direct_a).abs() < 1e-5 * direct_a);
    assert_eq!(g.get(&b).unwrap().to_vec::<f32>().unwrap(), gb);

    assert!(clip_grad_norm(&mut grads.clone(), &params, -1.0).is_err());
}

#[test]
fn clip_scales_a_shared_gradient_once_per_parameter() {
    // y = a + b: the backward of add may hand both parameters the same gradient tensor.
    let a = randn(&[4], 80).requires_grad().unwrap();
    let b = randn(&[4], 81).requires_grad().unwrap();
    let w = randn(&[4], 82);
    let mut g = a.add(&b).unwrap().mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let wv = w.to_vec::<f32>().unwrap();
    let norm = (2.0 * wv.iter().map(|&x| (x as f64).powi(2)).sum::<f64>()).sqrt();
    clip_grad_norm(&mut g, &[a.clone(), b.clone()], 0.1).unwrap();
    let coef = 0.1 / (norm + 1e-6);
    let want: Vec<f32> = wv.iter().map(|&x| (x as f64 * coef) as f32).collect();
    assert_close(&g.get(&a).unwrap().to_vec::<f32>().unwrap(), &want, 1e-5, 1e-8);
    assert_close(&g.get(&b).unwrap().to_vec::<f32>().unwrap(), &want, 1e-5, 1e-8);
}

#[test]
fn schedules_match_closed_forms() {
    let base = 0.1f32;
    let c = LrSchedule::Constant;
    assert_eq!(c.lr_at(base, 0), base);
    assert_eq!(c.lr_at(base, 1_000_000), base);

    let cw = LrSchedule::ConstantWithWarmup { warmup_steps: 4 };
    assert_close(
        &[cw.lr_at(base, 0), cw.lr_at(base, 1), cw.lr_at(base, 4), cw.lr_at(base, 100)],
        &[0.0, 0.025, 0.1, 0.1],
        1e-6,
        0.0,
    );

    // HF linear: step/warmup during warmup, then (total − step)/(total − warmup), floored at 0.
    let lin = LrSchedule::linear(10, 110);
    let want = |s: u64| -> f64 {
        if s < 10 {
            s as f64 / 10.0
        } else {
            ((110.0 - s as f64) / 100.0).max(0.0)
        }
    };
    for s in [0, 1, 5, 9, 10, 11, 60, 109, 110, 111, 500] {
        let got = lin.lr_at(base, s) as f64;
        assert!((got - 0.1 * want(s)).abs() < 1e-8, "linear step {s}: {got}");
    }
    assert_eq!(lin.lr_at(base, 10), base, "peak at the warmup boundary");
    assert_eq!(lin.lr_at(base, 110), 0.0, "zero at the end");
    assert!((lin.lr_at(base, 60) - 0.05).abs() < 1e-8, "half way down");

    // HF cosine (num_cycles 0.5): 0.5·(1 + cos(π·progress)).
    let cos = LrSchedule::cosine(10, 110);
    for s in [0u64, 3, 10, 35, 60, 85, 110, 200] {
        let want = if s < 10 {
            s as f64 / 10.0
        } else {
            let p = (s - 10) as f64 / 100.0;
            (0.5 * (1.0 + (std::f64::consts::PI * p).cos())).max(0.0)
        };
        let got = cos.lr_at(base, s) as f64;
        assert!((got - 0.1 * want).abs() < 1e-8, "cosine step {s}: {got} vs {}", 0.1 * want);
    }
    assert_eq!(cos.lr_at(base, 10), base);
    assert!((cos.lr_at(base, 60) - 0.05).abs() < 1e-8);
    assert!(cos.lr_at(base, 110).abs() < 1e-9);
    // No warmup: the first step already uses the full rate.
    assert_eq!(LrSchedule::linear(0, 10).lr_at(base, 0), base);
}
