//! AdamW exactly as `torch.optim.AdamW` (non-amsgrad, not maximizing):
//!
//! ```text
//! p  ← p·(1 − lr·wd)                       decoupled weight decay, first
//! m  ← m + (1 − β1)·(g − m)                 (= β1·m + (1 − β1)·g, PyTorch's lerp)
//! v  ← β2·v + (1 − β2)·g²
//! p  ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//!
//! with `t` the parameter's own step count (starting at 1) and the moments starting at zero. The
//! scalar factors are computed in f64 and the per-element arithmetic in f32, in PyTorch's order.
//!
//! On a GPU the `adamw_f32` kernel runs the same update with its own association (`β1·m + (1−β1)·g`,
//! `√(v / (1 − β2ᵗ))`, bias corrections rounded to f32): equal to the host's to a few ulps, not bit
//! for bit. The moments stay on the parameter's GPU.
use super::{check_state_len, for_chunks, with_param_and_grad, Moment, Optimizer};
use crate::autograd::Grads;
use crate::error::{Error, Result};
use crate::storage::Device;
use crate::tensor::Tensor;

/// One parameter's AdamW state.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWParamState {
    /// Number of updates this parameter has received.
    pub step: u64,
    /// First moment (PyTorch's `exp_avg`), one value per element.
    pub exp_avg: Vec<f32>,
    /// Second moment (PyTorch's `exp_avg_sq`).
    pub exp_avg_sq: Vec<f32>,
}

/// The state of every parameter, by position in the parameter list (`None`: never updated).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdamWState {
    pub params: Vec<Option<AdamWParamState>>,
}

/// One parameter's state where it lives (the moments on the parameter's device).
#[derive(Clone, Debug)]
struct Slot {
    step: u64,
    exp_avg: Moment,
    exp_avg_sq: Moment,
}

impl Slot {
    fn export(&self, op: &'static str) -> Result<AdamWParamState> {
        Ok(AdamWParamState {
            step: self.step,
            exp_avg: self.exp_avg.to_host(op)?,
            exp_avg_sq: self.exp_avg_sq.to_host(op)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    state: Vec<Option<Slot>>,
}

impl Default for AdamW {
    /// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    fn default() -> Self {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, state: Vec::new() }
    }
}

impl AdamW {
    /// PyTorch's defaults with the given learning rate.
    pub fn new(lr: f32) -> Self {
        AdamW { lr, ..AdamW::default() }
    }
    pub fn with_betas(mut self, beta1: f32, beta2: f32) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }
    pub fn with_eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f32| Err(Error::invalid("AdamW", format!("invalid {what}: {v}")));
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            return bad("learning rate", self.lr);
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("beta1 (must be in [0, 1))", self.beta1);
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2 (must be in [0, 1))", self.beta2);
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return bad("eps", self.eps);
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight decay", self.weight_decay);
        }
        Ok(())
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, params: &[Tensor], grads: &Grads) -> Result<()> {
        const OP: &str = "AdamW::step";
        self.validate()?;
        if self.state.len() < params.len() {
            self.state.resize(params.len(), None);
        }
        let (lr, b1, b2, eps, wd) =
            (self.lr as f64, self.beta1 as f64, self.beta2 as f64, self.eps, self.weight_decay as f64);
        for (i, p) in params.iter().enumerate() {
            let Some(g) = grads.get(p) else { continue };
            let device = p.device();
            let st = match &mut self.state[i] {
                Some(st) => st,
                empty => empty.insert(Slot {
                    step: 0,
                    exp_avg: Moment::zeros(OP, device, p.numel())?,
                    exp_avg_sq: Moment::zeros(OP, device, p.numel())?,
                }),
            };
            check_state_len(OP, i, p, st.exp_avg.len())?;
            check_state_len(OP, i, p, st.exp_avg_sq.len())?;
            st.exp_avg.move_to(OP, device)?;
            st.exp_avg_sq.move_to(OP, device)?;
            let t = st.step + 1;
            #[cfg(feature = "cuda")]
            if let (Moment::Gpu { ordinal, buf: m }, Moment::Gpu { buf: v, .. }) = (&mut st.exp_avg, &mut st.exp_avg_sq)
            {
                let step = u32::try_from(t).map_err(|_| {
                    Error::invalid(OP, format!("step {t} of parameter {i} exceeds the GPU kernel's u32 count"))
                })?;
                let h = cuda::ops::AdamW {
                    lr: self.lr,
                    beta1: self.beta1,
                    beta2: self.beta2,
                    eps,
                    weight_decay: self.weight_decay,
                    step,
                };
                super::cuda::adamw_step(OP, i, *ordinal, p, g, m, v, &h)?;
                st.step = t;
                continue;
            }
            let decay = (1.0 - lr * wd) as f32;
            let bc1 = 1.0 - b1.powf(t as f64);
            let bc2_sqrt = (1.0 - b2.powf(t as f64)).sqrt() as f32;
            let neg_step_size = (-(lr / bc1)) as f32;
            let (w1, b2f, w2) = ((1.0 - b1) as f32, b2 as f32, (1.0 - b2) as f32);
            let apply_decay = wd != 0.0;
            let lerp_low = w1 < 0.5;
            let (m, v) = (st.exp_avg.host_mut(OP)?, st.exp_avg_sq.host_mut(OP)?);
            with_param_and_grad(OP, i, p, g, |p, g| {
                for_chunks(p, g, [m.as_mut_slice(), v.as_mut_slice()], |p, g, [m, v]| {
                    for j in 0..p.len() {
                        let gj = g[j];
                        let mut pj = p[j];
                        if apply_decay {
                            pj *= decay;
                        }
                        // PyTorch's lerp picks its formula by the weight, for accuracy near 1.
                        let mj = if lerp_low { m[j] + w1 * (gj - m[j]) } else { gj - (gj - m[j]) * (1.0 - w1) };
                        let vj = v[j] * b2f + w2 * gj * gj;
                        m[j] = mj;
                        v[j] = vj;
                        let denom = vj.sqrt() / bc2_sqrt + eps;
                        p[j] = pj + neg_step_size * (mj / denom);
                    }
                })
            })?;
            st.step = t;
        }
        Ok(())
    }

    /// A copy of the optimizer state (moments and step counts) on the host, for checkpoints; moments
    /// on a GPU are downloaded.
    pub fn state(&self) -> Result<AdamWState> {
        let params = self.state.iter().map(|s| s.as_ref().map(|s| s.export("AdamW::state")).transpose());
        Ok(AdamWState { params: params.collect::<Result<_>>()? })
    }

    /// Replaces the optimizer state with one saved by `state()`, after checking that it fits
    /// `params` (the list that will be passed to `step`).
    pub fn load_state(&mut self, state: AdamWState, params: &[Tensor]) -> Result<()> {
        if state.params.len() > params.len() {
            return Err(Error::invalid(
                "AdamW::load_state",
                format!("the state has {} entries but only {} parameters were given", state.params.len(), params.len()),
            ));
        }
        for (i, s) in state.params.iter().enumerate() {
            if let Some(s) = s {
                check_state_len("AdamW::load_state", i, &params[i], s.exp_avg.len())?;
                check_state_len("AdamW::load_state", i, &params[i], s.exp_avg_sq.len())?;
            }
        }
        self.state = state.params.into_iter().map(|s| s.map(Slot::from)).collect();
        Ok(())
    }

    /// The state as named tensors (`"{i}.exp_avg"`, `"{i}.exp_avg_sq"` f32 shaped like parameter
    /// `i`, `"{i}.step"` a 0-d i64), for saving alongside the model's weights.
    pub fn state_tensors(&self, params: &[Tensor]) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, s) in self.state.iter().enumerate() {
            let Some(s) = s else { continue };
            let s = s.export("AdamW::state_tensors")?;
            let p = params.get(i).ok_or_else(|| {
                Error::invalid(
                    "AdamW::state_tensors",
                    format!("state for parameter {i} but only {} parameters given", params.len()),
                )
            })?;
            check_state_len("AdamW::state_tensors", i, p, s.exp_avg.len())?;
            out.push((format!("{i}.exp_avg"), Tensor::from_vec(s.exp_avg, p.shape())?));
            out.push((format!("{i}.exp_avg_sq"), Tensor::from_vec(s.exp_avg_sq, p.shape())?));
            out.push((format!("{i}.step"), Tensor::from_vec(vec![s.step as i64], &[])?));
        }
        Ok(out)
    }

    /// Loads a state written by `state_tensors`.
    pub fn load_state_tensors(&mut self, tensors: &[(String, Tensor)], params: &[Tensor]) -> Result<()> {
        let op = "AdamW::load_state_tensors";
        let mut state = AdamWState { params: vec![None; params.len()] };
        let find = |name: String| tensors.iter().find(|(n, _)| *n == name).map(|(_, t)| t);
        for (i, p) in params.iter().enumerate() {
            let (m, v, s) = (find(format!("{i}.exp_avg")), find(format!("{i}.exp_avg_sq")), find(format!("{i}.step")));
            match (m, v, s) {
                (None, None, None) => {}
                (Some(m), Some(v), Some(s)) => {
                    let host = |t: &Tensor| t.to_device(Device::Cpu)?.to_vec::<f32>();
                    let (m, v) = (host(m)?, host(v)?);
                    check_state_len(op, i, p, m.len())?;
                    check_state_len(op, i, p, v.len())?;
                    let step = s.to_device(Device::Cpu)?.to_vec::<i64>()?;
                    let step = match step.as_slice() {
                        [s] if *s >= 0 => *s as u64,
                        _ => return Err(Error::invalid(op, format!("{i}.step must hold one non-negative integer"))),
                    };
                    state.params[i] = Some(AdamWParamState { step, exp_avg: m, exp_avg_sq: v });
                }
                _ => return Err(Error::invalid(op, format!("incomplete state for parameter {i}"))),
            }
        }
        let expected = state.params.iter().flatten().count() * 3;
        if expected != tensors.len() {
            return Err(Error::invalid(
                op,
                format!("{} tensors given but {expected} belong to the {} parameters", tensors.len(), params.len()),
            ));
        }
        self.state = state.params.into_iter().map(|s| s.map(Slot::from)).collect();
        Ok(())
    }
}

impl From<AdamWParamState> for Slot {
    /// A loaded state starts on the host; `step` moves it to its parameter's device.
    fn from(s: AdamWParamState) -> Slot {
        Slot { step: s.step, exp_avg: Moment::Host(s.exp_avg), exp_avg_sq: Moment::Host(s.exp_avg_sq) }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &[Tensor], grads: &Grads) -> Result<()> {
        AdamW::step(self, params, grads)
    }
    fn lr(&self) -> f32 {
        self.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }
}
