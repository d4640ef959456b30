//! LoRA (Hu et al. 2021): `y = x·Wᵀ + s · dropout(x)·Aᵀ·Bᵀ` with A `[r, in]`, B `[out, r]`,
//! s = α/r (α/√r with rsLoRA). W + BA is never formed while training: the frozen W costs no
//! gradient memory, and the low-rank path is two thin GEMMs.
use engine::nn::{Linear, LinearHook};
use engine::{Result, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One adapter's weights on one layer.
#[derive(Clone, Debug)]
pub struct LoraWeights {
    /// `[r, in_features]`.
    pub a: Tensor,
    /// `[out_features, r]`.
    pub b: Tensor,
    pub scaling: f32,
    pub dropout: f32,
}

/// Training state every LoRA layer of a model reads: whether dropout is on, and the seeds of the
/// masks. A mask depends on (seed, step, layer, call within the step), so a resumed run draws the
/// same masks as an uninterrupted one.
#[derive(Debug, Default)]
pub struct DropoutClock {
    pub seed: AtomicU64,
    pub step: AtomicU64,
    pub training: AtomicBool,
}

fn mix(mut h: u64, v: u64) -> u64 {
    h ^= v.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(h << 6).wrapping_add(h >> 2);
    h.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

#[derive(Debug, Default)]
struct LayerState {
    adapters: BTreeMap<String, LoraWeights>,
    active: Vec<String>,
    disabled: bool,
    /// Adapters currently folded into the base weight.
    merged: Vec<String>,
    /// The base weight before the first merge: unmerging restores it bit for bit (PEFT subtracts,
    /// which leaves rounding residue).
    unmerged_weight: Option<Tensor>,
}

/// The hook installed on a wrapped Linear.
#[derive(Debug)]
pub struct LoraLayer {
    state: RwLock<LayerState>,
    clock: Arc<DropoutClock>,
    layer_index: u64,
    calls: AtomicU64,
    last_step: AtomicU64,
}

impl LoraLayer {
    pub fn new(clock: Arc<DropoutClock>, layer_index: u64) -> Self {
        LoraLayer {
            state: RwLock::default(),
            clock,
            layer_index,
            calls: AtomicU64::new(0),
            last_step: AtomicU64::new(u64::MAX),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LayerState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, LayerState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, name: &str, w: LoraWeights) {
        self.write().adapters.insert(name.to_string(), w);
    }
    pub fn remove(&self, name: &str) {
        let mut s = self.write();
        s.adapters.remove(name);
        s.active.retain(|a| a != name);
    }
    pub fn get(&self, name: &str) -> Option<LoraWeights> {
        self.read().adapters.get(name).cloned()
    }
    pub fn set_weights(&self, name: &str, w: LoraWeights) {
        self.write().adapters.insert(name.to_string(), w);
    }
    pub fn set_active(&self, names: &[String]) {
        self.write().active = names.to_vec();
    }
    pub fn set_disabled(&self, disabled: bool) {
        self.write().disabled = disabled;
    }
    pub fn adapter_names(&self) -> Vec<String> {
        self.read().adapters.keys().cloned().collect()
    }
    pub fn merged(&self) -> Vec<String> {
        self.read().merged.clone()
    }
    pub(crate) fn set_merged(&self, merged: Vec<String>) {
        self.write().merged = merged;
    }
    pub(crate) fn keep_unmerged_weight(&self, w: &Tensor) {
        let mut s = self.write();
        if s.unmerged_weight.is_none() {
            s.unmerged_weight = Some(w.clone());
        }
    }
    pub(crate) fn take_unmerged_weight(&self) -> Option<Tensor> {
        self.write().unmerged_weight.take()
    }

    /// Seed of the next dropout mask of this layer.
    fn mask_seed(&self) -> u64 {
        let step = self.clock.step.load(Ordering::Relaxed);
        if self.last_step.swap(step, Ordering::Relaxed) != step {
            self.calls.store(0, Ordering::Relaxed);
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        mix(mix(mix(self.clock.seed.load(Ordering::Relaxed), step), self.layer_index), call)
    }

    /// `B·A·scaling`, the update this adapter adds to the `[out, in]` weight.
    pub fn delta(w: &LoraWeights) -> Result<Tensor> {
        let _g = engine::no_grad();
        w.b.matmul(&w.a)?.mul_scalar(w.scaling)
    }
}

impl LinearHook for LoraLayer {
    fn forward(&self, base: &Linear, x: &Tensor) -> Result<Tensor> {
        let s = self.read();
        let training = self.clock.training.load(Ordering::Relaxed);
        let live: Vec<&LoraWeights> = if s.disabled {
            Vec::new()
        } else {
            s.active.iter().filter(|n| !s.merged.contains(n)).filter_map(|n| s.adapters.get(n)).collect()
        };
        let dropped = |w: &LoraWeights| -> Result<Option<Tensor>> {
            Ok(if training && w.dropout > 0.0 { Some(x.dropout(w.dropout, self.mask_seed())?) } else { None })
        };
        match live.as_slice() {
            [] => base.forward(x),
            // The usual case, one adapter: the fused op keeps one activation instead of four
            // (over a packed 4-bit base too: QLoRA).
            [w] if x.rank() >= 2 => {
                let xd = dropped(w)?;
                match &base.packed {
                    Some(p) => engine::lora_linear_packed(x, p, base.bias.as_ref(), &w.a, &w.b, w.scaling, xd.as_ref()),
                    None => {
                        engine::lora_linear(x, &base.weight, base.bias.as_ref(), &w.a, &w.b, w.scaling, xd.as_ref())
                    }
                }
            }
            several => {
                let mut y = base.forward(x)?;
                for w in several {
                    let xin = dropped(w)?.unwrap_or_else(|| x.clone());
                    let low = xin.matmul(&w.a.t()?)?.matmul(&w.b.t()?)?;
                    y = y.add(&low.mul_scalar(w.scaling)?)?;
                }
                Ok(y)
            }
        }
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let s = self.read();
        let mut out = Vec::new();
        for (name, w) in &s.adapters {
            out.push((format!("lora_A.{name}.weight"), w.a.clone()));
            out.push((format!("lora_B.{name}.weight"), w.b.clone()));
        }
        out
    }
}
