//! bf16 autocast on the host: every GEMM operand is rounded to bf16 (`to_dtype(BF16)`), the products
//! are f32. So an autocast matmul / LoRA layer equals, forward and backward, the plain f32 ops applied
//! to the operands rounded by hand (exactly, or to 1e-6 relative where the reference reads a rounded
//! matrix through other strides). And autocast visibly changes results against f32.
use engine::quant::bnb4::{Bnb4bit, QuantType};
use engine::quant::{dequantize_all, PackedMatrix};
use engine::{autocast, autocast_dtype, lora_linear, lora_linear_packed, DType, Tensor};
use std::sync::Arc;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed).unwrap()
}

/// `t` rounded to bf16 and widened back: a constant.
fn r(t: &Tensor) -> Tensor {
    engine::no_grad_scope(|| t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap())
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.contiguous().unwrap().to_vec_f32().unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (a, b)) in vals(got).iter().zip(vals(want)).enumerate() {
        let tol = rel * b.abs().max(1.0);
        assert!((a - b).abs() <= tol, "{what}[{i}]: {a} vs {b} (tol {tol:e})");
    }
}

#[test]
fn the_guard_nests_and_only_bf16_is_accepted() {
    assert_eq!(autocast_dtype(), None);
    {
        let _outer = autocast(DType::BF16).unwrap();
        assert_eq!(autocast_dtype(), Some(DType::BF16));
        {
            let _inner = autocast(DType::BF16).unwrap();
            assert_eq!(autocast_dtype(), Some(DType::BF16));
        }
        assert_eq!(autocast_dtype(), Some(DType::BF16));
    }
    assert_eq!(autocast_dtype(), None);
    let e = autocast(DType::F16).err().unwrap().to_string();
    assert!(e.contains("loss scaling") && e.contains("bf16"), "{e}");
    let e = autocast(DType::F32).err().unwrap().to_string();
    assert!(e.contains("bf16"), "{e}");
    assert_eq!(autocast_dtype(), None);
}

/// Runs `f` under autocast on variables `inputs`, backpropagating `sum(out * w)` for a bf16-exact `w`,
/// and the same `f` in plain f32 on the inputs rounded by hand: for one matmul the two agree (the
/// upstream gradient `w` is its own rounding).
fn check_single_matmul(what: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> engine::Result<Tensor>) {
    let vars: Vec<Tensor> = inputs.iter().map(|t| t.requires_grad().unwrap()).collect();
    let out = {
        let _g = autocast(DType::BF16).unwrap();
        f(&vars).unwrap()
    };
    let w = r(&rand(out.shape(), 77));
    // The backward runs after the guard is gone: it replays the forward's state.
    let grads = out.mul(&w).unwrap().backward().unwrap();
    let rounded: Vec<Tensor> = inputs.iter().map(|t| r(t).requires_grad().unwrap()).collect();
    let want = f(&rounded).unwrap();
    assert_eq!(vals(&out), vals(&want), "{what}: forward");
    let want_grads = want.mul(&w).unwrap().backward().unwrap();
    for (i, (v, rv)) in vars.iter().zip(&rounded).enumerate() {
        assert_close(&format!("{what} grad {i}"), grads.get(v).unwrap(), want_grads.get(rv).unwrap(), 1e-6);
    }
}

#[test]
fn matmul_rounds_its_operands_forward_and_backward() {
    check_single_matmul("2-D", &[rand(&[37, 133], 1), rand(&[133, 45], 2)], |v| v[0].matmul(&v[1]));
    check_single_matmul("transposed views", &[rand(&[133, 37], 3), rand(&[45, 133], 4)], |v| {
        v[0].t()?.matmul(&v[1].t()?)
    });
    check_single_matmul("batched", &[rand(&[3, 17, 29], 5), rand(&[3, 29, 11], 6)], |v| v[0].matmul(&v[1]));
    check_single_matmul("broadcast", &[rand(&[4, 1, 17, 23], 7), rand(&[3, 23, 19], 8)], |v| v[0].matmul(&v[1]));
    check_single_matmul("[B, m, k]·[k, n]", &[rand(&[2, 9, 31], 9), rand(&[31, 13], 10)], |v| v[0].matmul(&v[1]));
}

#[test]
fn autocast_changes_matmul_results_beyond_f32_noise() {
    let (a, b) = (rand(&[37, 133], 11), rand(&[133, 45], 12));
    let f32_out = a.matmul(&b).unwrap();
    let bf16_out = {
        let _g = autocast(DType::BF16).unwrap();
        a.matmul(&b).unwrap()
    };
    let diff = vals(&f32_out).iter().zip(vals(&bf16_out)).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    // bf16 keeps 8 significant bits: over 133 products of values ~0.5 errors reach ~1e-2; f32 noise
    // would be ~1e-5.
    assert!(diff > 1e-3, "autocast changed the result by only {diff:e}");
    // Off again: plain f32 exactly.
    assert_eq!(vals(&a.matmul(&b).unwrap()), vals(&f32_out));
}

/// The LoRA layer by hand: `r(x)·r(W)ᵀ + s·r(xa)·r(B)ᵀ + bias`, `xa = r(xd)·r(A)ᵀ`, and its gradients
/// for the upstream `g` (bf16-exact): every product's operands rounded.
struct Manual {
    out: Tensor,
    gx: Tensor,
    gw: Tensor,
    gbias: Tensor,
    ga: Tensor,
    gb: Tensor,
}

fn manual_lora(x: &Tensor, w: &Tensor, bias: &Tensor, a: &Tensor, b: &Tensor, s: f32, g: &Tensor) -> Manual {
    let mm = |p: &Tensor, q: &Tensor| p.matmul(q).unwrap();
    let xa = mm(&r(x), &r(a).t().unwrap());
    let out = mm(&r(x), &r(w).t().unwrap())
        .add(&mm(&r(&xa), &r(b).t().unwrap()).mul_scalar(s).unwrap())
        .unwrap()
        .add(bias)
        .unwrap();
    let g_b = mm(g, &r(b));
    // x is also the adapter's input (no dropout): its gradient has both paths.
    let gx = mm(g, &r(w)).add(&mm(&r(&g_b), &r(a)).mul_scalar(s).unwrap()).unwrap();
    Manual {
        out,
        gx,
        gw: mm(&g.t().unwrap(), &r(x)),
        gbias: g.sum(&[0], false).unwrap(),
        ga: mm(&r(&g_b).t().unwrap(), &r(x)).mul_scalar(s).unwrap(),
        gb: mm(&g.t().unwrap(), &r(&xa)).mul_scalar(s).unwrap(),
    }
}

#[test]
fn lora_linear_rounds_every_gemm_operand() {
    let (n, inf, outf, rank, s) = (23, 70, 41, 6, 0.75);
    let (x, w, bias) = (rand(&[n, inf], 20), rand(&[outf, inf], 21), rand(&[outf], 22));
    let (a, b) = (rand(&[rank, inf], 23), rand(&[outf, rank], 24));
    let vars: Vec<Tensor> = [&x, &w, &bias, &a, &b].iter().map(|t| t.requires_grad().unwrap()).collect();
    let out = {
        let _g = autocast(DType::BF16).unwrap();
        lora_linear(&vars[0], &vars[1], Some(&vars[2]), &vars[3], &vars[4], s, None).unwrap()
    };
    let g = r(&rand(&[n, outf], 25));
    let grads = out.mul(&g).unwrap().backward().unwrap();
    let m = manual_lora(&x, &w, &bias, &a, &b, s, &g);
    assert_close("lora forward", &out, &m.out, 1e-6);
    for (i, want) in [&m.gx, &m.gw, &m.gbias, &m.ga, &m.gb].into_iter().enumerate() {
        assert_close(&format!("lora grad {i}"), grads.get(&vars[i]).unwrap(), want, 1e-6);
    }
    // Against f32, the result moves by far more than f32 noise.
    let plain = lora_linear(&x, &w, Some(&bias), &a, &b, s, None).unwrap();
    let diff = vals(&plain).iter().zip(vals(&out)).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-3, "autocast changed lora_linear by only {diff:e}");
}

#[test]
fn lora_linear_packed_rounds_the_dequantized_weight() {
    let (n, inf, outf, rank, s) = (9, 128, 40, 4, 2.0);
    let wv = rand(&[outf, inf], 30).to_vec::<f32>().unwrap();
    let q: Arc<dyn PackedMatrix> = Arc::new(Bnb4bit::quantize(&wv, [outf, inf], QuantType::Nf4, 64, true).unwrap());
    let w = dequantize_all(q.as_ref()).unwrap();
    let (x, bias) = (rand(&[n, inf], 31), rand(&[outf], 32));
    let (a, b) = (rand(&[rank, inf], 33), rand(&[outf, rank], 34));
    let vars: Vec<Tensor> = [&x, &bias, &a, &b].iter().map(|t| t.requires_grad().unwrap()).collect();
    let out = {
        let _g = autocast(DType::BF16).unwrap();
        lora_linear_packed(&vars[0], &q, Some(&vars[1]), &vars[2], &vars[3], s, None).unwrap()
    };
    let g = r(&rand(&[n, outf], 35));
    let grads = out.mul(&g).unwrap().backward().unwrap();
    let m = manual_lora(&x, &w, &bias, &a, &b, s, &g);
    assert_close("qlora forward", &out, &m.out, 1e-6);
    for (i, want) in [&m.gx, &m.gbias, &m.ga, &m.gb].into_iter().enumerate() {
        assert_close(&format!("qlora grad {i}"), grads.get(&vars[i]).unwrap(), want, 1e-6);
    }
}
