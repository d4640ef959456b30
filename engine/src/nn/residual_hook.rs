//! The seam where a transformer block adds a sublayer's output to its residual stream, and a hook
//! that can take it over: the module-wrapping counterpart of [`super::HookedLinear`]. Bottleneck
//! adapters (Houlsby, Pfeiffer, parallel) sit exactly here, as AdapterHub's `bottleneck_layer_forward`
//! does in every model it supports.
use super::{LayerNorm, RmsNorm};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::Arc;

/// Which sublayer's output is being combined with the residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sublayer {
    /// After the self-attention output projection (AdapterHub's `mh_adapter` location).
    Attention,
    /// After the feed-forward block (AdapterHub's `output_adapter` location).
    FeedForward,
}

impl Sublayer {
    pub fn name(self) -> &'static str {
        match self {
            Sublayer::Attention => "attention",
            Sublayer::FeedForward => "feed_forward",
        }
    }
}

/// The norm a post-norm block applies to `hidden + residual` (BERT's `LayerNorm`); pre-norm blocks
/// (GPT-2, LLaMA) pass none, as AdapterHub does.
#[derive(Clone, Copy, Debug)]
pub enum BlockNorm<'a> {
    Layer(&'a LayerNorm),
    Rms(&'a RmsNorm),
}

impl BlockNorm<'_> {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            BlockNorm::Layer(n) => n.forward(x),
            BlockNorm::Rms(n) => n.forward(x),
        }
    }
}

/// What a model computes where no hook is installed: `norm(hidden + residual)`, or `hidden + residual`.
pub fn default_residual(hidden: &Tensor, residual: &Tensor, norm: Option<BlockNorm>) -> Result<Tensor> {
    let sum = hidden.add(residual)?;
    match norm {
        Some(n) => n.forward(&sum),
        None => Ok(sum),
    }
}

/// Takes over how one sublayer's output joins the residual stream.
pub trait ResidualHook: Send + Sync + std::fmt::Debug {
    /// `hidden` is the sublayer's output (after its output projection), `residual` the block's input
    /// to that sublayer, `norm` the block's own post-norm if it has one. Must return what the block
    /// continues with (for BERT: after its LayerNorm).
    fn forward(&self, site: Sublayer, hidden: &Tensor, residual: &Tensor, norm: Option<BlockNorm>) -> Result<Tensor>;
}

/// The hooks installed on a model's blocks, by layer and site. Empty (no hook anywhere) by default.
#[derive(Clone, Debug, Default)]
pub struct ResidualHooks {
    attention: Vec<Option<Arc<dyn ResidualHook>>>,
    feed_forward: Vec<Option<Arc<dyn ResidualHook>>>,
}

impl ResidualHooks {
    /// Installs (`Some`) or removes (`None`) the hook of `layer` at `site`; `num_layers` bounds `layer`.
    pub fn set(
        &mut self,
        layer: usize,
        site: Sublayer,
        hook: Option<Arc<dyn ResidualHook>>,
        num_layers: usize,
    ) -> Result<()> {
        if layer >= num_layers {
            return Err(Error::invalid(
                "set_residual_hook",
                format!("layer {layer} is out of range: the model has {num_layers} layers"),
            ));
        }
        let slots = match site {
            Sublayer::Attention => &mut self.attention,
            Sublayer::FeedForward => &mut self.feed_forward,
        };
        if slots.len() < num_layers {
            slots.resize(num_layers, None);
        }
        slots[layer] = hook;
        Ok(())
    }

    /// The hook of `layer` at `site`, if one is installed.
    pub fn get(&self, layer: usize, site: Sublayer) -> Option<&Arc<dyn ResidualHook>> {
        let slots = match site {
            Sublayer::Attention => &self.attention,
            Sublayer::FeedForward => &self.feed_forward,
        };
        slots.get(layer).and_then(|h| h.as_ref())
    }

    /// Combines a sublayer's output with the residual through the installed hook, or as the model
    /// does without one.
    pub fn apply(
        &self,
        layer: usize,
        site: Sublayer,
        hidden: &Tensor,
        residual: &Tensor,
        norm: Option<BlockNorm>,
    ) -> Result<Tensor> {
        match self.get(layer, site) {
            Some(h) => h.forward(site, hidden, residual, norm),
            None => default_residual(hidden, residual, norm),
        }
    }
}
