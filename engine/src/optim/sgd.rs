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
//!
//! On a GPU the `sgd_f32` kernel runs the update (see `cuda::sgd_step` for dampening and Nesterov),
//! equal to the host's up to rounding, with the momentum buffers on the parameter's GPU.
use super::{check_state_len, for_chunks, with_param_and_grad, Moment, Optimizer};
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
    /// Momentum buffers by parameter position, on the parameters' devices.
    state: Vec<Option<Moment>>,
}

impl Sgd {
    /// Plain SGD (no momentum, dampening or weight decay), like `torch.optim.SGD(params, lr)`.
    pub fn new(lr: f32) -> Self {
        Sgd { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false, state: Vec::new() }
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
        const OP: &str = "Sgd::step";
        self.validate()?;
        let bufs = &mut self.state;
        if bufs.len() < params.len() {
            bufs.resize(params.len(), None);
        }
        let (neg_lr, mom, damp1, wd, nesterov) =
            (-self.lr, self.momentum, 1.0 - self.dampening, self.weight_decay, self.nesterov);
        for (i, p) in params.iter().enumerate() {
            let Some(g) = grads.get(p) else { continue };
            let device = p.device();
            let first = bufs[i].is_none();
            #[cfg(feature = "cuda")]
            if let crate::storage::Device::Cuda(o) = device {
                let h = super::cuda::SgdStep {
                    lr: self.lr,
                    momentum: mom,
                    dampening: self.dampening,
                    weight_decay: wd,
                    nesterov,
                    first,
                };
                let buf = match (mom == 0.0, &mut bufs[i]) {
                    (true, _) => None,
                    (false, Some(b)) => {
                        check_state_len(OP, i, p, b.len())?;
                        b.move_to(OP, device)?;
                        match b {
                            Moment::Gpu { buf, .. } => Some(buf),
                            Moment::Host(_) => return Err(Error::invalid(OP, "momentum buffer left on the host")),
                        }
                    }
                    (false, empty) => match empty.insert(Moment::zeros(OP, device, p.numel())?) {
                        Moment::Gpu { buf, .. } => Some(buf),
                        Moment::Host(_) => return Err(Error::invalid(OP, "momentum buffer made on the host")),
                    },
                };
                super::cuda::sgd_step(OP, i, o, p, g, buf, &h)?;
                continue;
            }
            if mom == 0.0 {
                with_param_and_grad(OP, i, p, g, |p, g| {
                    for_chunks(p, g, [], |p, g, []| {
                        for j in 0..p.len() {
                            let d = if wd != 0.0 { g[j] + wd * p[j] } else { g[j] };
                            p[j] += neg_lr * d;
                        }
                    })
                })?;
                continue;
            }
            let buf = match &mut bufs[i] {
                Some(b) => b,
                empty => empty.insert(Moment::zeros(OP, device, p.numel())?),
            };
            check_state_len(OP, i, p, buf.len())?;
            buf.move_to(OP, device)?;
            let buf = buf.host_mut(OP)?;
            with_param_and_grad(OP, i, p, g, |p, g| {
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

    /// A copy of the momentum buffers on the host, for checkpoints (buffers on a GPU are downloaded).
    pub fn state(&self) -> Result<SgdState> {
        let bufs = self.state.iter().map(|b| b.as_ref().map(|b| b.to_host("Sgd::state")).transpose());
        Ok(SgdState { momentum_buffers: bufs.collect::<Result<_>>()? })
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
        self.state = state.momentum_buffers.into_iter().map(|b| b.map(Moment::Host)).collect();
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
