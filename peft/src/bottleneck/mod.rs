//! Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020; He et al. 2021) in AdapterHub's
//! format: `adapters` 1.3.0's `BnConfig` and presets (`double_seq_bn`, `seq_bn`, `par_bn`, …), its
//! placement in BERT, GPT-2 and LLaMA blocks (through the models' residual hooks), its
//! initialisations, and its adapter folders both ways.
pub mod adapter;
pub mod config;
pub mod files;
pub mod model;

pub use adapter::{AdapterSite, BottleneckWeights};
pub use config::{BnConfig, BottleneckSpec, InitWeights, ResidualBeforeLn, Scaling, PRESETS};
pub use model::BottleneckModel;

use crate::method::AdapterModel;
use crate::train::config::Task;
use engine::models::{Architecture, ModelConfig};
use engine::{Error, Result, Tensor};
use std::path::Path;

impl AdapterModel for BottleneckModel {
    fn peft_type(&self) -> &'static str {
        "BOTTLENECK"
    }
    /// The adapter's tensors under `adapters`' keys, then any trained base parameter (head, norms)
    /// under the model's names.
    /// The adapters' weights (the heads and norms they train are base parameters).
    fn adapter_tensors(&self) -> Vec<Tensor> {
        BottleneckModel::adapter_tensors(self, false).into_iter().map(|(_, t)| t).collect()
    }

    fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> =
            self.adapter_tensors(false).into_iter().filter(|(_, t)| t.is_variable()).collect();
        out.extend(self.trained_base_parameters());
        out
    }
    fn parameter_counts(&self) -> (usize, usize) {
        BottleneckModel::parameter_counts(self)
    }
    fn train(&self, on: bool) {
        BottleneckModel::train(self, on)
    }
    fn set_dropout_seed(&self, seed: u64, step: u64) {
        BottleneckModel::set_dropout_seed(self, seed, step)
    }
    fn save_adapter(&self, dir: &Path) -> Result<()> {
        self.save(dir)
    }
    fn adapter_config_json(&self) -> serde_json::Value {
        self.spec().to_json()
    }
}

/// The label count of a saved classification head (`model_head.safetensors`), if the folder has one.
pub fn head_labels(adapter_dir: &Path) -> Result<Option<usize>> {
    let head = adapter_dir.join(files::HEAD_WEIGHTS_NAME);
    if !head.is_file() {
        return Ok(None);
    }
    let st = engine::io::SafeTensors::open(&head)?;
    let rows = st
        .names()
        .find(|n| n.ends_with("classifier.weight"))
        .and_then(|n| st.info(n))
        .map(|i| i.shape[0])
        .ok_or_else(|| Error::File { path: head.display().to_string(), detail: "no classifier.weight".into() })?;
    Ok(Some(rows))
}

/// The task an AdapterHub folder was saved for, from the model class it names (`None` for a bare
/// encoder).
pub fn adapter_task(adapter_dir: &Path) -> Result<Option<Task>> {
    let config = crate::method::read_adapter_config(adapter_dir)?;
    let class = config.get("model_class").and_then(serde_json::Value::as_str).unwrap_or("");
    Ok(match class {
        c if c == Architecture::BertForSequenceClassification.name() => Some(Task::SequenceClassification),
        c if c == Architecture::BertForTokenClassification.name() => Some(Task::TokenClassification),
        c if c.ends_with("ForCausalLM") || c.ends_with("LMHeadModel") => Some(Task::CausalLm),
        _ => None,
    })
}

/// The architecture and label count a base folder must be loaded as for an AdapterHub adapter folder:
/// a saved classification head (`model_head.safetensors`) on a bare encoder asks for the task model
/// with the head's size. `None` = load the base as it is.
pub fn base_architecture(adapter_dir: &Path, base: &ModelConfig) -> Result<Option<(Architecture, usize)>> {
    if base.architecture != Architecture::BertModel {
        return Ok(None);
    }
    let Some(rows) = head_labels(adapter_dir)? else { return Ok(None) };
    let arch = match adapter_task(adapter_dir)? {
        Some(Task::TokenClassification) => Architecture::BertForTokenClassification,
        _ => Architecture::BertForSequenceClassification,
    };
    Ok(Some((arch, rows)))
}
