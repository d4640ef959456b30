//! A base model with named LoRA adapters: add, load, activate, disable, delete, merge, save.
//! Injection goes through the model's Linear hooks; `modules_to_save` heads get a trainable copy per
//! adapter, as PEFT's `ModulesToSaveWrapper` does.
use crate::config::{InitLoraWeights, LoraConfig};
use crate::lora::{DropoutClock, LoraLayer, LoraWeights};
use crate::targets;
use engine::io::{save_safetensors, SafeTensors};
use engine::models::{ForwardInput, KvCache, Model, ModelOutput};
use engine::nn::{HookedLinear, Linear, LinearHook};
use engine::{DType, Error, Result, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// PEFT's key prefix in adapter files.
pub const KEY_PREFIX: &str = "base_model.model.";

struct Adapter {
    config: LoraConfig,
    /// Paths of the wrapped Linears.
    targets: Vec<String>,
    /// Trainable copies of the `modules_to_save` heads, by path.
    saved_modules: BTreeMap<String, Linear>,
    /// Parameters made trainable by `bias = all | lora_only`, by name (`…query.bias`,
    /// `…LayerNorm.bias`).
    biases: Vec<String>,
}

pub struct PeftModel {
    base: Box<dyn Model>,
    adapters: BTreeMap<String, Adapter>,
    active: Option<String>,
    disabled: bool,
    layers: HashMap<String, Arc<LoraLayer>>,
    /// The base model's own heads that `modules_to_save` replaced, to restore them.
    original_modules: BTreeMap<String, Linear>,
    clock: Arc<DropoutClock>,
}

impl PeftModel {
    pub fn new(base: Box<dyn Model>) -> Self {
        PeftModel {
            base,
            adapters: BTreeMap::new(),
            active: None,
            disabled: false,
            layers: HashMap::new(),
            original_modules: BTreeMap::new(),
            clock: Arc::new(DropoutClock::default()),
        }
    }

    /// Loads a base model folder and a PEFT adapter folder on it, as
    /// `PeftModel.from_pretrained(AutoModelFor<task>.from_pretrained(model), adapter)` does: a
    /// sequence-classification adapter on a bare encoder folder gets the task model built (with
    /// the head size the adapter's saved classifier has). Returns the model and load warnings.
    pub fn from_pretrained(model_dir: &Path, adapter_dir: &Path) -> Result<(PeftModel, Vec<String>)> {
        let base = crate::method::load_base_for_adapter(model_dir, adapter_dir)?;
        let mut model = PeftModel::new(base);
        let warnings = model.load_adapter(adapter_dir, "default", false)?;
        Ok((model, warnings))
    }

    pub fn base(&self) -> &dyn Model {
        self.base.as_ref()
    }

    pub fn base_mut(&mut self) -> &mut dyn Model {
        self.base.as_mut()
    }

    pub fn config(&self, adapter: &str) -> Option<&LoraConfig> {
        self.adapters.get(adapter).map(|a| &a.config)
    }

    pub fn adapter_names(&self) -> Vec<String> {
        self.adapters.keys().cloned().collect()
    }

    pub fn active_adapter(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// Dropout on (training) or off (evaluation).
    pub fn train(&self, on: bool) {
        self.clock.training.store(on, Ordering::Relaxed);
    }

    /// Seeds the LoRA dropout masks and names the current optimizer step (for exact resumption).
    pub fn set_dropout_seed(&self, seed: u64, step: u64) {
        self.clock.seed.store(seed, Ordering::Relaxed);
        self.clock.step.store(step, Ordering::Relaxed);
    }

    /// Adds an adapter, initialized by `config.init_lora_weights` from `seed`, and makes it active.
    pub fn add_adapter(&mut self, name: &str, config: LoraConfig, seed: u64) -> Result<()> {
        if self.adapters.contains_key(name) {
            return Err(Error::invalid("add_adapter", format!("an adapter named `{name}` exists already")));
        }
        config.validate()?;
        let paths = self.base.linear_paths();
        let heads = self.base.head_paths();
        let target_spec = config.target_modules.clone().ok_or_else(|| {
            Error::invalid("add_adapter", "target_modules is not set (give a list, a regex, or \"all-linear\")")
        })?;
        let saved: Vec<String> = config.modules_to_save.clone().unwrap_or_default();
        // A module saved whole is not also wrapped.
        let candidates: Vec<String> =
            paths.iter().filter(|p| !saved.iter().any(|m| module_matches(p, m))).cloned().collect();
        let targets = targets::select(
            &candidates,
            &heads,
            &target_spec,
            config.exclude_modules.as_ref(),
            config.layers_to_transform.as_ref(),
            config.layers_pattern.as_ref(),
        )?;
        let mut shapes: HashMap<String, (usize, usize)> = HashMap::new();
        self.base.visit_linears(&mut |p, l| {
            shapes.insert(p.to_string(), (l.base.in_features(), l.base.out_features()));
            Ok(())
        })?;
        let mut weights = BTreeMap::new();
        for (i, path) in targets.iter().enumerate() {
            let (in_f, out_f) = shapes[path];
            let r = config.rank_for(path)?;
            let alpha = config.alpha_for(path)?;
            let s = seed.wrapping_mul(1_000_003).wrapping_add(i as u64 * 2);
            let a = match &config.init_lora_weights {
                InitLoraWeights::Method(_) => Tensor::randn(&[r, in_f], 0.0, 1.0 / r as f32, s)?,
                InitLoraWeights::Flag(_) => Tensor::kaiming_uniform(&[r, in_f], 5f32.sqrt(), s)?,
            };
            let b = match &config.init_lora_weights {
                InitLoraWeights::Flag(false) => Tensor::kaiming_uniform(&[out_f, r], 5f32.sqrt(), s + 1)?,
                _ => Tensor::zeros(&[out_f, r], DType::F32),
            };
            let w = LoraWeights {
                a: a.requires_grad()?,
                b: b.requires_grad()?,
                scaling: config.scaling(r, alpha),
                dropout: config.lora_dropout,
            };
            weights.insert(path.clone(), w);
        }
        self.install(name, config, targets, weights)
    }

    /// Installs an adapter's hooks, head copies and trainable biases, and activates it.
    fn install(
        &mut self,
        name: &str,
        config: LoraConfig,
        targets: Vec<String>,
        mut weights: BTreeMap<String, LoraWeights>,
    ) -> Result<()> {
        let saved: Vec<String> = config.modules_to_save.clone().unwrap_or_default();
        let clock = self.clock.clone();
        let layers = &mut self.layers;
        let originals = &mut self.original_modules;
        let mut saved_modules = BTreeMap::new();
        let mut index = 0u64;
        self.base.visit_linears(&mut |path, hooked: &mut HookedLinear| {
            index += 1;
            if let Some(w) = weights.remove(path) {
                let layer = layers
                    .entry(path.to_string())
                    .or_insert_with(|| Arc::new(LoraLayer::new(clock.clone(), index)))
                    .clone();
                layer.insert(name, w);
                hooked.hook = Some(layer as Arc<dyn LinearHook>);
            }
            if saved.iter().any(|m| module_matches(path, m)) {
                let original = originals.entry(path.to_string()).or_insert_with(|| hooked.base.clone()).clone();
                let copy = Linear::from_values(
                    &copy_tensor(&original.weight)?,
                    original.bias.as_ref().map(copy_tensor).transpose()?.as_ref(),
                    true,
                )?;
                saved_modules.insert(path.to_string(), copy);
            }
            Ok(())
        })?;
        if let Some(missing) = weights.keys().next() {
            return Err(Error::invalid("add_adapter", format!("no Linear module at `{missing}`")));
        }
        for m in &saved {
            // PEFT lists `classifier` and `score` for every sequence classifier; only those present count.
            let known = ["classifier", "score"];
            if !saved_modules.keys().any(|p| module_matches(p, m)) && !known.contains(&m.as_str()) {
                return Err(Error::invalid(
                    "add_adapter",
                    format!("modules_to_save entry `{m}` is not a Linear of this model"),
                ));
            }
        }
        // PEFT's rule: "all" trains every parameter named `*.bias` (LayerNorm biases too), "lora_only"
        // the biases of the wrapped Linears. A head saved whole trains its own copy instead.
        let names: Vec<String> = self.base.named_parameters().into_iter().map(|(n, _)| n).collect();
        let in_saved = |n: &str| saved_modules.keys().any(|p| is_under(n, p));
        let biases: Vec<String> = match config.bias.as_str() {
            "all" => names.iter().filter(|n| n.ends_with(".bias") && !in_saved(n)).cloned().collect(),
            "lora_only" => targets.iter().map(|p| format!("{p}.bias")).filter(|n| names.contains(n)).collect(),
            _ => Vec::new(),
        };
        self.adapters.insert(name.to_string(), Adapter { config, targets, saved_modules, biases });
        self.set_adapter(name)
    }

    /// The key of a trainable bias in PEFT's files and parameter names: a wrapped Linear keeps its
    /// bias on `base_layer`.
    fn bias_key(adapter: &Adapter, name: &str) -> String {
        match name.strip_suffix(".bias") {
            Some(path) if adapter.targets.iter().any(|t| t == path) => format!("{KEY_PREFIX}{path}.base_layer.bias"),
            _ => format!("{KEY_PREFIX}{name}"),
        }
    }

    /// Makes `name` the active adapter (its LoRA paths, head copies and trainable biases).
    pub fn set_adapter(&mut self, name: &str) -> Result<()> {
        let adapter = self
            .adapters
            .get(name)
            .ok_or_else(|| Error::invalid("set_adapter", format!("no adapter named `{name}`")))?;
        for layer in self.layers.values() {
            layer.set_active(&[name.to_string()]);
        }
        let saved = adapter.saved_modules.clone();
        let originals = self.original_modules.clone();
        let biases = adapter.biases.clone();
        self.base.visit_linears(&mut |path, hooked| {
            if let Some(copy) = saved.get(path) {
                hooked.base = copy.clone();
            } else if let Some(orig) = originals.get(path) {
                hooked.base = orig.clone();
            }
            Ok(())
        })?;
        let in_saved = |n: &str| saved.keys().any(|p| is_under(n, p));
        self.base.visit_parameters(&mut |pname, t| {
            if !pname.ends_with(".bias") || in_saved(pname) {
                return Ok(());
            }
            let want = biases.iter().any(|b| b == pname);
            if want && !t.is_variable() {
                *t = t.requires_grad()?;
            } else if !want && t.is_variable() {
                *t = t.detach();
            }
            Ok(())
        })?;
        self.active = Some(name.to_string());
        Ok(())
    }

    /// Turns every adapter off (the base model's outputs exactly) or back on.
    pub fn set_disabled(&mut self, disabled: bool) -> Result<()> {
        if disabled && self.layers.values().any(|l| !l.merged().is_empty()) {
            self.unmerge()?;
        }
        for layer in self.layers.values() {
            layer.set_disabled(disabled);
        }
        let originals = self.original_modules.clone();
        let saved = self
            .active
            .as_ref()
            .and_then(|a| self.adapters.get(a))
            .map(|a| a.saved_modules.clone())
            .unwrap_or_default();
        self.base.visit_linears(&mut |path, hooked| {
            if disabled {
                if let Some(o) = originals.get(path) {
                    hooked.base = o.clone();
                }
            } else if let Some(c) = saved.get(path) {
                hooked.base = c.clone();
            }
            Ok(())
        })?;
        self.disabled = disabled;
        Ok(())
    }

    pub fn delete_adapter(&mut self, name: &str) -> Result<()> {
        if !self.adapters.contains_key(name) {
            return Err(Error::invalid("delete_adapter", format!("no adapter named `{name}`")));
        }
        if self.layers.values().any(|l| l.merged().iter().any(|m| m == name)) {
            return Err(Error::invalid("delete_adapter", format!("adapter `{name}` is merged; unmerge it first")));
        }
        self.adapters.remove(name);
        for layer in self.layers.values() {
            layer.remove(name);
        }
        let empty: Vec<String> =
            self.layers.iter().filter(|(_, l)| l.adapter_names().is_empty()).map(|(p, _)| p.clone()).collect();
        for p in &empty {
            self.layers.remove(p);
        }
        self.base.visit_linears(&mut |path, hooked| {
            if empty.iter().any(|p| p == path) {
                hooked.hook = None;
            }
            Ok(())
        })?;
        if self.active.as_deref() == Some(name) {
            self.active = None;
            match self.adapters.keys().next().cloned() {
                Some(next) => self.set_adapter(&next)?,
                None => {
                    let originals = std::mem::take(&mut self.original_modules);
                    self.base.visit_linears(&mut |path, hooked| {
                        if let Some(o) = originals.get(path) {
                            hooked.base = o.clone();
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(())
    }

    pub fn forward(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Result<ModelOutput> {
        self.base.forward(input, cache)
    }

    /// The trainable tensors of the active adapter with their PEFT paths (adapter name included,
    /// e.g. `base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight`).
    /// Every adapter's LoRA matrices, head copies and the heads they replaced (see
    /// `AdapterModel::adapter_tensors`).
    pub fn adapter_tensors(&self) -> Vec<Tensor> {
        let linear = |l: &Linear| std::iter::once(l.weight.clone()).chain(l.bias.clone());
        let mut out: Vec<Tensor> = self.layers.values().flat_map(|l| l.named_parameters()).map(|(_, t)| t).collect();
        for adapter in self.adapters.values() {
            out.extend(adapter.saved_modules.values().flat_map(linear));
        }
        out.extend(self.original_modules.values().flat_map(linear));
        out
    }

    pub fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        let Some(name) = &self.active else { return Vec::new() };
        let Some(adapter) = self.adapters.get(name) else { return Vec::new() };
        let mut out = Vec::new();
        for path in &adapter.targets {
            if let Some(w) = self.layers.get(path).and_then(|l| l.get(name)) {
                out.push((format!("{KEY_PREFIX}{path}.lora_A.{name}.weight"), w.a));
                out.push((format!("{KEY_PREFIX}{path}.lora_B.{name}.weight"), w.b));
            }
        }
        let base_params: HashMap<String, Tensor> = self.base.named_parameters().into_iter().collect();
        for bname in &adapter.biases {
            if let Some(b) = base_params.get(bname) {
                out.push((PeftModel::bias_key(adapter, bname), b.clone()));
            }
        }
        for (path, l) in &adapter.saved_modules {
            out.push((format!("{KEY_PREFIX}{path}.modules_to_save.{name}.weight"), l.weight.clone()));
            if let Some(b) = &l.bias {
                out.push((format!("{KEY_PREFIX}{path}.modules_to_save.{name}.bias"), b.clone()));
            }
        }
        out.retain(|(_, t)| t.is_variable());
        out
    }

    /// (trainable, all) parameter counts as PEFT counts them: the base model, every adapter's LoRA
    /// weights, and the head copies next to the originals.
    pub fn parameter_counts(&self) -> (usize, usize) {
        let mut all: usize = self.base.named_parameters().iter().map(|(_, t)| t.numel()).sum();
        let trainable: usize = self.trainable_parameters().iter().map(|(_, t)| t.numel()).sum();
        for (name, adapter) in &self.adapters {
            for path in &adapter.targets {
                if let Some(w) = self.layers.get(path).and_then(|l| l.get(name)) {
                    all += w.a.numel() + w.b.numel();
                }
            }
            // The active adapter's head copies are the model's heads now: count the originals too.
            for (path, copy) in &adapter.saved_modules {
                let counted_in_base = self.active.as_deref() == Some(name) && !self.disabled;
                if counted_in_base {
                    if let Some(o) = self.original_modules.get(path) {
                        all += o.weight.numel() + o.bias.as_ref().map_or(0, |b| b.numel());
                    }
                } else {
                    all += copy.weight.numel() + copy.bias.as_ref().map_or(0, |b| b.numel());
                }
            }
        }
        (trainable, all)
    }

    /// PEFT's `print_trainable_parameters` line.
    pub fn trainable_parameters_line(&self) -> String {
        let (t, a) = self.parameter_counts();
        crate::method::trainable_line(t, a)
    }

    /// Writes `adapter_config.json` + `adapter_model.safetensors` in PEFT's format for `name`.
    pub fn save_adapter(&self, dir: impl AsRef<Path>, name: &str) -> Result<()> {
        let dir = dir.as_ref();
        let adapter = self
            .adapters
            .get(name)
            .ok_or_else(|| Error::invalid("save_adapter", format!("no adapter named `{name}`")))?;
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
        let mut tensors = Vec::new();
        for path in &adapter.targets {
            let w = self
                .layers
                .get(path)
                .and_then(|l| l.get(name))
                .ok_or_else(|| Error::invalid("save_adapter", format!("`{path}` lost its LoRA weights")))?;
            tensors.push((format!("{KEY_PREFIX}{path}.lora_A.weight"), w.a.detach().contiguous()?));
            tensors.push((format!("{KEY_PREFIX}{path}.lora_B.weight"), w.b.detach().contiguous()?));
        }
        let base_params: HashMap<String, Tensor> = self.base.named_parameters().into_iter().collect();
        for bname in &adapter.biases {
            if let Some(b) = base_params.get(bname) {
                tensors.push((PeftModel::bias_key(adapter, bname), b.detach().contiguous()?));
            }
        }
        for (path, l) in &adapter.saved_modules {
            tensors.push((format!("{KEY_PREFIX}{path}.weight"), l.weight.detach().contiguous()?));
            if let Some(b) = &l.bias {
                tensors.push((format!("{KEY_PREFIX}{path}.bias"), b.detach().contiguous()?));
            }
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        save_safetensors(dir.join("adapter_model.safetensors"), &tensors, Some(&meta))?;
        let mut config = adapter.config.clone();
        config.inference_mode = true;
        let json = serde_json::to_vec_pretty(&config.to_json())
            .map_err(|e| Error::invalid("save_adapter", format!("cannot encode the config: {e}")))?;
        engine::io::safetensors::write_atomic(&dir.join("adapter_config.json"), &json)
    }

    /// Loads a PEFT LoRA adapter folder as `name` and makes it active. Every wrapped module must
    /// have its A and B in the file, with the shapes the config implies.
    pub fn load_adapter(&mut self, dir: impl AsRef<Path>, name: &str, trainable: bool) -> Result<Vec<String>> {
        let dir = dir.as_ref();
        let (config, warnings) = LoraConfig::from_file(&dir.join("adapter_config.json"))?;
        let file = SafeTensors::open(dir.join("adapter_model.safetensors"))?;
        let mut probe = config.clone();
        probe.init_lora_weights = InitLoraWeights::Flag(true);
        self.add_adapter(name, probe, 0)?;
        let adapter = &self.adapters[name];
        let param = |t: Tensor| if trainable { t.requires_grad() } else { Ok(t) };
        let mut used = std::collections::HashSet::new();
        for path in adapter.targets.clone() {
            let layer = self.layers[&path].clone();
            let mut w =
                layer.get(name).ok_or_else(|| Error::invalid("load_adapter", format!("`{path}` has no weights")))?;
            for (key, slot) in [("lora_A", &mut w.a), ("lora_B", &mut w.b)] {
                let k = format!("{KEY_PREFIX}{path}.{key}.weight");
                if !file.contains(&k) {
                    return Err(Error::File {
                        path: file.path().display().to_string(),
                        detail: format!("missing `{k}`"),
                    });
                }
                let t = file.tensor_f32(&k)?;
                if t.shape() != slot.shape() {
                    return Err(Error::File {
                        path: file.path().display().to_string(),
                        detail: format!("`{k}` has shape {:?}, the config implies {:?}", t.shape(), slot.shape()),
                    });
                }
                *slot = param(t)?;
                used.insert(k);
            }
            layer.set_weights(name, w);
        }
        // Head copies and biases saved under their original keys.
        let saved_paths: Vec<String> = adapter.saved_modules.keys().cloned().collect();
        let bias_paths = adapter.biases.clone();
        for path in saved_paths {
            let wk = format!("{KEY_PREFIX}{path}.weight");
            let bk = format!("{KEY_PREFIX}{path}.bias");
            let weight = param(file.tensor_f32(&wk)?)?;
            let bias = if file.contains(&bk) { Some(param(file.tensor_f32(&bk)?)?) } else { None };
            used.insert(wk);
            used.insert(bk);
            let l = Linear::from_tensors(weight, bias)?;
            if let Some(a) = self.adapters.get_mut(name) {
                a.saved_modules.insert(path, l);
            }
        }
        // Biases: PEFT's `…base_layer.bias` for wrapped Linears; the plain key is accepted too.
        let mut bias_values = HashMap::new();
        for bname in bias_paths {
            let keys = [PeftModel::bias_key(&self.adapters[name], &bname), format!("{KEY_PREFIX}{bname}")];
            if let Some(k) = keys.iter().find(|k| file.contains(k)) {
                bias_values.insert(bname, file.tensor_f32(k)?);
                used.insert(k.clone());
            }
        }
        if !bias_values.is_empty() {
            // Values are copied into the model's own bias buffers (the base is modified, as in PEFT).
            self.base.visit_parameters(&mut |pname, t| {
                if let Some(v) = bias_values.get(pname) {
                    *t = Tensor::from_vec(v.to_vec_f32()?, v.shape())?;
                }
                Ok(())
            })?;
        }
        let unused: Vec<&str> = file.names().filter(|n| !used.contains(*n)).collect();
        let mut warnings = warnings;
        if !unused.is_empty() {
            warnings.push(format!("{} tensors of the adapter file were not used: {}", unused.len(), unused.join(", ")));
        }
        self.set_adapter(name)?;
        if !trainable {
            self.freeze_adapter(name)?;
        }
        Ok(warnings)
    }

    fn freeze_adapter(&mut self, name: &str) -> Result<()> {
        for layer in self.layers.values() {
            if let Some(w) = layer.get(name) {
                layer.set_weights(name, LoraWeights { a: w.a.detach(), b: w.b.detach(), ..w });
            }
        }
        Ok(())
    }

    /// Folds the active adapter into the base weights (W += s·BA) so inference costs nothing extra.
    pub fn merge(&mut self) -> Result<()> {
        let name = self.active.clone().ok_or_else(|| Error::invalid("merge", "no active adapter"))?;
        let layers = self.layers.clone();
        self.base.visit_linears(&mut |path, hooked| {
            let Some(layer) = layers.get(path) else { return Ok(()) };
            let mut merged = layer.merged();
            if merged.contains(&name) {
                return Ok(());
            }
            if let Some(w) = layer.get(&name) {
                let _g = engine::no_grad();
                if hooked.base.is_packed() {
                    // QLoRA: dequantize and add the delta in f32 (re-quantizing would round the
                    // delta away); the layer becomes a float layer, and unmerge restores the
                    // dequantized weight.
                    let bias = hooked.base.bias.clone();
                    hooked.base = engine::nn::Linear::from_tensors(hooked.base.dense_weight()?, bias)?;
                }
                layer.keep_unmerged_weight(&hooked.base.weight);
                hooked.base.weight = hooked.base.weight.detach().add(&LoraLayer::delta(&w)?)?;
                merged.push(name.clone());
                layer.set_merged(merged);
            }
            Ok(())
        })
    }

    /// Undoes `merge`, restoring the base weight exactly as it was.
    pub fn unmerge(&mut self) -> Result<()> {
        let layers = self.layers.clone();
        self.base.visit_linears(&mut |path, hooked| {
            let Some(layer) = layers.get(path) else { return Ok(()) };
            if let Some(w) = layer.take_unmerged_weight() {
                hooked.base.weight = w;
            }
            layer.set_merged(Vec::new());
            Ok(())
        })
    }

    /// Merges the active adapter and removes every hook: a plain model whose parameters (with the
    /// trained heads in place) can be saved as a Hugging Face folder. A 4-bit base comes out as a
    /// float model: every packed Linear is dequantized (the adapted ones with their delta added).
    pub fn merge_and_unload(mut self) -> Result<Box<dyn Model>> {
        self.merge()?;
        engine::quant::dequantize_model(self.base.as_mut())?;
        let layers = self.layers.clone();
        self.base.visit_linears(&mut |path, hooked| {
            if let Some(layer) = layers.get(path) {
                layer.take_unmerged_weight();
            }
            hooked.hook = None;
            Ok(())
        })?;
        Ok(self.base)
    }
}

/// A PEFT model is a model: generation, `peft forward` and evaluation take it as they take a base.
impl Model for PeftModel {
    fn forward(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Result<ModelOutput> {
        self.base.forward(input, cache)
    }
    crate::method::forward_model_to_base!();
}

/// Whether parameter `name` belongs to the module at `path` (`classifier.bias` under `classifier`).
pub(crate) fn is_under(name: &str, path: &str) -> bool {
    name.strip_prefix(path).is_some_and(|rest| rest.starts_with('.'))
}

/// `modules_to_save` entries match a module path exactly or as a dotted suffix.
pub(crate) fn module_matches(path: &str, module: &str) -> bool {
    path == module || path.ends_with(&format!(".{module}"))
}

pub(crate) fn copy_tensor(t: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(t.to_vec_f32()?, t.shape())
}
