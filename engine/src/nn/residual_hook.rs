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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    /// Adds a constant to what the model would compute, so that tests can see whether it ran.
    #[derive(Debug)]
    struct Shift(f32);

    impl ResidualHook for Shift {
        fn forward(&self, _: Sublayer, hidden: &Tensor, residual: &Tensor, norm: Option<BlockNorm>) -> Result<Tensor> {
            default_residual(hidden, residual, norm)?.add_scalar(self.0)
        }
    }

    #[test]
    fn hooks_are_installed_and_removed_per_layer_and_site() {
        let h = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 2, 2]).unwrap();
        let r = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 0.0], &[1, 2, 2]).unwrap();
        let plain = h.add(&r).unwrap().to_vec_f32().unwrap();
        let mut hooks = ResidualHooks::default();
        assert_eq!(hooks.apply(0, Sublayer::Attention, &h, &r, None).unwrap().to_vec_f32().unwrap(), plain);
        hooks.set(1, Sublayer::FeedForward, Some(Arc::new(Shift(10.0))), 2).unwrap();
        let shifted: Vec<f32> = plain.iter().map(|x| x + 10.0).collect();
        assert_eq!(hooks.apply(1, Sublayer::FeedForward, &h, &r, None).unwrap().to_vec_f32().unwrap(), shifted);
        // other layers and the other site are untouched
        assert_eq!(hooks.apply(1, Sublayer::Attention, &h, &r, None).unwrap().to_vec_f32().unwrap(), plain);
        assert_eq!(hooks.apply(0, Sublayer::FeedForward, &h, &r, None).unwrap().to_vec_f32().unwrap(), plain);
        hooks.set(1, Sublayer::FeedForward, None, 2).unwrap();
        assert_eq!(hooks.apply(1, Sublayer::FeedForward, &h, &r, None).unwrap().to_vec_f32().unwrap(), plain);
        let e = hooks.set(2, Sublayer::Attention, Some(Arc::new(Shift(1.0))), 2).unwrap_err();
        assert!(e.to_string().contains("layer 2 is out of range: the model has 2 layers"), "{e}");
    }

    #[test]
    fn the_default_applies_the_blocks_norm_to_the_sum() {
        let h = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let r = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 0.0], &[2, 2]).unwrap();
        let ln = LayerNorm::from_tensors(
            Some(Tensor::from_vec(vec![2.0f32, 0.5], &[2]).unwrap()),
            Some(Tensor::zeros(&[2], DType::F32)),
            1e-5,
        )
        .unwrap();
        let got = default_residual(&h, &r, Some(BlockNorm::Layer(&ln))).unwrap().to_vec_f32().unwrap();
        // rows of h + r: [1.5, 1.0] and [5.0, 4.0]; each normalizes to [1, -1] (up to eps), times [2, 0.5]
        let want = [2.0f32, -0.5, 2.0, -0.5];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "{got:?}");
        }
    }
}
