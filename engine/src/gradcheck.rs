//! Finite-difference gradient checking: the independent reference every backward is tested against.
//! Public so that users who add their own ops can check them the same way.
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::random::Rng;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// Central-difference step.
    pub eps: f32,
    pub rtol: f32,
    pub atol: f32,
}

impl Default for GradCheck {
    /// Tolerances for f32 forward passes: the central difference itself has O(eps²) truncation error
    /// and O(ulp·|loss|/eps) rounding error, so ~1e-3 is what f32 allows.
    fn default() -> Self {
        GradCheck { eps: 1e-2, rtol: 1e-2, atol: 2e-3 }
    }
}

/// Σ out·w in f64, w a fixed pseudo-random weighting so every output element matters differently.
fn weighted_sum(out: &Tensor, seed: u64) -> Result<f64> {
    let v = out.to_vec_f32()?;
    let mut rng = Rng::new(seed);
    Ok(v.iter().map(|&x| x as f64 * (rng.next_f32() as f64 * 2.0 - 1.0)).sum())
}

/// Checks the analytic gradients of `f` with respect to each of `inputs` (f32) against central
/// differences. Returns an error naming the input, element and both values at the first mismatch.
pub fn check_gradients(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], cfg: GradCheck) -> Result<()> {
    const SEED: u64 = 0x5eed;
    let vars: Vec<Tensor> = inputs.iter().map(|t| t.contiguous()?.detach().requires_grad()).collect::<Result<_>>()?;
    let out = f(&vars)?;
    let w = {
        let mut rng = Rng::new(SEED);
        let v: Vec<f32> = (0..out.numel()).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        Tensor::from_vec(v, out.shape())?
    };
    let grads = out.mul(&w)?.sum_all()?.backward()?;
    let _g = no_grad();
    for (i, var) in vars.iter().enumerate() {
        let analytic = match grads.get(var) {
            Some(g) => g.to_vec_f32()?,
            None => vec![0.0; var.numel()],
        };
        let base = var.to_vec_f32()?;
        for j in 0..base.len() {
            let eval = |delta: f32| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let mut args = vars.clone();
                args[i] = Tensor::from_vec(v, var.shape())?;
                weighted_sum(&f(&args)?, SEED)
            };
            let numeric = ((eval(cfg.eps)? - eval(-cfg.eps)?) / (2.0 * cfg.eps as f64)) as f32;
            let a = analytic[j];
            // Written so that a NaN on either side fails the check.
            let within = (a - numeric).abs() <= cfg.atol + cfg.rtol * numeric.abs();
            if !within {
                return Err(Error::invalid(
                    "check_gradients",
                    format!("input {i} (shape {:?}) element {j}: analytic {a} vs numeric {numeric}", var.shape()),
                ));
            }
        }
    }
    Ok(())
}
