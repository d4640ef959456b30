//! `nn.Dropout` with reproducible masks: call `k` of a layer built with `seed` draws its mask from
//! the counter-based generator keyed by a mix of (seed, k), so every call gets a new mask and a run
//! repeats exactly from the same seed (and from a saved counter when resuming).
use super::sub_seed;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Dropout {
    p: f32,
    seed: u64,
    calls: AtomicU64,
    /// Identity when false (evaluation).
    pub training: bool,
}

impl Clone for Dropout {
    fn clone(&self) -> Self {
        Dropout { p: self.p, seed: self.seed, calls: AtomicU64::new(self.calls()), training: self.training }
    }
}

impl Dropout {
    /// Zeroes elements with probability `p` in [0, 1] and scales the rest by 1/(1 − p); starts in
    /// training mode.
    pub fn new(p: f32, seed: u64) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("Dropout::new", format!("probability {p} is outside [0, 1]")));
        }
        Ok(Dropout { p, seed, calls: AtomicU64::new(0), training: true })
    }

    pub fn p(&self) -> f32 {
        self.p
    }

    /// How many masks have been drawn (save it to resume a run exactly).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Sets the mask counter (restoring a saved run).
    pub fn set_calls(&self, calls: u64) {
        self.calls.store(calls, Ordering::Relaxed);
    }

    pub fn train(&mut self) {
        self.training = true;
    }

    pub fn eval(&mut self) {
        self.training = false;
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        let k = self.calls.fetch_add(1, Ordering::Relaxed);
        x.dropout(self.p, sub_seed(self.seed, k))
    }
}
