//! One bottleneck adapter at one place of a block, computed as `adapters`' `Adapter` /
//! `ParallelAdapter` (`pre_forward`, `forward`, `post_forward`) do:
//!
//! sequential: `x` = the sublayer output `h`, or `norm(h + r)` with `original_ln_before`;
//! `out = up(act(down(ln_before(x)))) · scaling` (dropout, optional gate), plus the adapter's own
//! residual (`h`, `x` or `h + r` as `residual_before_ln` says, before or after `ln_after`), and
//! finally `norm(out + r)` with `original_ln_after`;
//! parallel: the bottleneck reads the block's residual input `r`, its output is added to `h`, then
//! `norm(· + r)`.
use super::config::{BnConfig, InitWeights, ResidualBeforeLn, Scaling};
use crate::lora::DropoutClock;
use engine::nn::residual_hook::default_residual;
use engine::nn::{BlockNorm, LayerNorm, Linear, Module, ResidualHook, Sublayer};
use engine::{DType, Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The non-linearities `adapters` resolves through transformers' `get_activation` (plus its own
/// `leakyrelu`), by the lower-case names configs use.
const ACTIVATIONS: [&str; 12] = [
    "relu",
    "gelu",
    "gelu_new",
    "gelu_fast",
    "gelu_pytorch_tanh",
    "swish",
    "silu",
    "tanh",
    "sigmoid",
    "quick_gelu",
    "leakyrelu",
    "linear",
];

pub(crate) fn check_activation(name: &str) -> Result<()> {
    if ACTIVATIONS.contains(&name) {
        Ok(())
    } else {
        Err(Error::invalid(
            "bottleneck config",
            format!("non_linearity `{name}` is not supported (supported: {})", ACTIVATIONS.join(", ")),
        ))
    }
}

fn activation(name: &str, x: &Tensor) -> Result<Tensor> {
    match name {
        "relu" => x.relu(),
        "gelu" => x.gelu(),
        "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => x.gelu_tanh(),
        "swish" | "silu" => x.silu(),
        "tanh" => x.tanh(),
        "sigmoid" => x.sigmoid(),
        "quick_gelu" => x.mul(&x.mul_scalar(1.702)?.sigmoid()?),
        // PyTorch's default negative slope 0.01: 0.01·x + 0.99·relu(x).
        "leakyrelu" => x.mul_scalar(0.01)?.add(&x.relu()?.mul_scalar(0.99)?),
        "linear" => Ok(x.clone()),
        other => Err(Error::invalid("bottleneck adapter", format!("unsupported non_linearity `{other}`"))),
    }
}

/// An adapter's tensors, named as `adapters`' state dict names them under `adapters.<name>.`.
#[derive(Clone, Debug)]
pub struct BottleneckWeights {
    /// `ln_before` (registered twice in `adapters`: `adapter_norm_before` and `adapter_down.0`).
    pub norm_before: Option<LayerNorm>,
    /// `[bottleneck, hidden]` projection (`adapter_down.0`, or `.1` after `ln_before`).
    pub down: Linear,
    /// `[hidden, bottleneck]` projection (`adapter_up`).
    pub up: Linear,
    /// `ln_after` (`adapter_norm_after`).
    pub norm_after: Option<LayerNorm>,
    /// `scaling` when learned: `[1]` or `[hidden]`.
    pub scaling: Option<Tensor>,
    /// `use_gating`: Linear `hidden → 1` (`gate`).
    pub gate: Option<Linear>,
}

const LN_EPS: f32 = 1e-5;

/// A seed for the `k`-th random tensor of an adapter built from `seed`.
fn sub(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ (k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// N(0, std²) truncated to [-2·std, 2·std] by redrawing (PyTorch's `trunc_normal_` with a = -2σ, b = 2σ).
fn trunc_normal(shape: &[usize], std: f32, seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = engine::random::Rng::new(seed);
    let v: Vec<f32> = (0..n)
        .map(|_| loop {
            let z = rng.next_normal();
            if z.abs() <= 2.0 {
                break z * std;
            }
        })
        .collect();
    Tensor::from_vec(v, shape)
}

impl BottleneckWeights {
    /// Fresh weights by the config's `init_weights` rule, from `seed`.
    pub fn init(config: &BnConfig, hidden: usize, bottleneck: usize, seed: u64) -> Result<BottleneckWeights> {
        let zeros = |n: usize| Tensor::zeros(&[n], DType::F32);
        let (down_w, up_w) = match config.init_weights {
            InitWeights::Bert => (
                Tensor::randn(&[bottleneck, hidden], 0.0, 0.02, sub(seed, 0))?,
                Tensor::randn(&[hidden, bottleneck], 0.0, 0.02, sub(seed, 1))?,
            ),
            InitWeights::MamAdapter => (
                Tensor::kaiming_uniform(&[bottleneck, hidden], 5f32.sqrt(), sub(seed, 0))?,
                Tensor::zeros(&[hidden, bottleneck], DType::F32),
            ),
            InitWeights::Houlsby => (
                trunc_normal(&[bottleneck, hidden], 0.01, sub(seed, 0))?,
                trunc_normal(&[hidden, bottleneck], 0.01, sub(seed, 1))?,
            ),
        };
        let norm = || -> Result<LayerNorm> {
            LayerNorm::from_tensors(Some(Tensor::ones(&[hidden], DType::F32)?), Some(zeros(hidden)), LN_EPS)
        };
        let gate = if config.use_gating {
            // `adapters` initialises the gate with BERT's rule under every init_weights.
            Some(Linear::from_tensors(Tensor::randn(&[1, hidden], 0.0, 0.02, sub(seed, 2))?, Some(zeros(1)))?)
        } else {
            None
        };
        Ok(BottleneckWeights {
            norm_before: if config.ln_before { Some(norm()?) } else { None },
            down: Linear::from_tensors(down_w, Some(zeros(bottleneck)))?,
            up: Linear::from_tensors(up_w, Some(zeros(hidden)))?,
            norm_after: if config.ln_after { Some(norm()?) } else { None },
            scaling: match config.scaling {
                Scaling::Fixed(_) => None,
                Scaling::Learned => Some(Tensor::ones(&[1], DType::F32)?),
                Scaling::Channel => Some(Tensor::ones(&[hidden], DType::F32)?),
            },
            gate,
        })
    }

    /// The state-dict names (relative to `adapters.<name>.`) with their tensors, in `adapters`'
    /// registration order. `with_aliases` adds the second name `ln_before` has (`adapter_down.0.*`),
    /// which `adapters`' state dict — and so its files — carry too.
    pub fn named_tensors(&self, with_aliases: bool) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let add = |out: &mut Vec<(String, Tensor)>, prefix: &str, m: &dyn Module| {
            out.extend(m.named_parameters().into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)));
        };
        let down = if let Some(n) = &self.norm_before {
            add(&mut out, "adapter_norm_before", n);
            if with_aliases {
                add(&mut out, "adapter_down.0", n);
            }
            "adapter_down.1"
        } else {
            "adapter_down.0"
        };
        add(&mut out, down, &self.down);
        add(&mut out, "adapter_up", &self.up);
        if let Some(s) = &self.scaling {
            out.push(("scaling".to_string(), s.clone()));
        }
        if let Some(n) = &self.norm_after {
            add(&mut out, "adapter_norm_after", n);
        }
        if let Some(g) = &self.gate {
            add(&mut out, "gate", g);
        }
        out
    }

    /// Every tensor handle, in `named_tensors(false)` order (to make them trainable or frozen).
    fn handles_mut(&mut self) -> Vec<&mut Tensor> {
        let mut out: Vec<&mut Tensor> = Vec::new();
        if let Some(n) = &mut self.norm_before {
            out.extend(n.parameters_mut());
        }
        out.extend(self.down.parameters_mut());
        out.extend(self.up.parameters_mut());
        if let Some(s) = &mut self.scaling {
            out.push(s);
        }
        if let Some(n) = &mut self.norm_after {
            out.extend(n.parameters_mut());
        }
        if let Some(g) = &mut self.gate {
            out.extend(g.parameters_mut());
        }
        out
    }

    /// The same structure over other tensors, given in `named_tensors(false)` order (e.g. to check
    /// gradients with respect to them).
    pub fn with_tensors(&self, tensors: &[Tensor]) -> Result<BottleneckWeights> {
        let mut w = self.clone();
        let handles = w.handles_mut();
        if handles.len() != tensors.len() {
            return Err(Error::invalid(
                "BottleneckWeights::with_tensors",
                format!("{} tensors given for {} parameters", tensors.len(), handles.len()),
            ));
        }
        for (h, t) in handles.into_iter().zip(tensors) {
            if h.shape() != t.shape() {
                return Err(Error::shape(
                    "BottleneckWeights::with_tensors",
                    format!("{:?} given for a parameter of shape {:?}", t.shape(), h.shape()),
                ));
            }
            *h = t.clone();
        }
        Ok(w)
    }

    /// Makes every tensor an autograd variable (trainable) or a constant.
    pub fn set_trainable(&mut self, trainable: bool) -> Result<()> {
        for t in self.handles_mut() {
            *t = if trainable { t.detach().requires_grad()? } else { t.detach() };
        }
        Ok(())
    }

    /// Copies values from `get(name)` (relative names of `named_tensors(false)`) into the tensors.
    pub fn load(&self, get: &mut dyn FnMut(&str, &[usize]) -> Result<Tensor>) -> Result<()> {
        for (name, t) in self.named_tensors(false) {
            let src = get(&name, t.shape())?;
            t.assign(&src.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    pub fn numel(&self) -> usize {
        self.named_tensors(false).iter().map(|(_, t)| t.numel()).sum()
    }
}

/// The behaviour-defining part of a config, copied into every installed adapter.
#[derive(Clone, Debug)]
struct Flags {
    parallel: bool,
    original_ln_before: bool,
    original_ln_after: bool,
    residual_before_ln: ResidualBeforeLn,
    adapter_residual_before_ln: bool,
    fixed_scaling: f32,
    non_linearity: String,
    dropout: f32,
    stochastic_depth: f32,
}

/// The hook installed at one (layer, sublayer): an adapter's weights and how it joins the block.
#[derive(Debug)]
pub struct AdapterSite {
    pub weights: BottleneckWeights,
    flags: Flags,
    /// Off = the block computes as without the adapter (bit for bit).
    pub enabled: AtomicBool,
    clock: Arc<DropoutClock>,
    site_index: u64,
    calls: AtomicU64,
    last_step: AtomicU64,
}

impl AdapterSite {
    pub fn new(config: &BnConfig, weights: BottleneckWeights, clock: Arc<DropoutClock>, site_index: u64) -> Self {
        AdapterSite {
            weights,
            flags: Flags {
                parallel: config.is_parallel,
                original_ln_before: config.original_ln_before,
                original_ln_after: config.original_ln_after,
                residual_before_ln: config.residual_before_ln,
                adapter_residual_before_ln: config.adapter_residual_before_ln,
                fixed_scaling: match config.scaling {
                    Scaling::Fixed(s) => s,
                    _ => 1.0,
                },
                non_linearity: config.non_linearity.clone(),
                dropout: config.dropout,
                stochastic_depth: config.stochastic_depth,
            },
            enabled: AtomicBool::new(true),
            clock,
            site_index,
            calls: AtomicU64::new(0),
            last_step: AtomicU64::new(u64::MAX),
        }
    }

    /// Seed of the next random mask: (run seed, optimizer step, site, call within the step), so that a
    /// resumed run draws the masks an uninterrupted one would.
    fn mask_seed(&self) -> u64 {
        let step = self.clock.step.load(Ordering::Relaxed);
        if self.last_step.swap(step, Ordering::Relaxed) != step {
            self.calls.store(0, Ordering::Relaxed);
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        sub(sub(sub(self.clock.seed.load(Ordering::Relaxed), step), self.site_index), call)
    }

    /// down → activation → up → scaling, then (training) stochastic depth, dropout, and the gate.
    fn bottleneck(&self, x: &Tensor, stochastic_depth: bool) -> Result<Tensor> {
        let w = &self.weights;
        let f = &self.flags;
        let training = self.clock.training.load(Ordering::Relaxed);
        let mut h = x.clone();
        if let Some(n) = &w.norm_before {
            h = n.forward(&h)?;
        }
        let down = activation(&f.non_linearity, &w.down.forward(&h)?)?;
        let mut up = w.up.forward(&down)?;
        if stochastic_depth && training && f.stochastic_depth > 0.0 {
            // torchvision's StochasticDepth(mode="row"): one keep/drop per sample, survivors scaled.
            let b = up.shape()[0];
            let keep = Tensor::ones(&[b, 1, 1], DType::F32)?.dropout(f.stochastic_depth, self.mask_seed())?;
            up = up.mul(&keep)?;
        }
        up = match &w.scaling {
            Some(s) => up.mul(s)?,
            None => up.mul_scalar(f.fixed_scaling)?,
        };
        if training && f.dropout > 0.0 {
            up = up.dropout(f.dropout, self.mask_seed())?;
        }
        if let Some(g) = &w.gate {
            // sigmoid(gate(x)) averaged over the sequence: one weight per sample.
            let gate = g.forward(x)?.sigmoid()?.mean(&[1], true)?;
            up = up.mul(&gate)?;
        }
        Ok(up)
    }

    fn sequential(&self, hidden: &Tensor, residual: &Tensor, norm: Option<BlockNorm>) -> Result<Tensor> {
        let f = &self.flags;
        let mut own_residual = match f.residual_before_ln {
            ResidualBeforeLn::Before => Some(hidden.clone()),
            _ => None,
        };
        let mut x = hidden.clone();
        if f.original_ln_before {
            x = x.add(residual)?;
            if let Some(n) = norm {
                if f.residual_before_ln == ResidualBeforeLn::PostAdd {
                    own_residual = Some(x.clone());
                }
                x = n.forward(&x)?;
            }
        }
        if f.residual_before_ln == ResidualBeforeLn::After {
            own_residual = Some(x.clone());
        }
        let own_residual = own_residual.ok_or_else(|| {
            Error::invalid(
                "bottleneck adapter",
                "residual_before_ln = \"post_add\" needs original_ln_before and a block with a post-norm (BERT)",
            )
        })?;
        let up = self.bottleneck(&x, true)?;
        let mut out = up;
        if f.adapter_residual_before_ln {
            out = out.add(&own_residual)?;
        }
        if let Some(n) = &self.weights.norm_after {
            out = n.forward(&out)?;
        }
        if !f.adapter_residual_before_ln {
            out = out.add(&own_residual)?;
        }
        if f.original_ln_after {
            out = default_residual(&out, residual, norm)?;
        }
        Ok(out)
    }

    fn parallel(&self, hidden: &Tensor, residual: &Tensor, norm: Option<BlockNorm>) -> Result<Tensor> {
        let mut out = self.bottleneck(residual, false)?;
        if let Some(n) = &self.weights.norm_after {
            out = n.forward(&out)?;
        }
        out = out.add(hidden)?;
        if self.flags.original_ln_after {
            out = default_residual(&out, residual, norm)?;
        }
        Ok(out)
    }
}

impl ResidualHook for AdapterSite {
    fn forward(&self, _site: Sublayer, hidden: &Tensor, residual: &Tensor, norm: Option<BlockNorm>) -> Result<Tensor> {
        if !self.enabled.load(Ordering::Relaxed) {
            return default_residual(hidden, residual, norm);
        }
        if self.flags.parallel {
            self.parallel(hidden, residual, norm)
        } else {
            self.sequential(hidden, residual, norm)
        }
    }
}
