//! A base model with one bottleneck adapter installed at the places its preset names, through the
//! models' residual hooks; what the trainer, evaluator and CLI use (`AdapterModel`).
use super::adapter::{AdapterSite, BottleneckWeights};
use super::config::BottleneckSpec;
use super::files;
use crate::lora::DropoutClock;
use engine::models::{Architecture, ForwardInput, KvCache, Model, ModelConfig, ModelOutput};
use engine::nn::{ResidualHook, Sublayer};
use engine::{Error, Result, Tensor};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One installed adapter: where it sits and its hook.
pub(crate) struct Installed {
    pub layer: usize,
    pub site: Sublayer,
    /// The module path `adapters` gives the location (`encoder.layer.0.output`,
    /// `transformer.h.0.output_adapters`), under the model's own prefix.
    pub path: String,
    pub hook: Arc<AdapterSite>,
}

pub struct BottleneckModel {
    base: Box<dyn Model>,
    spec: BottleneckSpec,
    pub(crate) installed: Vec<Installed>,
    clock: Arc<DropoutClock>,
    /// Load / config warnings (fields kept but not used, keys of other adapters).
    warnings: Vec<String>,
}

/// The module path of the adapter location `site` of block `layer`, as `adapters` names it in the
/// model (BERT: inside `BertSelfOutput` / `BertOutput`; GPT-2 and LLaMA: on the block).
pub(crate) fn location_path(config: &ModelConfig, layer: usize, site: Sublayer) -> String {
    match config.architecture {
        Architecture::BertModel => bert_path("", layer, site),
        Architecture::BertForSequenceClassification | Architecture::BertForTokenClassification => {
            bert_path("bert.", layer, site)
        }
        Architecture::Gpt2LMHeadModel => block_path("transformer.h", layer, site),
        Architecture::LlamaForCausalLM => block_path("model.layers", layer, site),
    }
}

fn bert_path(prefix: &str, layer: usize, site: Sublayer) -> String {
    match site {
        Sublayer::Attention => format!("{prefix}encoder.layer.{layer}.attention.output"),
        Sublayer::FeedForward => format!("{prefix}encoder.layer.{layer}.output"),
    }
}

fn block_path(blocks: &str, layer: usize, site: Sublayer) -> String {
    match site {
        Sublayer::Attention => format!("{blocks}.{layer}.attention_adapters"),
        Sublayer::FeedForward => format!("{blocks}.{layer}.output_adapters"),
    }
}

/// Whether a base parameter belongs to a layer norm (BERT's `LayerNorm`, GPT-2's `ln_*`, LLaMA's
/// `*_layernorm` and final `norm`).
pub(crate) fn is_layer_norm(name: &str) -> bool {
    let module = name.rsplit_once('.').map(|(m, _)| m).unwrap_or(name);
    let last = module.rsplit('.').next().unwrap_or(module);
    last == "LayerNorm" || last.starts_with("ln_") || last.ends_with("layernorm") || last == "norm"
}

impl BottleneckModel {
    /// A fresh adapter from a train config's `peft` section (see [`BottleneckSpec::from_section`]),
    /// initialised by its preset's rule from `seed`, trainable.
    pub fn new(base: Box<dyn Model>, config_json: &serde_json::Value, seed: u64) -> Result<Self> {
        let (spec, warnings) = BottleneckSpec::from_section(config_json)?;
        Self::with_spec(base, spec, seed, warnings)
    }

    /// A fresh, trainable adapter from a parsed spec.
    pub fn with_spec(base: Box<dyn Model>, spec: BottleneckSpec, seed: u64, warnings: Vec<String>) -> Result<Self> {
        let mut model = Self::install(base, spec, seed, true)?;
        model.warnings = warnings;
        model.set_base_trainable()?;
        Ok(model)
    }

    /// Loads an AdapterHub adapter folder (`adapter_config.json` + `adapter.safetensors`, and
    /// `model_head.safetensors` / `layer_norms.safetensors` when present) onto `base`. Returns the
    /// model and load warnings.
    pub fn load(base: Box<dyn Model>, adapter_dir: &Path, trainable: bool) -> Result<(Self, Vec<String>)> {
        files::load(base, adapter_dir, trainable)
    }

    /// Builds the adapters of `spec` (values from `seed`) and installs them on `base`.
    pub(crate) fn install(
        mut base: Box<dyn Model>,
        spec: BottleneckSpec,
        seed: u64,
        trainable: bool,
    ) -> Result<BottleneckModel> {
        let c = base.config().clone();
        let bn = &spec.config;
        if let Some(l) = bn.leave_out.iter().find(|l| **l >= c.num_layers) {
            return Err(Error::invalid(
                "bottleneck adapter",
                format!("leave_out names layer {l}, but the model has {} layers", c.num_layers),
            ));
        }
        let mut sites = Vec::new();
        if bn.mh_adapter {
            sites.push(Sublayer::Attention);
        }
        if bn.output_adapter {
            sites.push(Sublayer::FeedForward);
        }
        let clock = Arc::new(DropoutClock::default());
        let mut installed = Vec::new();
        for layer in (0..c.num_layers).filter(|l| !bn.leave_out.contains(l)) {
            let size = bn.bottleneck_size(c.hidden_size, layer)?;
            for &site in &sites {
                let index = installed.len() as u64;
                // With init_weights_seed every module starts alike, as in `adapters`.
                let s = bn.init_weights_seed.unwrap_or(seed.wrapping_mul(0x100_0193).wrapping_add(index));
                let mut w = BottleneckWeights::init(bn, c.hidden_size, size, s)?;
                w.set_trainable(trainable)?;
                let hook = Arc::new(AdapterSite::new(bn, w, clock.clone(), index));
                base.set_residual_hook(layer, site, Some(hook.clone() as Arc<dyn ResidualHook>))?;
                installed.push(Installed { layer, site, path: location_path(&c, layer, site), hook });
            }
        }
        Ok(BottleneckModel { base, spec, installed, clock, warnings: Vec::new() })
    }

    /// The weights of the `index`-th installed adapter (layer order, attention before feed-forward).
    pub fn site_weights(&self, index: usize) -> Option<&BottleneckWeights> {
        self.installed.get(index).map(|i| &i.hook.weights)
    }

    /// Replaces the weights of the `index`-th installed adapter (e.g. to check gradients with respect
    /// to given tensors).
    pub fn set_site_weights(&mut self, index: usize, weights: BottleneckWeights) -> Result<()> {
        let n = self.installed.len();
        let i = self
            .installed
            .get_mut(index)
            .ok_or_else(|| Error::invalid("set_site_weights", format!("adapter {index} of {n} does not exist")))?;
        let hook = Arc::new(AdapterSite::new(&self.spec.config, weights, self.clock.clone(), index as u64));
        self.base.set_residual_hook(i.layer, i.site, Some(hook.clone() as Arc<dyn ResidualHook>))?;
        i.hook = hook;
        Ok(())
    }

    /// Makes the base's layer norms and classification head trainable as the spec asks.
    pub(crate) fn set_base_trainable(&mut self) -> Result<()> {
        let heads = self.trainable_heads();
        let norms = self.spec.train_layer_norms;
        self.base.visit_parameters(&mut |name, t| {
            if (norms && is_layer_norm(name)) || heads.iter().any(|h| files::is_under(name, h)) {
                *t = t.detach().requires_grad()?;
            }
            Ok(())
        })
    }

    /// The classification heads that train with the adapter (none for causal LMs: their head is
    /// tied to the embeddings, which `adapters` keeps frozen).
    pub(crate) fn trainable_heads(&self) -> Vec<String> {
        if !self.spec.train_head || self.base.config().architecture.is_causal_lm() {
            return Vec::new();
        }
        self.base.head_paths()
    }

    pub fn spec(&self) -> &BottleneckSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn base(&self) -> &dyn Model {
        self.base.as_ref()
    }

    pub(crate) fn base_mut(&mut self) -> &mut dyn Model {
        self.base.as_mut()
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub(crate) fn push_warnings(&mut self, w: Vec<String>) {
        self.warnings.extend(w);
    }

    /// Turns every adapter off (the base model's output, bit for bit) or on again.
    pub fn set_enabled(&self, on: bool) {
        for i in &self.installed {
            i.hook.enabled.store(on, Ordering::Relaxed);
        }
    }

    /// The adapter's tensors with the keys `adapters` saves them under
    /// (`encoder.layer.0.output.adapters.<name>.adapter_down.0.weight`).
    pub fn adapter_tensors(&self, with_aliases: bool) -> Vec<(String, Tensor)> {
        let name = &self.spec.name;
        let mut out = Vec::new();
        for i in &self.installed {
            for (n, t) in i.hook.weights.named_tensors(with_aliases) {
                out.push((format!("{}.adapters.{name}.{n}", i.path), t));
            }
        }
        out
    }

    /// Base parameters that train with the adapter (layer norms, head), with the model's names.
    pub fn trained_base_parameters(&self) -> Vec<(String, Tensor)> {
        self.base.named_parameters().into_iter().filter(|(_, t)| t.is_variable()).collect()
    }

    /// Removes the adapter's hooks and returns the base model (as it was, apart from trained norms/head).
    pub fn into_base(mut self) -> Result<Box<dyn Model>> {
        for i in &self.installed {
            self.base.set_residual_hook(i.layer, i.site, None)?;
        }
        Ok(self.base)
    }

    /// Dropout on (training) or off.
    pub fn train(&self, on: bool) {
        self.clock.training.store(on, Ordering::Relaxed);
    }

    /// Seeds the dropout masks and names the optimizer step (for exact resumption).
    pub fn set_dropout_seed(&self, seed: u64, step: u64) {
        self.clock.seed.store(seed, Ordering::Relaxed);
        self.clock.step.store(step, Ordering::Relaxed);
    }

    /// (trainable, all): trainable = the adapter's tensors plus any base parameter made trainable;
    /// all = every parameter of the model with the adapter — what `sum(p.numel() for p in
    /// model.parameters() [if p.requires_grad])` gives in `adapters` after `train_adapter`.
    pub fn parameter_counts(&self) -> (usize, usize) {
        let adapter: usize = self.installed.iter().map(|i| i.hook.weights.numel()).sum();
        let base = self.base.named_parameters();
        let all = adapter + base.iter().map(|(_, t)| t.numel()).sum::<usize>();
        let trainable_adapter: usize =
            self.adapter_tensors(false).iter().filter(|(_, t)| t.is_variable()).map(|(_, t)| t.numel()).sum();
        let trainable_base: usize = base.iter().filter(|(_, t)| t.is_variable()).map(|(_, t)| t.numel()).sum();
        (trainable_adapter + trainable_base, all)
    }

    /// The adapter's own parameter count (`adapters`' `adapter_summary()` "#param").
    pub fn adapter_parameter_count(&self) -> usize {
        self.installed.iter().map(|i| i.hook.weights.numel()).sum()
    }

    /// Writes the adapter as `adapters`' `save_adapter` does (see [`files::save`]).
    pub fn save(&self, dir: &Path) -> Result<()> {
        files::save(self, dir)
    }
}

impl Model for BottleneckModel {
    crate::method::forward_model_to_base!();
    fn forward(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Result<ModelOutput> {
        self.base.forward(input, cache)
    }
    fn set_residual_hook(&mut self, layer: usize, site: Sublayer, hook: Option<Arc<dyn ResidualHook>>) -> Result<()> {
        self.base.set_residual_hook(layer, site, hook)
    }
}
