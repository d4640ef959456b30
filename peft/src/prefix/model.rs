//! A base model with a prefix-tuning adapter: trainable key/value prefixes at every layer, given to
//! the model on every call (`ForwardInput::prefix`), so generation with a KV cache works as with
//! transformers' `past_key_values` (the prefix positions come first, the cache holds only tokens).
//! `modules_to_save` heads (P-tuning v2's classifier) get a trainable copy, as PEFT's
//! `ModulesToSaveWrapper` does.
use super::config::PrefixTuningConfig;
use super::encoder::PrefixEncoder;
use crate::method::{AdapterModel, ADAPTER_NAME};
use crate::peft_model::{copy_tensor, module_matches};
use engine::models::{ForwardInput, KvCache, KvPrefix, Model, ModelOutput};
use engine::nn::{HookedLinear, Linear};
use engine::{Error, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// PEFT's key prefix of the base model's tensors in a prompt-learning adapter (no `model.`: the
/// base model is not wrapped by a tuner).
pub const BASE_KEY_PREFIX: &str = "base_model.";
/// PEFT's key prefix of the prompt encoder's parameters.
pub const ENCODER_KEY_PREFIX: &str = "prompt_encoder.default.";
/// The heads PEFT adds to `modules_to_save` for classification tasks.
const CLASSIFIER_HEADS: [&str; 2] = ["classifier", "score"];

/// Whether dropout is on and the seeds of its masks: a mask depends on (seed, step, call within the
/// step), so a resumed run draws the masks an uninterrupted one draws.
#[derive(Debug, Default)]
struct DropoutClock {
    training: AtomicBool,
    seed: AtomicU64,
    step: AtomicU64,
    calls: AtomicU64,
    last_step: AtomicU64,
}

impl DropoutClock {
    fn mask_seed(&self) -> u64 {
        let step = self.step.load(Ordering::Relaxed);
        if self.last_step.swap(step, Ordering::Relaxed) != step {
            self.calls.store(0, Ordering::Relaxed);
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        [step, call].iter().fold(self.seed.load(Ordering::Relaxed) ^ 0x5052_4546_4958, |h, &v| {
            (h ^ v.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(h << 6).wrapping_add(h >> 2))
                .wrapping_mul(0xBF58_476D_1CE4_E5B9)
        })
    }
}

pub struct PrefixModel {
    base: Box<dyn Model>,
    config: PrefixTuningConfig,
    encoder: PrefixEncoder,
    /// The trainable copies of the `modules_to_save` heads, installed in the base, by path.
    heads: BTreeMap<String, Linear>,
    /// Parameters of the heads the copies replaced (PEFT keeps and counts the originals).
    replaced_head_params: usize,
    clock: DropoutClock,
}

impl PrefixModel {
    /// A fresh prefix adapter on `base`: the config is filled from the model (PEFT's rules), the
    /// encoder initialized from `seed`, and for SEQ_CLS / TOKEN_CLS the classifier is trained too.
    pub fn new(base: Box<dyn Model>, config: PrefixTuningConfig, seed: u64) -> Result<PrefixModel> {
        let mut config = config;
        config.validate()?;
        let shape = config.fill_from_model(base.config())?;
        let zero = config.init_weights.as_deref() == Some("zero");
        let encoder = PrefixEncoder::new(shape, config.prefix_projection, zero, seed)?;
        PrefixModel::assemble(base, config, encoder, true)
    }

    /// Wraps `base`, installing head copies (trainable or frozen) for `modules_to_save`.
    pub(super) fn assemble(
        mut base: Box<dyn Model>,
        mut config: PrefixTuningConfig,
        encoder: PrefixEncoder,
        trainable_heads: bool,
    ) -> Result<PrefixModel> {
        if matches!(config.common.task_type.as_deref(), Some("SEQ_CLS" | "TOKEN_CLS")) {
            let list = config.common.modules_to_save.get_or_insert_with(Vec::new);
            for h in CLASSIFIER_HEADS {
                if !list.iter().any(|m| m == h) {
                    list.push(h.to_string());
                }
            }
        }
        let saved = config.common.modules_to_save.clone().unwrap_or_default();
        let mut heads = BTreeMap::new();
        let mut replaced = 0;
        base.visit_linears(&mut |path, hooked: &mut HookedLinear| {
            if saved.iter().any(|m| module_matches(path, m)) {
                let (w, b) = (&hooked.base.weight, hooked.base.bias.as_ref());
                replaced += w.numel() + b.map_or(0, Tensor::numel);
                let head =
                    Linear::from_values(&copy_tensor(w)?, b.map(copy_tensor).transpose()?.as_ref(), trainable_heads)?;
                hooked.base = head.clone();
                heads.insert(path.to_string(), head);
            }
            Ok(())
        })?;
        for m in &saved {
            if !heads.keys().any(|p| module_matches(p, m)) && !CLASSIFIER_HEADS.contains(&m.as_str()) {
                return Err(Error::invalid(
                    "prefix tuning",
                    format!("modules_to_save entry `{m}` is not a Linear of this model"),
                ));
            }
        }
        Ok(PrefixModel { base, config, encoder, heads, replaced_head_params: replaced, clock: DropoutClock::default() })
    }

    /// Loads a PEFT prefix-tuning folder on `base` (see [`super::files`]). Returns load warnings.
    pub fn load(base: Box<dyn Model>, adapter_dir: &Path, trainable: bool) -> Result<(PrefixModel, Vec<String>)> {
        super::files::load(base, adapter_dir, trainable)
    }

    pub fn base(&self) -> &dyn Model {
        self.base.as_ref()
    }

    /// The adapter config, filled from the model.
    pub fn prefix_config(&self) -> &PrefixTuningConfig {
        &self.config
    }

    pub fn encoder(&self) -> &PrefixEncoder {
        &self.encoder
    }

    /// The trainable head copies by module path.
    pub fn heads(&self) -> &BTreeMap<String, Linear> {
        &self.heads
    }

    /// Copies saved head values (`classifier.weight`, `classifier.bias` by path) into the head copies.
    pub(super) fn load_head_values(&self, values: &BTreeMap<String, Tensor>) -> Result<()> {
        for (path, head) in &self.heads {
            for (part, t) in [("weight", Some(&head.weight)), ("bias", head.bias.as_ref())] {
                if let (Some(t), Some(v)) = (t, values.get(&format!("{path}.{part}"))) {
                    if v.shape() != t.shape() {
                        return Err(Error::shape(
                            "prefix tuning",
                            format!("saved `{path}.{part}` has shape {:?}, the model's {:?}", v.shape(), t.shape()),
                        ));
                    }
                    t.assign(v)?;
                }
            }
        }
        Ok(())
    }

    /// The per-layer prefixes of one call: `[1, heads, P, head_dim]`, or `[batch, …]` with a
    /// dropout mask per row while training (P-tuning v2 drops out the batch-expanded prefixes).
    pub fn prefixes(&self, batch: usize) -> Result<Vec<KvPrefix>> {
        let table = self.encoder.table()?;
        let p = self.config.prefix_dropout;
        if p > 0.0 && self.clock.training.load(Ordering::Relaxed) {
            let s = table.shape().to_vec();
            let rows = table.unsqueeze(0)?.broadcast_as(&[batch, s[0], s[1]])?.contiguous()?;
            return self.encoder.split(&rows.dropout(p, self.clock.mask_seed())?);
        }
        self.encoder.split(&table)
    }

    /// The trainable tensors with PEFT's names: head copies first (`base_model.classifier.
    /// modules_to_save.default.weight`), then `prompt_encoder.default.*`.
    pub fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (path, head) in &self.heads {
            out.push((format!("{BASE_KEY_PREFIX}{path}.modules_to_save.{ADAPTER_NAME}.weight"), head.weight.clone()));
            if let Some(b) = &head.bias {
                out.push((format!("{BASE_KEY_PREFIX}{path}.modules_to_save.{ADAPTER_NAME}.bias"), b.clone()));
            }
        }
        for (name, t) in self.encoder.named_tensors() {
            out.push((format!("{ENCODER_KEY_PREFIX}{name}"), t));
        }
        out.retain(|(_, t)| t.is_variable());
        out
    }

    /// (trainable, all) as PEFT counts them: the base (with the head copies), the heads they
    /// replaced, and the prompt encoder.
    pub fn parameter_counts(&self) -> (usize, usize) {
        let base: usize = self.base.named_parameters().iter().map(|(_, t)| t.numel()).sum();
        let encoder: usize = self.encoder.parameters().iter().map(Tensor::numel).sum();
        let trainable = self.trainable_parameters().iter().map(|(_, t)| t.numel()).sum();
        (trainable, base + self.replaced_head_params + encoder)
    }

    fn set_training(&self, on: bool) {
        self.clock.training.store(on, Ordering::Relaxed);
    }

    fn set_seed(&self, seed: u64, step: u64) {
        self.clock.seed.store(seed, Ordering::Relaxed);
        self.clock.step.store(step, Ordering::Relaxed);
    }
}

impl Model for PrefixModel {
    fn forward(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Result<ModelOutput> {
        if input.prefix.is_some() {
            return Err(Error::invalid("prefix tuning", "the input already carries prefixes; the adapter gives them"));
        }
        let batch = match (input.input_ids, input.inputs_embeds) {
            (Some(ids), _) => ids.shape().first().copied().unwrap_or(1),
            (None, Some(e)) => e.shape().first().copied().unwrap_or(1),
            (None, None) => return Err(Error::invalid("prefix tuning", "give input_ids or inputs_embeds")),
        };
        let prefixes = self.prefixes(batch)?;
        self.base.forward(&ForwardInput { prefix: Some(&prefixes), ..*input }, cache)
    }
    crate::method::forward_model_to_base!();
}

impl AdapterModel for PrefixModel {
    fn peft_type(&self) -> &'static str {
        "PREFIX_TUNING"
    }
    fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        PrefixModel::trainable_parameters(self)
    }
    fn adapter_tensors(&self) -> Vec<Tensor> {
        let mut out: Vec<Tensor> = self.encoder.named_tensors().into_iter().map(|(_, t)| t).collect();
        for head in self.heads.values() {
            out.push(head.weight.clone());
            out.extend(head.bias.clone());
        }
        out
    }
    fn parameter_counts(&self) -> (usize, usize) {
        PrefixModel::parameter_counts(self)
    }
    fn train(&self, on: bool) {
        self.set_training(on)
    }
    fn set_dropout_seed(&self, seed: u64, step: u64) {
        self.set_seed(seed, step)
    }
    fn save_adapter(&self, dir: &Path) -> Result<()> {
        super::files::save(self, dir)
    }
    fn adapter_config_json(&self) -> serde_json::Value {
        self.config.to_json()
    }
    /// The prefix positions come before the tokens' (positions start at P, as transformers counts
    /// `past_key_values`), so they count against the position embeddings.
    fn virtual_positions(&self) -> usize {
        self.encoder.shape.num_virtual_tokens
    }
}
