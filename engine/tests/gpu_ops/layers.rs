//! Norms, RoPE, embedding/index ops, dropout and the optimizers on the GPU.
use crate::common::{assert_close, check, gpu, host, rand};
use engine::optim::{clip_grad_norm, grad_norm, AdamW, Sgd};
use engine::{rope_tables, Device, Grads, Tensor};

#[test]
fn layer_and_rms_norm_with_and_without_affine_parameters() {
    let x = rand(&[3, 5, 37], 1);
    let (w, b) = (rand(&[37], 2), rand(&[37], 3));
    let (xwb, xw, xb) = ([x.clone(), w.clone(), b.clone()], [x.clone(), w.clone()], [x.clone(), b.clone()]);
    let x1 = std::slice::from_ref(&x);
    check("layer_norm w b", &xwb, &[true; 3], 1e-4, |v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5));
    check("layer_norm w", &xw, &[true; 2], 1e-4, |v| v[0].layer_norm(Some(&v[1]), None, 1e-5));
    check("layer_norm b", &xb, &[true; 2], 1e-4, |v| v[0].layer_norm(None, Some(&v[1]), 1e-5));
    check("layer_norm bare", x1, &[true], 1e-4, |v| v[0].layer_norm(None, None, 1e-5));
    check("rms_norm w", &xw, &[true; 2], 1e-4, |v| v[0].rms_norm(Some(&v[1]), 1e-6));
    check("rms_norm bare", x1, &[true], 1e-4, |v| v[0].rms_norm(None, 1e-6));
    // A transposed view (gathered first) and constant parameters (only dx wanted).
    let xt = rand(&[37, 6], 4);
    check("layer_norm of a view", &[xt, w.clone(), b.clone()], &[true, false, false], 1e-4, |v| {
        v[0].t()?.layer_norm(Some(&v[1]), Some(&v[2]), 1e-5)
    });
    // Only the weight's gradient (x constant).
    check("rms_norm dw only", &[x.clone(), w.clone()], &[false, true], 1e-4, |v| v[0].rms_norm(Some(&v[1]), 1e-6));
    let Some(dev) = gpu() else { return };
    let e = x.to_device(dev).unwrap().layer_norm(Some(&w), None, 1e-5).unwrap_err().to_string();
    assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");
}

#[test]
fn rope_forward_and_backward_with_shared_and_per_batch_tables() {
    let x = rand(&[2, 3, 7, 10], 5);
    let pos = Tensor::from_vec((3..10i64).collect(), &[7]).unwrap();
    let (cos, sin) = rope_tables(&pos, 10, 10_000.0).unwrap();
    let ins = [x.clone(), cos.clone(), sin.clone()];
    let g = [true, false, false];
    check("rope", &ins, &g, 1e-5, |v| v[0].rope(&v[1], &v[2]));
    // A view of x: heads and time swapped back from a [2, 7, 3, 10] tensor.
    let xv = rand(&[2, 7, 3, 10], 6);
    check("rope of a view", &[xv, cos.clone(), sin.clone()], &g, 1e-5, |v| v[0].transpose(1, 2)?.rope(&v[1], &v[2]));
    let bpos = Tensor::from_vec((0..14i64).map(|i| i * 3 % 11).collect(), &[2, 7]).unwrap();
    let (bc, bs) = rope_tables(&bpos, 10, 500.0).unwrap();
    check("rope per batch", &[x.clone(), bc, bs], &g, 1e-5, |v| v[0].rope(&v[1], &v[2]));
    let Some(dev) = gpu() else { return };
    // Tables for positions on the GPU come back on the GPU, equal to the host's.
    let (gc, gs) = rope_tables(&pos.to_device(dev).unwrap(), 10, 10_000.0).unwrap();
    assert_close("rope_tables cos", &gc, &cos, 0.0);
    assert_close("rope_tables sin", &gs, &sin, 0.0);
    let e = x.to_device(dev).unwrap().rope(&cos, &sin).unwrap_err().to_string();
    assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");
}

#[test]
fn embedding_and_index_select_gather_and_scatter_add_rows() {
    let table = rand(&[11, 13], 7);
    // Repeated ids: their gradients add up in one row.
    let ids = Tensor::from_vec(vec![3i64, 0, 10, 3, 7, 3, 1, 10], &[2, 4]).unwrap();
    check("embedding (ids on the GPU)", &[table.clone(), ids.clone()], &[true, false], 1e-5, |v| v[0].embedding(&v[1]));
    check("embedding (ids on the host)", std::slice::from_ref(&table), &[true], 1e-5, |v| v[0].embedding(&ids));
    let x = rand(&[6, 5, 9], 8);
    let sel = Tensor::from_vec(vec![4i64, 0, 4, 2], &[4]).unwrap();
    for dim in 0..3 {
        check(&format!("index_select dim {dim}"), std::slice::from_ref(&x), &[true], 1e-5, |v| {
            v[0].index_select(dim, &sel)
        });
    }
    check("index_select of a view", std::slice::from_ref(&x), &[true], 1e-5, |v| {
        v[0].transpose(0, 1)?.index_select(0, &sel)
    });
    let idx = Tensor::from_vec((0..6 * 3 * 9).map(|i| (i * 7 % 5) as i64).collect(), &[6, 3, 9]).unwrap();
    check("gather dim 1", std::slice::from_ref(&x), &[true], 1e-5, |v| v[0].gather(1, &idx));
    let src = rand(&[6, 3, 9], 9);
    check("scatter_add dim 1", &[x.clone(), src], &[true, true], 1e-5, |v| v[0].scatter_add(1, &idx, &v[1]));
    let Some(dev) = gpu() else { return };
    let bad = Tensor::from_vec(vec![2i64, 11], &[2]).unwrap();
    let e = table.to_device(dev).unwrap().embedding(&bad).unwrap_err().to_string();
    assert!(e.contains("11"), "{e}");
    let e = x.to_device(dev).unwrap().scatter_add(1, &idx, &rand(&[6, 3, 9], 10)).unwrap_err().to_string();
    assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");
}

#[test]
fn dropout_keeps_one_minus_p_scales_and_reuses_its_mask_backward() {
    let Some(dev) = gpu() else { return };
    let n = 100_003;
    let p = 0.3f32;
    let ones = Tensor::ones(&[n], engine::DType::F32).unwrap().to_device(dev).unwrap().requires_grad().unwrap();
    let out = ones.dropout(p, 42).unwrap();
    assert_eq!(out.device(), dev);
    let y = host(&out);
    let scale = 1.0 / (1.0 - p);
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!(y.iter().all(|&v| v == 0.0 || (v - scale).abs() <= 1e-6 * scale), "kept values are x / (1 - p)");
    let rate = kept as f64 / n as f64;
    // 4.5 standard deviations of a binomial proportion at n = 100k.
    assert!((rate - 0.7).abs() < 0.0065, "keep rate {rate}");
    assert_eq!(host(&ones.dropout(p, 42).unwrap()), y, "same seed, same mask");
    assert_ne!(host(&ones.dropout(p, 43).unwrap()), y, "another seed, another mask");
    // d(out)/dx is the mask times the scale: equal to the output of ones.
    let g = out.backward().unwrap();
    assert_eq!(host(g.get(&ones).unwrap()), y, "the backward reuses the forward's mask");
    // A strided view: the mask follows the row-major element order of the view.
    let x = rand(&[37, 70], 11).to_device(dev).unwrap();
    let dropped = host(&x.t().unwrap().dropout(0.5, 7).unwrap());
    let dense = host(&x.t().unwrap().contiguous().unwrap().dropout(0.5, 7).unwrap());
    assert_eq!(dropped, dense);
    assert!(host(&ones.dropout(1.0, 1).unwrap()).iter().all(|&v| v == 0.0));
}

/// Two parameters and three gradients for each on both devices.
struct Problem {
    host: Vec<Tensor>,
    gpu: Vec<Tensor>,
    grads: Vec<(Grads, Grads)>,
}

fn problem(dev: Device) -> Problem {
    let shapes: [&[usize]; 2] = [&[37, 5], &[5]];
    let host: Vec<Tensor> = shapes.iter().enumerate().map(|(i, s)| rand(s, 20 + i as u64)).collect();
    let gpu = host.iter().map(|t| t.to_device(dev).unwrap()).collect();
    let host: Vec<Tensor> =
        host.iter().map(|t| Tensor::from_vec(t.to_vec::<f32>().unwrap(), t.shape()).unwrap()).collect();
    let grads = (0..3)
        .map(|k| {
            let (mut gh, mut gg) = (Grads::new(), Grads::new());
            for (i, (p, q)) in host.iter().zip(&gpu).enumerate() {
                let g = rand(p.shape(), 30 + 10 * k + i as u64);
                gg.insert(q, g.to_device(dev).unwrap());
                gh.insert(p, g);
            }
            (gh, gg)
        })
        .collect();
    Problem { host, gpu, grads }
}

fn assert_params(what: &str, pr: &Problem, rel: f32) {
    for (i, (h, g)) in pr.host.iter().zip(&pr.gpu).enumerate() {
        assert_close(&format!("{what} param {i}"), g, h, rel);
    }
}

#[test]
fn adamw_three_steps_on_the_gpu_follow_the_host_and_export_their_state() {
    let Some(dev) = gpu() else { return };
    let pr = problem(dev);
    let mk = || AdamW::new(0.05).with_betas(0.8, 0.99).with_eps(1e-6).with_weight_decay(0.1);
    let (mut oh, mut og) = (mk(), mk());
    for (k, (gh, gg)) in pr.grads.iter().enumerate() {
        oh.step(&pr.host, gh).unwrap();
        og.step(&pr.gpu, gg).unwrap();
        assert_params(&format!("adamw step {k}"), &pr, 1e-5);
    }
    // The moments stayed on the GPU; exporting downloads them.
    let (sh, sg) = (oh.state().unwrap(), og.state().unwrap());
    for (h, g) in sh.params.iter().zip(&sg.params) {
        let (h, g) = (h.as_ref().unwrap(), g.as_ref().unwrap());
        assert_eq!(h.step, g.step);
        for (a, b) in h.exp_avg.iter().zip(&g.exp_avg).chain(h.exp_avg_sq.iter().zip(&g.exp_avg_sq)) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "moment: host {a}, gpu {b}");
        }
    }
    let tensors = og.state_tensors(&pr.gpu).unwrap();
    assert!(tensors.iter().all(|(_, t)| t.device() == Device::Cpu));
    // A resume: the host state loaded for GPU parameters is uploaded at the next step; and a clone
    // of the optimizer steps its own copy of the moments (copy on write).
    let mut resumed = mk();
    resumed.load_state_tensors(&tensors, &pr.gpu).unwrap();
    let clone = og.clone();
    let extra = problem(dev);
    let regrad = |from: &Grads, old: &[Tensor], new: &[Tensor]| {
        let mut g = Grads::new();
        for (o, n) in old.iter().zip(new) {
            g.insert(n, from.get(o).unwrap().clone());
        }
        g
    };
    og.step(&pr.gpu, &regrad(&extra.grads[0].1, &extra.gpu, &pr.gpu)).unwrap();
    oh.step(&pr.host, &regrad(&extra.grads[0].0, &extra.host, &pr.host)).unwrap();
    assert_params("adamw step 4", &pr, 1e-5);
    assert_eq!(clone.state().unwrap(), sg, "the clone's moments were not touched by the original's step");
    let fresh: Vec<Tensor> = pr.gpu.iter().map(|t| t.to_device(Device::Cpu).unwrap().to_device(dev).unwrap()).collect();
    resumed.step(&fresh, &regrad(&extra.grads[0].1, &extra.gpu, &fresh)).unwrap();
    assert_eq!(resumed.state().unwrap().params[0].as_ref().unwrap().step, 4);
    // A gradient on the host for a parameter on the GPU is an error naming both devices.
    let mut mixed = Grads::new();
    mixed.insert(&pr.gpu[1], rand(&[5], 1));
    let e = mk().step(&pr.gpu, &mixed).unwrap_err().to_string();
    assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");
}

#[test]
fn sgd_three_steps_with_momentum_dampening_nesterov_and_weight_decay() {
    let Some(dev) = gpu() else { return };
    type Mk = fn() -> Sgd;
    let cases: [(&str, Mk); 4] = [
        ("plain", || Sgd::new(0.1)),
        ("momentum wd", || Sgd::new(0.1).with_momentum(0.9).with_weight_decay(0.05)),
        ("dampening", || Sgd::new(0.1).with_momentum(0.8).with_dampening(0.3).with_weight_decay(0.01)),
        ("nesterov", || Sgd::new(0.05).with_momentum(0.9).with_weight_decay(0.01).with_nesterov(true)),
    ];
    for (name, mk) in cases {
        let pr = problem(dev);
        let (mut oh, mut og) = (mk(), mk());
        for (k, (gh, gg)) in pr.grads.iter().enumerate() {
            oh.step(&pr.host, gh).unwrap();
            og.step(&pr.gpu, gg).unwrap();
            assert_params(&format!("sgd {name} step {k}"), &pr, 1e-5);
        }
        let (sh, sg) = (oh.state().unwrap(), og.state().unwrap());
        for (h, g) in sh.momentum_buffers.iter().zip(&sg.momentum_buffers) {
            assert_eq!(h.is_some(), g.is_some(), "{name}: momentum buffers");
            for (a, b) in h.iter().flatten().zip(g.iter().flatten()) {
                assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{name} buffer: host {a}, gpu {b}");
            }
        }
    }
}

#[test]
fn gradient_norm_and_clipping_on_the_gpu() {
    let Some(dev) = gpu() else { return };
    let pr = problem(dev);
    let (gh, gg) = &pr.grads[0];
    let (nh, ng) = (grad_norm(gh, &pr.host).unwrap(), grad_norm(gg, &pr.gpu).unwrap());
    assert!((nh - ng).abs() <= 1e-5 * nh, "norm: host {nh}, gpu {ng}");
    // A strided gradient (a transposed view) is summed through its strides.
    let mut gv = Grads::new();
    let p = pr.gpu[0].clone();
    gv.insert(&p, rand(&[9, 37], 50).to_device(dev).unwrap().narrow(0, 2, 5).unwrap().t().unwrap());
    let want: f64 = host(gv.get(&p).unwrap()).iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
    let got = grad_norm(&gv, std::slice::from_ref(&p)).unwrap() as f64;
    assert!((want - got).abs() <= 1e-5 * want, "strided norm: want {want}, got {got}");
    let (mut ch, mut cg) = (gh.clone(), gg.clone());
    let max = nh / 3.0;
    let (rh, rg) = (clip_grad_norm(&mut ch, &pr.host, max).unwrap(), clip_grad_norm(&mut cg, &pr.gpu, max).unwrap());
    assert!((rh - rg).abs() <= 1e-5 * rh);
    for (h, g) in pr.host.iter().zip(&pr.gpu) {
        assert_close("clipped gradient", cg.get(g).unwrap(), ch.get(h).unwrap(), 1e-5);
    }
    let after = grad_norm(&cg, &pr.gpu).unwrap();
    assert!((after - max).abs() <= 1e-4 * max, "clipped norm {after}, max {max}");
}
