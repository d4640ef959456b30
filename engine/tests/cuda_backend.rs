//! The CUDA launchers against the engine's own CPU ops (forward), so the GPU computes what the engine
//! computes, not only what a naive reference says: matmul with transposes, softmax / log-softmax,
//! cross-entropy (mean over non-ignored rows), layer / RMS norm, activations, reductions, embedding,
//! RoPE (from `rope_tables`), attention (GEMM + masked softmax + GEMM vs `scaled_dot_product_attention`)
//! and the bf16 cast. Tolerance: 1e-5 relative (1e-4 where a sum runs over hundreds of terms).
//! Without a GPU each test prints why and returns; REQUIRE_GPU=1 makes that a failure.
#![cfg(feature = "cuda")]

use engine::cuda::kernels::ops::{Reduce, Unary};
use engine::cuda::ops::{self, CrossEntropy, Norm, Rope};
use engine::cuda::{Device, GemmShape};
use engine::{scaled_dot_product_attention, AttentionMask, DType, Tensor};

fn device() -> Option<Device> {
    match Device::new(0) {
        Ok(d) => Some(d),
        Err(e) if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") => panic!("REQUIRE_GPU=1 but: {e}"),
        Err(e) => {
            eprintln!("skipped, no GPU: {e}");
            None
        }
    }
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed).unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.contiguous().unwrap().to_vec_f32().unwrap()
}

fn close(what: &str, got: &[f32], want: &Tensor, rel: f32) {
    let want = host(want);
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= rel * w.abs().max(1.0), "{what}[{i}]: gpu {g}, engine {w}");
    }
}

#[test]
fn matmul_with_transposes_matches_the_engine() {
    let Some(dev) = device() else { return };
    let (m, n, k) = (67, 133, 300);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = if ta { rand(&[k, m], 1) } else { rand(&[m, k], 1) };
        let b = if tb { rand(&[n, k], 2) } else { rand(&[k, n], 2) };
        let lhs = if ta { a.t().unwrap() } else { a.clone() };
        let rhs = if tb { b.t().unwrap() } else { b.clone() };
        let want = lhs.matmul(&rhs).unwrap();
        let (da, db) = (dev.upload(&host(&a)).unwrap(), dev.upload(&host(&b)).unwrap());
        let mut dc = dev.zeros::<f32>(m * n).unwrap();
        ops::gemm_f32(&dev, &da, &db, &mut dc, &GemmShape::row_major(m, n, k, 1, ta, tb)).unwrap();
        close(&format!("matmul ta={ta} tb={tb}"), &dev.download(&dc).unwrap(), &want, 1e-4);
    }
}

#[test]
fn softmax_log_softmax_and_cross_entropy_match_the_engine() {
    let Some(dev) = device() else { return };
    let (rows, cols) = (7, 513);
    let x = rand(&[rows, cols], 3).mul_scalar(6.0).unwrap();
    let gx = dev.upload(&host(&x)).unwrap();
    let mut y = dev.zeros::<f32>(rows * cols).unwrap();
    ops::softmax(&dev, &gx, &mut y, rows, cols, false).unwrap();
    close("softmax", &dev.download(&y).unwrap(), &x.softmax(1).unwrap(), 1e-5);
    ops::softmax(&dev, &gx, &mut y, rows, cols, true).unwrap();
    close("log_softmax", &dev.download(&y).unwrap(), &x.log_softmax(1).unwrap(), 1e-5);
    let targets: Vec<i32> = vec![5, -100, 512, 0, 77, -100, 300];
    let t64: Vec<i64> = targets.iter().map(|&t| i64::from(t)).collect();
    let want = x.cross_entropy_with(&Tensor::from_vec(t64, &[rows]).unwrap(), -100).unwrap();
    let gt = dev.upload(&targets).unwrap();
    let ce = CrossEntropy { logits: &gx, targets: &gt, host_targets: &targets, rows, cols, ignore_index: -100 };
    let (mut loss, mut lse) = (dev.zeros::<f32>(rows).unwrap(), dev.zeros::<f32>(rows).unwrap());
    ce.forward(&dev, &mut loss, &mut lse).unwrap();
    let counted = targets.iter().filter(|&&t| t != -100).count() as f32;
    let mean = dev.download(&loss).unwrap().iter().sum::<f32>() / counted;
    close("cross_entropy mean", &[mean], &want, 1e-5);
}

#[test]
fn norms_activations_and_reductions_match_the_engine() {
    let Some(dev) = device() else { return };
    let (rows, cols) = (5, 300);
    let x = rand(&[rows, cols], 4);
    let (w, b) = (rand(&[cols], 5), rand(&[cols], 6));
    let (gx, gw, gb) = (dev.upload(&host(&x)).unwrap(), dev.upload(&host(&w)).unwrap(), dev.upload(&host(&b)).unwrap());
    let mut y = dev.zeros::<f32>(rows * cols).unwrap();
    let (mut mean, mut rstd) = (dev.zeros::<f32>(rows).unwrap(), dev.zeros::<f32>(rows).unwrap());
    let ln = Norm { rows, cols, eps: 1e-5, rms: false, weight: Some(&gw), bias: Some(&gb) };
    ln.forward(&dev, &gx, &mut y, Some(&mut mean), &mut rstd).unwrap();
    close("layer_norm", &dev.download(&y).unwrap(), &x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap(), 1e-5);
    let rms = Norm { rows, cols, eps: 1e-6, rms: true, weight: Some(&gw), bias: None };
    rms.forward(&dev, &gx, &mut y, None, &mut rstd).unwrap();
    close("rms_norm", &dev.download(&y).unwrap(), &x.rms_norm(Some(&w), 1e-6).unwrap(), 1e-5);
    let strides = [cols as isize, 1];
    for (op, want) in [
        (Unary::GeluErf, x.gelu().unwrap()),
        (Unary::GeluTanh, x.gelu_tanh().unwrap()),
        (Unary::Silu, x.silu().unwrap()),
        (Unary::Exp, x.exp().unwrap()),
        (Unary::Tanh, x.tanh().unwrap()),
        (Unary::Sigmoid, x.sigmoid().unwrap()),
    ] {
        ops::unary(&dev, ops::Strided::new(&gx, &strides), &mut y, &[rows, cols], op, 0.0).unwrap();
        close(&format!("{op:?}"), &dev.download(&y).unwrap(), &want, 1e-5);
    }
    let mut r = dev.zeros::<f32>(cols).unwrap();
    ops::reduce(&dev, &gx, &mut r, 1, rows, cols, Reduce::Sum).unwrap();
    close("sum dim 0", &dev.download(&r).unwrap(), &x.sum(&[0], false).unwrap(), 1e-5);
    let mut r = dev.zeros::<f32>(rows).unwrap();
    ops::reduce(&dev, &gx, &mut r, rows, cols, 1, Reduce::Max).unwrap();
    close("max dim 1", &dev.download(&r).unwrap(), &x.max(1, false).unwrap(), 0.0);
    ops::reduce(&dev, &gx, &mut r, rows, cols, 1, Reduce::Mean).unwrap();
    close("mean dim 1", &dev.download(&r).unwrap(), &x.mean(&[1], false).unwrap(), 1e-5);
}

#[test]
fn embedding_rope_and_bf16_cast_match_the_engine() {
    let Some(dev) = device() else { return };
    let (vocab, dim) = (40, 24);
    let table = rand(&[vocab, dim], 7);
    let ids: Vec<u32> = vec![0, 39, 7, 7, 12];
    let want = table
        .embedding(&Tensor::from_vec(ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(), &[5]).unwrap())
        .unwrap();
    let (gt, gi) = (dev.upload(&host(&table)).unwrap(), dev.upload(&ids).unwrap());
    let mut out = dev.zeros::<f32>(5 * dim).unwrap();
    ops::embedding(&dev, &gi, &ids, &gt, &mut out, vocab, dim).unwrap();
    close("embedding", &dev.download(&out).unwrap(), &want, 0.0);

    let (batch, heads, seq, hd) = (2, 3, 9, 16);
    let x = rand(&[batch, heads, seq, hd], 8);
    let (cos, sin) = engine::rope_tables(&Tensor::arange_i64(4, 4 + seq as i64).unwrap(), hd, 10000.0).unwrap();
    let want = x.rope(&cos, &sin).unwrap();
    let (gx, gc, gs) =
        (dev.upload(&host(&x)).unwrap(), dev.upload(&host(&cos)).unwrap(), dev.upload(&host(&sin)).unwrap());
    let mut y = dev.zeros::<f32>(x.numel()).unwrap();
    Rope { batch, heads, seq, head_dim: hd, per_batch: false }.apply(&dev, &gx, &gc, &gs, &mut y, false).unwrap();
    close("rope", &dev.download(&y).unwrap(), &want, 1e-5);

    let bf = x.to_dtype(DType::BF16).unwrap();
    let mut h = dev.zeros::<u16>(x.numel()).unwrap();
    ops::cast_to_half(&dev, &gx, &mut h, true).unwrap();
    let mut back = dev.zeros::<f32>(x.numel()).unwrap();
    ops::cast_from_half(&dev, &h, &mut back, true).unwrap();
    close("bf16 round trip", &dev.download(&back).unwrap(), &bf.to_dtype(DType::F32).unwrap(), 0.0);
}

#[test]
fn attention_from_gemms_and_masked_softmax_matches_the_engine() {
    let Some(dev) = device() else { return };
    let (batch, heads, tq, tk, d) = (2, 2, 5, 8, 16); // 3 prefix keys
    let (q, k, v) =
        (rand(&[batch, heads, tq, d], 9), rand(&[batch, heads, tk, d], 10), rand(&[batch, heads, tk, d], 11));
    let pad: Vec<f32> = vec![1., 1., 1., 1., 1., 1., 0., 0., /* batch 1 */ 1., 1., 1., 1., 1., 1., 1., 1.];
    let keep = Tensor::from_vec(pad.clone(), &[batch, tk]).unwrap();
    let want = scaled_dot_product_attention(&q, &k, &v, &AttentionMask::causal().with_key_padding(&keep)).unwrap();
    let bh = batch * heads;
    let (gq, gk, gv) = (dev.upload(&host(&q)).unwrap(), dev.upload(&host(&k)).unwrap(), dev.upload(&host(&v)).unwrap());
    let mut scores = dev.zeros::<f32>(bh * tq * tk).unwrap();
    let mut s = GemmShape::row_major(tq, tk, d, bh, false, true);
    s.alpha = 1.0 / (d as f32).sqrt();
    ops::gemm_f32(&dev, &gq, &gk, &mut scores, &s).unwrap();
    let valid: Vec<u8> = pad.iter().map(|&p| p as u8).collect();
    let gvalid = dev.upload(&valid).unwrap();
    ops::attention_softmax(&dev, &mut scores, Some(&gvalid), batch, heads, tq, tk, true).unwrap();
    let mut out = dev.zeros::<f32>(bh * tq * d).unwrap();
    ops::gemm_f32(&dev, &scores, &gv, &mut out, &GemmShape::row_major(tq, d, tk, bh, false, false)).unwrap();
    close("attention", &dev.download(&out).unwrap(), &want, 1e-5);
}

#[test]
fn to_device_round_trips_every_dtype_across_threads() {
    use engine::storage::Device as Place;
    let e = rand(&[2, 3], 12).to_device(Place::Cuda(9999)).unwrap_err().to_string();
    assert!(e.starts_with("to_device: cuda:9999: CUDA driver: "), "{e}");
    let Some(_dev) = device() else { return };
    // A transposed (non-contiguous) f32 view, and every other dtype.
    let x = rand(&[4, 5], 13).t().unwrap();
    let tensors = [
        x.clone(),
        x.to_dtype(DType::BF16).unwrap(),
        x.to_dtype(DType::F16).unwrap(),
        Tensor::arange_i64(-3, 9).unwrap(),
        Tensor::from_vec(vec![1u8, 0, 7], &[3]).unwrap(),
    ];
    for t in &tensors {
        let g = t.to_device(Place::Cuda(0)).unwrap();
        assert_eq!(g.device(), Place::Cuda(0));
        assert_eq!((g.shape(), g.dtype()), (t.shape(), t.dtype()));
        // Moving between threads and back: the buffer is usable (and freed) from any thread.
        let back = std::thread::scope(|s| s.spawn(|| g.to_device(Place::Cpu).unwrap()).join().unwrap());
        assert_eq!(back.device(), Place::Cpu);
        assert_eq!(format!("{back}"), format!("{t}"), "{:?}", t.dtype());
    }
}
