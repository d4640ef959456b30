//! SGD exactly as `torch.optim.SGD` (not maximizing):
//!
//! ```text
//! d ← g + wd·p
//! if momentum ≠ 0:
//!     b ← d                                  on the parameter's first update
//!     b ← momentum·b + (1 − dampening)·d     afterwards
//!     d ← d + momentum·b   (nesterov)   or   d ← b
//! p ← p − lr·d
//! ```
use super::{check_state_len, for_chunks, with_param_and_grad, Optimizer};
use crate::autograd::Grads;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Momentum buffers by position in the parameter list (`None`: no buffer yet).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SgdState {
    pub momentum_buffers: Vec<Option<Vec<f32>>>,
}

#[derive(Clone, Debug)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    state: SgdState,
}

impl Sgd {
    /// Plain SGD (no momentum, dampening or weight decay), like `torch.optim.SGD(params, lr)`.
    pub fn new(lr: f32) -> Self {
        Sgd { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false, state: SgdState::default() }
    }
    pub fn with_momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }
    pub fn with_dampening(mut self, dampening: f32) -> Self {
        self.dampening = dampening;
        self
    }
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f32| Err(Error::invalid("Sgd", format!("invalid {what}: {v}")));
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            return bad("learning rate", self.lr);
        }
        if !(self.momentum >= 0.0 && self.momentum.is_finite()) {
            return bad("momentum", self.momentum);
        }
        if !self.dampening.is_finite() {
            return bad("dampening", self.dampening);
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight decay", self.weight_decay);
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid("Sgd", "nesterov momentum requires a momentum > 0 and zero dampening"));
        }
        Ok(())
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, params: &[Tensor], grads: &Grads) -> Result<()> {
        self.validate()?;
        let bufs = &mut self.state.momentum_buffers;
        if bufs.len() < params.len() {
            bufs.resize(params.len(), None);
        }
        let (neg_lr, mom, damp1, wd, nesterov) =
            (-self.lr, self.momentum, 1.0 - self.dampening, self.weight_decay, self.nesterov);
        for (i, p) in params.iter().enumerate() {
            let Some(g) = grads.get(p) else { continue };
            if mom == 0.0 {
                with_param_and_grad("Sgd::step", i, p, g, |p, g| {
                    for_chunks(p, g, [], |p, g, []| {
                        for j in 0..p.len() {
                            let d = if wd != 0.0 { g[j] + wd * p[j] } else { g[j] };
                            p[j] += neg_lr * d;
                        }
                    })
                })?;
                continue;
            }
            let first = bufs[i].is_none();
            let buf = bufs[i].get_or_insert_with(|| vec![0.0; p.numel()]);
            check_state_len("Sgd::step", i, p, buf.len())?;
            with_param_and_grad("Sgd::step", i, p, g, |p, g| {
                for_chunks(p, g, [buf.as_mut_slice()], |p, g, [b]| {
                    for j in 0..p.len() {
                        let d = if wd != 0.0 { g[j] + wd * p[j] } else { g[j] };
                        let bj = if first { d } else { b[j] * mom + damp1 * d };
                        b[j] = bj;
                        let d = if nesterov { d + mom * bj } else { bj };
                        p[j] += neg_lr * d;
                    }
                })
            })?;
        }
        Ok(())
    }

    /// A copy of the momentum buffers, for checkpoints.
    pub fn state(&self) -> SgdState {
        self.state.clone()
    }

    /// Replaces the momentum buffers with ones saved by `state()`, after checking that they fit
    /// `params` (the list that will be passed to `step`).
    pub fn load_state(&mut self, state: SgdState, params: &[Tensor]) -> Result<()> {
        if state.momentum_buffers.len() > params.len() {
            return Err(Error::invalid(
                "Sgd::load_state",
                format!(
                    "the state has {} entries but only {} parameters were given",
                    state.momentum_buffers.len(),
                    params.len()
                ),
            ));
        }
        for (i, b) in state.momentum_buffers.iter().enumerate() {
            if let Some(b) = b {
                check_state_len("Sgd::load_state", i, &params[i], b.len())?;
            }
        }
        self.state = state;
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &[Tensor], grads: &Grads) -> Result<()> {
        Sgd::step(self, params, grads)
    }
    fn lr(&self) -> f32 {
        self.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }
}
