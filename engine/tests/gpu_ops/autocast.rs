//! bf16 autocast on the GPU (operands cast to bf16, tensor-core GEMM, f32 accumulation) against the
//! host's autocast (operands rounded to bf16, f32 GEMM): the products of bf16 values are exact in f32
//! on both, so only the order of the sums differs. Tolerance: 1e-5 relative to the sum of |terms|
//! of each output (the same function on |inputs| and |upstream gradient|, on the host). Without
//! autocast on the GPU the results would be off by ~1e-2 (bf16 rounding), far outside it.
//! The host's autocast itself equals manual rounding + f32 GEMM: engine/tests/autocast.rs.
use crate::common::{gpu, host, rand};
use crate::matmul::{bnb4_cases, host_and_gpu, pick};
use engine::{autocast, lora_linear, lora_linear_packed, packed_linear, DType, Device, Result, Tensor};

const REL: f32 = 1e-5;

/// The output and the flagged inputs' gradients of `sum(f(inputs) * w)` under autocast on `dev`.
fn run(
    dev: Device,
    inputs: &[Tensor],
    grad: &[bool],
    w: &Tensor,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Vec<Vec<f32>> {
    let vars: Vec<Tensor> = inputs
        .iter()
        .zip(grad)
        .map(|(t, &g)| {
            let t = t.to_device(dev).unwrap();
            if g {
                t.requires_grad().unwrap()
            } else {
                t
            }
        })
        .collect();
    let out = {
        let _g = autocast(DType::BF16).unwrap();
        f(&vars).unwrap_or_else(|e| panic!("on {dev}: {e}"))
    };
    assert_eq!(out.device(), dev);
    // The backward runs outside the guard: each op replays its forward's autocast state.
    let grads = out.mul(&w.to_device(dev).unwrap()).unwrap().backward().unwrap();
    let mut all = vec![host(&out)];
    for (v, &g) in vars.iter().zip(grad) {
        if g {
            all.push(host(grads.get(v).unwrap_or_else(|| panic!("no gradient on {dev}"))));
        }
    }
    all
}

fn abs(t: &Tensor) -> Tensor {
    Tensor::from_vec(host(t).iter().map(|x| x.abs()).collect::<Vec<f32>>(), t.shape()).unwrap()
}

/// Compares `f` under autocast on the GPU and the host, output and gradients, within `REL` times
/// the sum of |terms|: `f` itself on |inputs|.
fn check(what: &str, inputs: &[Tensor], grad: &[bool], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    check_scaled(what, inputs, grad, &f, &f)
}

/// [`check`] with the sums of |terms| from `scale_f` on |inputs| (for a packed weight, whose signs
/// `f` cannot drop: the same product over |dequant(W)|).
fn check_scaled(
    what: &str,
    inputs: &[Tensor],
    grad: &[bool],
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    scale_f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    let Some(dev) = gpu() else { return };
    let shape = f(inputs).unwrap().shape().to_vec();
    let w = rand(&shape, 99);
    let on_host = run(Device::Cpu, inputs, grad, &w, f);
    let on_gpu = run(dev, inputs, grad, &w, f);
    let abs_inputs: Vec<Tensor> = inputs.iter().map(abs).collect();
    let scale = run(Device::Cpu, &abs_inputs, grad, &abs(&w), scale_f);
    for (j, ((g, h), s)) in on_gpu.iter().zip(&on_host).zip(&scale).enumerate() {
        let part = if j == 0 { "forward".to_string() } else { format!("grad {}", j - 1) };
        for (i, ((a, b), s)) in g.iter().zip(h).zip(s).enumerate() {
            let tol = REL * s;
            assert!((a - b).abs() <= tol, "{what} {part}[{i}]: gpu {a}, host {b}, tol {tol:e}");
        }
    }
}

#[test]
fn matmul_under_autocast() {
    let (a, b) = (rand(&[67, 133], 1), rand(&[133, 45], 2));
    check("67x133 · 133x45", &[a.clone(), b.clone()], &[true, true], |v| v[0].matmul(&v[1]));
    // Multiples of 8, contiguous: the cp.async / ldmatrix kernel.
    check("64x128 · 128x96", &[rand(&[64, 128], 3), rand(&[128, 96], 4)], &[true, true], |v| v[0].matmul(&v[1]));
    check("Aᵀ · Bᵀ", &[rand(&[133, 67], 5), rand(&[45, 133], 6)], &[true, true], |v| v[0].t()?.matmul(&v[1].t()?));
    check("narrowed", &[a, b], &[true, true], |v| {
        v[0].narrow(0, 5, 40)?.narrow(1, 3, 100)?.matmul(&v[1].narrow(0, 20, 100)?)
    });
    check("[5,17,33]·[5,33,41]", &[rand(&[5, 17, 33], 7), rand(&[5, 33, 41], 8)], &[true, true], |v| {
        v[0].matmul(&v[1])
    });
    check("[4,1,17,23]·[3,23,19]", &[rand(&[4, 1, 17, 23], 9), rand(&[3, 23, 19], 10)], &[true, true], |v| {
        v[0].matmul(&v[1])
    });
    check("[2,9,31]·[31,13] frozen rhs", &[rand(&[2, 9, 31], 11), rand(&[31, 13], 12)], &[true, false], |v| {
        v[0].matmul(&v[1])
    });
}

#[test]
fn autocast_on_the_gpu_is_not_f32() {
    let Some(dev) = gpu() else { return };
    let (a, b) = (rand(&[37, 133], 13).to_device(dev).unwrap(), rand(&[133, 45], 14).to_device(dev).unwrap());
    let plain = host(&a.matmul(&b).unwrap());
    let cast = {
        let _g = autocast(DType::BF16).unwrap();
        host(&a.matmul(&b).unwrap())
    };
    let diff = plain.iter().zip(&cast).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-3, "autocast changed the GPU matmul by only {diff:e}");
}

#[test]
fn lora_linear_under_autocast() {
    let (x, w, bias) = (rand(&[3, 7, 70], 20), rand(&[41, 70], 21), rand(&[41], 22));
    let (a, b) = (rand(&[6, 70], 23), rand(&[41, 6], 24));
    let keep = rand(&[3, 7, 70], 25).ge(&Tensor::zeros(&[1], DType::F32)).unwrap();
    let mask = keep.to_dtype(DType::F32).unwrap().mul_scalar(2.0).unwrap();
    let inputs = [x, w, bias, a, b, mask];
    check("lora + bias", &inputs, &[true, true, true, true, true, false], |v| {
        lora_linear(&v[0], &v[1], Some(&v[2]), &v[3], &v[4], 0.5, None)
    });
    check("lora, dropout, transposed W", &inputs, &[true, true, false, true, true, false], |v| {
        let wt = v[1].t()?.contiguous()?.t()?;
        lora_linear(&v[0], &wt, None, &v[3], &v[4], 2.0, Some(&v[0].mul(&v[5])?))
    });
    // Multiples of 8: the fast tensor-core kernel for the base product.
    check(
        "lora 32x64 -> 48",
        &[rand(&[32, 64], 26), rand(&[48, 64], 27), rand(&[8, 64], 28), rand(&[48, 8], 29)],
        &[true, true, true, true],
        |v| lora_linear(&v[0], &v[1], None, &v[2], &v[3], 1.0, None),
    );
}

#[test]
fn packed_products_under_autocast() {
    let Some(dev) = gpu() else { return };
    for (i, (name, [out_f, in_f], q)) in bnb4_cases().into_iter().enumerate().take(2) {
        let pair = host_and_gpu(q, dev);
        let w_abs = abs(&engine::quant::dequantize_all(pair.0.as_ref()).unwrap());
        let seed = 60 + 10 * i as u64;
        let (x, bias) = (rand(&[2, 5, in_f], seed), rand(&[out_f], seed + 1));
        let (a, b) = (rand(&[4, in_f], seed + 2), rand(&[out_f, 4], seed + 3));
        check_scaled(
            &format!("qlora {name}"),
            &[x.clone(), bias.clone(), a, b],
            &[true, true, true, true],
            &|v| lora_linear_packed(&v[0], pick(&v[0], &pair), Some(&v[1]), &v[2], &v[3], 0.5, None),
            &|v| lora_linear(&v[0], &w_abs, Some(&v[1]), &v[2], &v[3], 0.5, None),
        );
        check_scaled(
            &format!("packed_linear {name}"),
            &[x, bias],
            &[true, true],
            &|v| packed_linear(&v[0], pick(&v[0], &pair), Some(&v[1])),
            &|v| v[0].matmul(&w_abs.t()?)?.add(&v[1]),
        );
    }
}
