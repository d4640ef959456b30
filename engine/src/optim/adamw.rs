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
use super::{check_state_len, for_chunks, with_param_and_grad, Optimizer};
use crate::autograd::Grads;
use crate::error::{Error, Result};
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

#[derive(Clone, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    state: AdamWState,
}

impl Default for AdamW {
    /// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    fn default() -> Self {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, state: AdamWState::default() }
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
        self.validate()?;
        if self.state.params.len() < params.len() {
            self.state.params.resize(params.len(), None);
        }
        let (lr, b1, b2, eps, wd) =
            (self.lr as f64, self.beta1 as f64, self.beta2 as f64, self.eps, self.weight_decay as f64);
        for (i, p) in params.iter().enumerate() {
            let Some(g) = grads.get(p) else { continue };
            let st = self.state.params[i].get_or_insert_with(|| AdamWParamState {
                step: 0,
                exp_avg: vec![0.0; p.numel()],
                exp_avg_sq: vec![0.0; p.numel()],
            });
            check_state_len("AdamW::step", i, p, st.exp_avg.len())?;
            check_state_len("AdamW::step", i, p, st.exp_avg_sq.len())?;
            let t = st.step + 1;
            let decay = (1.0 - lr * wd) as f32;
            let bc1 = 1.0 - b1.powf(t as f64);
            let bc2_sqrt = (1.0 - b2.powf(t as f64)).sqrt() as f32;
            let neg_step_size = (-(lr / bc1)) as f32;
            let (w1, b2f, w2) = ((1.0 - b1) as f32, b2 as f32, (1.0 - b2) as f32);
            let apply_decay = wd != 0.0;
            let lerp_low = w1 < 0.5;
            let (m, v) = (&mut st.exp_avg, &mut st.exp_avg_sq);
            with_param_and_grad("AdamW::step", i, p, g, |p, g| {
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

    /// A copy of the optimizer state (moments and step counts), for checkpoints.
    pub fn state(&self) -> AdamWState {
        self.state.clone()
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
        self.state = state;
        Ok(())
    }

    /// The state as named tensors (`"{i}.exp_avg"`, `"{i}.exp_avg_sq"` f32 shaped like parameter
    /// `i`, `"{i}.step"` a 0-d i64), for saving alongside the model's weights.
    pub fn state_tensors(&self, params: &[Tensor]) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, s) in self.state.params.iter().enumerate() {
            let Some(s) = s else { continue };
            let p = params.get(i).ok_or_else(|| {
                Error::invalid(
                    "AdamW::state_tensors",
                    format!("state for parameter {i} but only {} parameters given", params.len()),
                )
            })?;
            check_state_len("AdamW::state_tensors", i, p, s.exp_avg.len())?;
            out.push((format!("{i}.exp_avg"), Tensor::from_slice(&s.exp_avg, p.shape())?));
            out.push((format!("{i}.exp_avg_sq"), Tensor::from_slice(&s.exp_avg_sq, p.shape())?));
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
                    let (m, v) = (m.to_vec::<f32>()?, v.to_vec::<f32>()?);
                    check_state_len(op, i, p, m.len())?;
                    check_state_len(op, i, p, v.len())?;
                    let step = s.to_vec::<i64>()?;
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
        self.state = state;
        Ok(())
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
