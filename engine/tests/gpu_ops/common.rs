//! What every GPU op test shares: the device, random inputs, and `check`, which runs a function of
//! tensors on both devices and compares outputs and input gradients.
use engine::{Device, Result, Tensor};

/// GPU 0, or `None` (after saying why) when there is none and REQUIRE_GPU is not 1.
pub fn gpu() -> Option<Device> {
    match Tensor::zeros(&[1], engine::DType::F32).to_device(Device::Cuda(0)) {
        Ok(_) => Some(Device::Cuda(0)),
        Err(e) if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") => panic!("REQUIRE_GPU=1 but: {e}"),
        Err(e) => {
            eprintln!("skipped, no GPU: {e}");
            None
        }
    }
}

pub fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed).unwrap()
}

/// Host copy of any tensor as f32, row-major.
pub fn host(t: &Tensor) -> Vec<f32> {
    t.to_device(Device::Cpu).unwrap().contiguous().unwrap().to_vec_f32().unwrap()
}

pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.device(), Device::Cuda(0), "{what}: the result left the GPU");
    let (g, w) = (host(got), host(want));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let tol = rel * b.abs().max(1.0);
        assert!((a - b).abs() <= tol || (a.is_nan() && b.is_nan()), "{what}[{i}]: gpu {a}, host {b}, tol {tol:e}");
    }
}

/// Runs `f` on `inputs` on the host and on the GPU (each input a variable on both), compares the
/// outputs, then backpropagates `sum(out * w)` for a random `w` on both and compares each input's
/// gradient. `grad` lists which inputs to differentiate (others are passed as constants).
pub fn check(what: &str, inputs: &[Tensor], grad: &[bool], rel: f32, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let Some(dev) = gpu() else { return };
    let prep = |on: Device| -> Vec<Tensor> {
        inputs
            .iter()
            .zip(grad)
            .map(|(t, &g)| {
                let moved = t.to_device(on).unwrap();
                if g {
                    moved.requires_grad().unwrap()
                } else {
                    moved
                }
            })
            .collect()
    };
    let (xc, xg) = (prep(Device::Cpu), prep(dev));
    let (oc, og) = (f(&xc).unwrap(), f(&xg).unwrap_or_else(|e| panic!("{what} on the GPU: {e}")));
    assert_close(&format!("{what} forward"), &og, &oc, rel);
    if !grad.iter().any(|&g| g) {
        return;
    }
    let w = rand(oc.shape(), 99);
    let gc = oc.mul(&w).unwrap().backward().unwrap();
    let gg = og.mul(&w.to_device(dev).unwrap()).unwrap().backward().unwrap();
    for (i, (c, g)) in xc.iter().zip(&xg).enumerate() {
        if !grad[i] {
            continue;
        }
        let want = gc.get(c).unwrap_or_else(|| panic!("{what}: no host gradient for input {i}"));
        let got = gg.get(g).unwrap_or_else(|| panic!("{what}: no GPU gradient for input {i}"));
        assert_close(&format!("{what} grad {i}"), got, want, rel);
    }
}
