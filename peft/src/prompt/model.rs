//! A base model with a soft prompt: prompt tuning's trainable table, or P-tuning's table through its
//! prompt encoder, placed before the input embeddings as PEFT does.
//!
//! What PEFT does, and so what we do: the attention mask gets ones for the virtual positions,
//! `token_type_ids` zeros (sequence classification; a causal LM drops them), given `position_ids`
//! are ignored, so the base model numbers positions `0..virtual+seq` and the prompt takes the first
//! ones. Outputs cover the real positions only. The causal-LM loss runs over the whole sequence with
//! labels -100 on virtual positions, so the last virtual position's logits predict the first real
//! token: that term is in the loss (`grad-llama-prompt_tuning` confirms it).
use super::config::{PromptConfig, PromptEncoderConfig};
use super::encoder::PromptEncoder;
use super::template::Layout;
use crate::eval::{batch_input, batch_logits, task_loss};
use crate::method::{AdapterModel, ADAPTER_NAME};
use crate::peft_model::{copy_tensor, module_matches};
use crate::train::config::{Task, CLASSIFIER_MODULES};
use crate::train::data::{Batch, IGNORE_INDEX};
use engine::io::{save_safetensors, SafeTensors};
use engine::models::{ForwardInput, KvCache, Model, ModelOutput};
use engine::nn::{HookedLinear, Linear};
use engine::{DType, Error, Result, Tensor};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The PEFT file of a prompt adapter.
pub const ADAPTER_FILE: &str = "adapter_model.safetensors";
/// Beside it, P-tuning's encoder weights (`prompt_encoder.default.embedding.weight`,
/// `prompt_encoder.default.mlp_head.0.weight`, …), which PEFT does not save: with them training
/// resumes exactly; without them the adapter is inference-only (the saved prompt, frozen).
pub const ENCODER_FILE: &str = "prompt_encoder.safetensors";
/// PEFT's key of the prompt (the encoder's output) in `adapter_model.safetensors`.
pub const PROMPT_KEY: &str = "prompt_embeddings";

const PARAM_PREFIX: &str = "prompt_encoder.default.";

pub struct PromptModel {
    base: Box<dyn Model>,
    config: PromptConfig,
    /// `prompt_encoder.default.embedding.weight`, `[virtual tokens, hidden]`.
    table: Tensor,
    /// P-tuning's encoder; `None` for prompt tuning and for a P-tuning adapter loaded without its
    /// encoder file (the table then holds the saved prompt).
    encoder: Option<PromptEncoder>,
    /// `modules_to_save` heads: path → (trainable copy, the base model's original).
    saved_modules: BTreeMap<String, (Linear, Linear)>,
    training: AtomicBool,
    seed: AtomicU64,
    step: AtomicU64,
}

fn file_err(path: &Path, detail: String) -> Error {
    Error::File { path: path.display().to_string(), detail }
}

impl PromptModel {
    /// A fresh soft prompt on `base`, initialized as `config` says from `seed`.
    pub fn new(base: Box<dyn Model>, config: PromptConfig, seed: u64) -> Result<PromptModel> {
        let mut config = config;
        config.common_mut().complete_for(base.config())?;
        match &config {
            PromptConfig::Tuning(c) => c.validate()?,
            PromptConfig::Encoder(c) => c.validate()?,
        };
        if let PromptConfig::Tuning(c) = &mut config {
            // PEFT refuses a TEXT config without a tokenizer, even to load it: record the one used.
            if c.prompt_tuning_init == "TEXT" && c.tokenizer_name_or_path.is_none() {
                c.tokenizer_name_or_path = c.common.base_model_name_or_path.clone();
            }
        }
        let n = config.common().num_virtual_tokens;
        let dim = base.config().hidden_size;
        let (table, encoder) = match &config {
            PromptConfig::Tuning(c) => (init_table(base.as_ref(), c, n, seed)?, None),
            PromptConfig::Encoder(c) => {
                (Tensor::randn(&[n, dim], 0.0, 1.0, seed)?, Some(PromptEncoder::new(c, dim, seed.wrapping_add(1))?))
            }
        };
        let mut model = PromptModel::assemble(base, config, table.requires_grad()?, encoder)?;
        model.install_saved_modules(None, true)?;
        Ok(model)
    }

    /// Loads a PEFT prompt-tuning or P-tuning folder on `base` (with P-tuning's encoder file when
    /// present). Returns the model and load warnings.
    pub fn load(base: Box<dyn Model>, dir: &Path, trainable: bool) -> Result<(PromptModel, Vec<String>)> {
        let config_path = dir.join("adapter_config.json");
        let (mut config, mut warnings) = PromptConfig::from_file(&config_path)?;
        config.common_mut().inference_mode = false;
        config.common_mut().complete_for(base.config()).map_err(|e| file_err(&config_path, e.to_string()))?;
        let n = config.common().num_virtual_tokens;
        let dim = base.config().hidden_size;
        let path = dir.join(ADAPTER_FILE);
        let file = SafeTensors::open(&path)?;
        let mut used: HashSet<String> = HashSet::new();
        let prompt = file
            .contains(PROMPT_KEY)
            .then(|| file.tensor_f32(PROMPT_KEY))
            .transpose()?
            .ok_or_else(|| file_err(&path, format!("missing `{PROMPT_KEY}`")))?;
        if prompt.shape() != [n, dim] {
            return Err(file_err(
                &path,
                format!("`{PROMPT_KEY}` has shape {:?}, the config implies [{n}, {dim}]", prompt.shape()),
            ));
        }
        used.insert(PROMPT_KEY.to_string());
        let param = |t: Tensor| if trainable { t.requires_grad() } else { Ok(t) };
        let encoder_path = dir.join(ENCODER_FILE);
        let (table, encoder) = match &config {
            PromptConfig::Encoder(c) if encoder_path.is_file() => {
                let (table, mut encoder) = load_encoder(c, dim, &encoder_path, n)?;
                // The two files must belong together: the encoder remakes the saved prompt.
                let remade = {
                    let _g = engine::no_grad();
                    encoder.forward(&table, None)?.to_vec_f32()?
                };
                let saved = prompt.to_vec_f32()?;
                let worst = remade.iter().zip(&saved).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0, f32::max);
                if worst > 1e-4 {
                    return Err(file_err(
                        &encoder_path,
                        format!(
                            "does not reproduce `{PROMPT_KEY}` of {ADAPTER_FILE} (relative difference {worst:.2e})"
                        ),
                    ));
                }
                encoder.set_trainable(trainable)?;
                (param(table)?, Some(encoder))
            }
            PromptConfig::Encoder(_) => {
                if trainable {
                    warnings.push(format!(
                        "{}: no {ENCODER_FILE} (a PEFT-made P-tuning adapter): the saved prompt is used as it is, \
                         inference only; it is not trained further",
                        dir.display()
                    ));
                }
                (prompt, None)
            }
            PromptConfig::Tuning(_) => (param(prompt)?, None),
        };
        let mut model = PromptModel::assemble(base, config, table, encoder)?;
        model.install_saved_modules(Some((&file, &mut used)), trainable)?;
        let unused: Vec<&str> = file.names().filter(|k| !used.contains(*k)).collect();
        if !unused.is_empty() {
            warnings.push(format!("{} tensors of the adapter file were not used: {}", unused.len(), unused.join(", ")));
        }
        Ok((model, warnings))
    }

    fn assemble(
        base: Box<dyn Model>,
        config: PromptConfig,
        table: Tensor,
        encoder: Option<PromptEncoder>,
    ) -> Result<PromptModel> {
        Ok(PromptModel {
            base,
            config,
            table,
            encoder,
            saved_modules: BTreeMap::new(),
            training: AtomicBool::new(false),
            seed: AtomicU64::new(0),
            step: AtomicU64::new(0),
        })
    }

    /// Replaces every `modules_to_save` head with a copy (trainable if `trainable`): fresh copies of the
    /// base's heads, or the file's values (`base_model.<path>.weight`).
    fn install_saved_modules(
        &mut self,
        mut file: Option<(&SafeTensors, &mut HashSet<String>)>,
        trainable: bool,
    ) -> Result<()> {
        let wanted = self.config.common().modules_to_save.clone().unwrap_or_default();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut originals: Vec<(String, Linear)> = Vec::new();
        self.base.visit_linears(&mut |path, hooked| {
            if wanted.iter().any(|m| module_matches(path, m)) {
                originals.push((path.to_string(), hooked.base.clone()));
            }
            Ok(())
        })?;
        for m in &wanted {
            if !originals.iter().any(|(p, _)| module_matches(p, m)) && !CLASSIFIER_MODULES.contains(&m.as_str()) {
                return Err(Error::invalid("modules_to_save", format!("`{m}` is not a Linear of this model")));
            }
        }
        let mut copies = BTreeMap::new();
        for (path, original) in originals {
            let copy = match file.as_mut() {
                Some((f, used)) => {
                    let wk = format!("base_model.{path}.weight");
                    let bk = format!("base_model.{path}.bias");
                    if !f.contains(&wk) {
                        return Err(file_err(f.path(), format!("missing `{wk}` (modules_to_save `{path}`)")));
                    }
                    let weight = f.tensor_f32(&wk)?;
                    if weight.shape() != original.weight.shape() {
                        return Err(file_err(
                            f.path(),
                            format!(
                                "`{wk}` has shape {:?}, the model's is {:?}",
                                weight.shape(),
                                original.weight.shape()
                            ),
                        ));
                    }
                    let bias = f.contains(&bk).then(|| f.tensor_f32(&bk)).transpose()?;
                    used.insert(wk);
                    used.insert(bk);
                    Linear::from_values(&weight, bias.as_ref(), trainable)?
                }
                None => Linear::from_values(
                    &copy_tensor(&original.weight)?,
                    original.bias.as_ref().map(copy_tensor).transpose()?.as_ref(),
                    trainable,
                )?,
            };
            copies.insert(path, (copy, original));
        }
        self.base.visit_linears(&mut |path, hooked: &mut HookedLinear| {
            if let Some((copy, _)) = copies.get(path) {
                hooked.base = copy.clone();
            }
            Ok(())
        })?;
        self.saved_modules = copies;
        Ok(())
    }

    pub fn base(&self) -> &dyn Model {
        self.base.as_ref()
    }

    pub fn prompt_config(&self) -> &PromptConfig {
        &self.config
    }

    pub fn num_virtual_tokens(&self) -> usize {
        self.config.common().num_virtual_tokens
    }

    /// The prompt `[virtual tokens, hidden]`: the table, or the table through the encoder.
    pub fn prompt(&self) -> Result<Tensor> {
        match &self.encoder {
            None => Ok(self.table.clone()),
            Some(e) => {
                let seed = self.training.load(Ordering::Relaxed).then(|| {
                    let s = self.seed.load(Ordering::Relaxed);
                    s.wrapping_mul(1_000_003).wrapping_add(self.step.load(Ordering::Relaxed))
                });
                e.forward(&self.table, seed)
            }
        }
    }

    /// P-tuning's template, when it places virtual tokens anywhere but before the input.
    pub fn template(&self) -> Option<&[usize]> {
        match &self.config {
            PromptConfig::Encoder(c) => c.template.as_deref().filter(|t| t.len() > 1),
            PromptConfig::Tuning(_) => None,
        }
    }

    /// Runs the base model with the prompt placed (before the inputs, or as the template says);
    /// returns its output over every position and where the input's positions are in it. With a
    /// non-empty cache (generation after the first step) the prompt is already in it and the input
    /// passes as is.
    fn forward_with_prompt(
        &self,
        input: &ForwardInput,
        cache: Option<&mut KvCache>,
    ) -> Result<(ModelOutput, Placement)> {
        if let Some(c) = &cache {
            if !c.is_empty() {
                return Ok((self.base.forward(input, cache)?, Placement::Prefix(0)));
            }
        }
        let embeds = match (input.input_ids, input.inputs_embeds) {
            (Some(ids), None) => self.base.embed_tokens(ids)?,
            (None, Some(e)) => e.clone(),
            _ => return Err(Error::invalid("forward", "give exactly one of input_ids and inputs_embeds")),
        };
        if embeds.rank() != 3 {
            return Err(Error::shape(
                "forward",
                format!("input embeddings must be [batch, seq, hidden], got {:?}", embeds.shape()),
            ));
        }
        let (b, t, dim) = (embeds.shape()[0], embeds.shape()[1], embeds.shape()[2]);
        let n = self.num_virtual_tokens();
        let causal = self.base.config().architecture.is_causal_lm();
        let ints = |x: &Tensor| -> Result<Vec<i64>> { x.to_dtype(DType::I64)?.contiguous()?.to_vec::<i64>() };
        let (embeds, mask, token_types, placement) = match self.template() {
            None => {
                let prompt = self.prompt()?.unsqueeze(0)?.expand(&[b, n, dim])?;
                let embeds = Tensor::cat(&[&prompt, &embeds], 1)?;
                let mask = input.attention_mask.map(|m| prepend_columns(m, n, 1)).transpose()?;
                let types = match input.token_type_ids {
                    Some(t) if !causal => Some(prepend_columns(t, n, 0)?),
                    _ => None,
                };
                (embeds, mask, types, Placement::Prefix(n))
            }
            Some(template) => {
                let mask_values = input.attention_mask.map(ints).transpose()?;
                let real: Vec<usize> = match &mask_values {
                    Some(m) => m.chunks(t.max(1)).map(|row| row.iter().filter(|&&x| x != 0).count()).collect(),
                    None => vec![t; b],
                };
                let type_values = input.token_type_ids.map(ints).transpose()?;
                let layout = Layout::new(template, b, t, &real, type_values.as_deref())?;
                let embeds = layout.embeds(&self.prompt()?, &embeds)?;
                let mask = match (&mask_values, input.attention_mask) {
                    (Some(m), Some(orig)) => Some(layout.ints(m, orig.dtype(), |_, _| 1)?),
                    _ => None,
                };
                let types = match (&type_values, input.token_type_ids) {
                    (Some(ty), Some(orig)) if !causal => {
                        Some(layout.ints(ty, orig.dtype(), |r, q| layout.virtual_type(ty, r, q))?)
                    }
                    _ => None,
                };
                (embeds, mask, types, Placement::Template(layout))
            }
        };
        let full = ForwardInput {
            input_ids: None,
            inputs_embeds: Some(&embeds),
            attention_mask: mask.as_ref(),
            token_type_ids: token_types.as_ref(),
            position_ids: None,
            prefix: input.prefix,
        };
        Ok((self.base.forward(&full, cache)?, placement))
    }
}

/// Where the input's positions are in the sequence the base model ran on.
enum Placement {
    /// After this many virtual positions.
    Prefix(usize),
    /// Between virtual tokens, as a P-tuning template lays them out.
    Template(Layout),
}

impl Placement {
    /// The input positions' part of a `[b, positions, …]` output.
    fn real(&self, full: &Tensor) -> Result<Tensor> {
        match self {
            Placement::Prefix(0) => Ok(full.clone()),
            Placement::Prefix(n) => full.narrow(1, *n, full.shape()[1] - n),
            Placement::Template(layout) => layout.real(full),
        }
    }

    /// Labels `[b, t]` spread over the whole sequence, -100 at virtual positions.
    fn labels(&self, labels: &Tensor) -> Result<Tensor> {
        match self {
            Placement::Prefix(n) => prepend_columns(labels, *n, IGNORE_INDEX),
            Placement::Template(layout) => {
                layout.ints(&labels.contiguous()?.to_vec::<i64>()?, DType::I64, |_, _| IGNORE_INDEX)
            }
        }
    }
}

/// `[b, t]` → `[b, n + t]` with `value` in the new first columns (masks, segment ids, labels).
fn prepend_columns(t: &Tensor, n: usize, value: i64) -> Result<Tensor> {
    if t.rank() != 2 {
        return Err(Error::shape("prompt", format!("expected a [batch, seq] tensor, got {:?}", t.shape())));
    }
    let (b, len) = (t.shape()[0], t.shape()[1]);
    let dtype = t.dtype();
    let values = t.to_dtype(DType::I64)?.contiguous()?.to_vec::<i64>()?;
    let mut out = Vec::with_capacity(b * (n + len));
    for row in values.chunks(len.max(1)).take(b) {
        out.extend(std::iter::repeat_n(value, n));
        out.extend_from_slice(row);
    }
    Tensor::from_vec(out, &[b, n + len])?.to_dtype(dtype)
}

/// Prompt tuning's initial table.
fn init_table(base: &dyn Model, c: &super::config::PromptTuningConfig, n: usize, seed: u64) -> Result<Tensor> {
    let dim = base.config().hidden_size;
    let rows = |ids: Vec<i64>| -> Result<Tensor> {
        let _g = engine::no_grad();
        let t = base.embed_tokens(&Tensor::from_vec(ids, &[1, n])?)?.reshape(&[n, dim])?;
        copy_tensor(&t)
    };
    match c.prompt_tuning_init.as_str() {
        "SAMPLE_VOCAB" => {
            let vocab = base.config().vocab_size as u64;
            let mut rng = engine::random::Rng::new(seed);
            rows((0..n).map(|_| rng.next_below(vocab) as i64).collect())
        }
        "TEXT" => {
            let dir = c.tokenizer_name_or_path.as_deref().ok_or_else(|| {
                Error::invalid("prompt tuning", "TEXT init needs tokenizer_name_or_path (or base_model_name_or_path)")
            })?;
            let text = c.prompt_tuning_init_text.as_deref().unwrap_or_default();
            let ids = engine::models::tokenizer::Tokenizer::from_dir(dir)?.encode(text, true)?;
            if ids.is_empty() {
                return Err(Error::invalid("prompt tuning", "prompt_tuning_init_text tokenizes to nothing"));
            }
            // PEFT: cut to length, or repeat the ids and cut.
            rows(ids.iter().cycle().take(n).copied().collect())
        }
        _ => match c.prompt_tuning_init_uniform_bound {
            Some(bound) => Tensor::rand_uniform(&[n, dim], -bound, bound, seed),
            None => Tensor::randn(&[n, dim], 0.0, 1.0, seed),
        },
    }
}

/// Loads P-tuning's table and encoder from [`ENCODER_FILE`].
fn load_encoder(c: &PromptEncoderConfig, dim: usize, path: &Path, n: usize) -> Result<(Tensor, PromptEncoder)> {
    let file = SafeTensors::open(path)?;
    let mut map = HashMap::new();
    for name in file.names() {
        let local =
            name.strip_prefix(PARAM_PREFIX).ok_or_else(|| file_err(path, format!("unexpected tensor `{name}`")))?;
        map.insert(local.to_string(), file.tensor_f32(name)?);
    }
    let table = map.remove("embedding.weight").ok_or_else(|| file_err(path, "missing the embedding table".into()))?;
    if table.shape() != [n, dim] {
        return Err(file_err(
            path,
            format!("the embedding table has shape {:?}, expected [{n}, {dim}]", table.shape()),
        ));
    }
    let encoder = PromptEncoder::from_named(c, dim, &map).map_err(|e| file_err(path, e.to_string()))?;
    Ok((table, encoder))
}

impl Model for PromptModel {
    /// The base model's output for the real positions (the virtual ones dropped).
    fn forward(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Result<ModelOutput> {
        let (out, placement) = self.forward_with_prompt(input, cache)?;
        let hidden = placement.real(&out.hidden)?;
        let logits = match &out.logits {
            Some(l) if l.rank() == 3 => Some(placement.real(l)?),
            other => other.clone(),
        };
        Ok(ModelOutput { hidden, logits })
    }
    crate::method::forward_model_to_base!();
}

impl AdapterModel for PromptModel {
    fn peft_type(&self) -> &'static str {
        self.config.peft_type()
    }

    /// `prompt_encoder.default.embedding.weight`, the encoder's parameters, then the heads' copies
    /// (`base_model.classifier.modules_to_save.default.weight`), as PEFT names them.
    fn adapter_tensors(&self) -> Vec<Tensor> {
        let mut out = vec![self.table.clone()];
        if let Some(e) = &self.encoder {
            out.extend(e.named_parameters().into_iter().map(|(_, t)| t));
        }
        for (copy, original) in self.saved_modules.values() {
            for l in [copy, original] {
                out.push(l.weight.clone());
                out.extend(l.bias.clone());
            }
        }
        out
    }

    fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(format!("{PARAM_PREFIX}embedding.weight"), self.table.clone())];
        if let Some(e) = &self.encoder {
            out.extend(e.named_parameters().into_iter().map(|(n, t)| (format!("{PARAM_PREFIX}{n}"), t)));
        }
        for (path, (copy, _)) in &self.saved_modules {
            out.push((format!("base_model.{path}.modules_to_save.{ADAPTER_NAME}.weight"), copy.weight.clone()));
            if let Some(b) = &copy.bias {
                out.push((format!("base_model.{path}.modules_to_save.{ADAPTER_NAME}.bias"), b.clone()));
            }
        }
        out.retain(|(_, t)| t.is_variable());
        out
    }

    /// PEFT's count: the base model (with its original heads), the prompt table and encoder, and the
    /// heads' copies.
    fn parameter_counts(&self) -> (usize, usize) {
        let numel = |l: &Linear| l.weight.numel() + l.bias.as_ref().map_or(0, Tensor::numel);
        let mut all: usize = self.base.named_parameters().iter().map(|(_, t)| t.numel()).sum();
        all += self.table.numel();
        if let Some(e) = &self.encoder {
            all += e.named_parameters().iter().map(|(_, t)| t.numel()).sum::<usize>();
        }
        // The copies replaced the originals inside the base: count the originals too.
        all += self.saved_modules.values().map(|(_, original)| numel(original)).sum::<usize>();
        let trainable = self.trainable_parameters().iter().map(|(_, t)| t.numel()).sum();
        (trainable, all)
    }

    fn train(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    fn set_dropout_seed(&self, seed: u64, step: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.step.store(step, Ordering::Relaxed);
    }

    /// PEFT's files (`prompt_embeddings` = the prompt the encoder makes, the heads under their
    /// `base_model.` keys) and, for P-tuning, [`ENCODER_FILE`].
    fn save_adapter(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let prompt = {
            let _g = engine::no_grad();
            let was = self.training.swap(false, Ordering::Relaxed);
            let p = self.prompt();
            self.training.store(was, Ordering::Relaxed);
            p?.detach().contiguous()?
        };
        let mut tensors = vec![(PROMPT_KEY.to_string(), prompt)];
        for (path, (copy, _)) in &self.saved_modules {
            tensors.push((format!("base_model.{path}.weight"), copy.weight.detach().contiguous()?));
            if let Some(b) = &copy.bias {
                tensors.push((format!("base_model.{path}.bias"), b.detach().contiguous()?));
            }
        }
        save_safetensors(dir.join(ADAPTER_FILE), &tensors, Some(&meta))?;
        if let Some(e) = &self.encoder {
            let mut enc = vec![(format!("{PARAM_PREFIX}embedding.weight"), self.table.detach().contiguous()?)];
            for (n, t) in e.named_parameters() {
                enc.push((format!("{PARAM_PREFIX}{n}"), t.detach().contiguous()?));
            }
            save_safetensors(dir.join(ENCODER_FILE), &enc, Some(&meta))?;
        }
        let mut config = self.config.clone();
        config.common_mut().inference_mode = true;
        let json = serde_json::to_vec_pretty(&config.to_json())
            .map_err(|e| Error::invalid("save_adapter", format!("cannot encode the config: {e}")))?;
        engine::io::safetensors::write_atomic(&dir.join("adapter_config.json"), &json)
    }

    fn adapter_config_json(&self) -> serde_json::Value {
        self.config.to_json()
    }

    fn virtual_positions(&self) -> usize {
        self.num_virtual_tokens()
    }

    /// A causal LM's labelled first token is predicted too (by the virtual token before it), unless
    /// a template puts no virtual token first.
    fn loss_terms(&self, task: Task, batch: &Batch) -> usize {
        let leading = self.template().map_or(self.num_virtual_tokens(), |t| t[0]);
        if task != Task::CausalLm || leading == 0 || batch.labels.rank() != 2 {
            return batch.items;
        }
        let t = batch.labels.shape()[1];
        let first_labelled = batch.label_values.chunks(t.max(1)).filter(|row| row[0] != IGNORE_INDEX).count();
        batch.items + first_labelled
    }

    /// A causal LM's loss over the whole sequence, virtual positions included with label -100 (as
    /// PEFT computes it): the last virtual position predicts the first token.
    fn batch_loss(&self, task: Task, batch: &Batch) -> Result<(Tensor, Tensor)> {
        if task != Task::CausalLm {
            let logits = batch_logits(self, batch)?;
            let loss = task_loss(task, &logits, &batch.labels)?;
            return Ok((logits, loss));
        }
        let (out, placement) = self.forward_with_prompt(&batch_input(batch), None)?;
        let full = out.logits.ok_or_else(|| Error::invalid("train", "the model has no language-model head"))?;
        let loss = crate::loss::causal_lm_loss(&full, &placement.labels(&batch.labels)?)?;
        let logits = placement.real(&full)?;
        Ok((logits, loss))
    }
}
