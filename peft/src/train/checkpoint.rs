//! Checkpoints: `output_dir/checkpoint-<step>/` holds the adapter (its method's format), the optimizer state
//! (`optimizer.safetensors`) and `trainer_state.json` — everything a fresh process needs to continue
//! exactly where the run stopped. A checkpoint is written into a temporary folder and renamed into
//! place, so a crash never leaves a half-written `checkpoint-<step>`.
use crate::eval::EvalMetrics;
use crate::method::AdapterModel;
use engine::io::{save_safetensors, SafeTensors};
use engine::optim::{AdamW, Optimizer, Sgd, SgdState};
use engine::{Error, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const TRAINER_STATE: &str = "trainer_state.json";
pub const OPTIMIZER_STATE: &str = "optimizer.safetensors";
const CHECKPOINT_PREFIX: &str = "checkpoint-";

/// Where training stands after `global_step` optimizer steps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub global_step: u64,
    /// The epoch the next micro-batch belongs to (from 0).
    pub epoch: u64,
    /// Micro-batches of that epoch already consumed.
    pub batch_in_epoch: usize,
    /// Seed of the data order: epoch `e`'s order is drawn from a fresh generator seeded by
    /// `data::epoch_seed(data_seed, e)`, so no generator state needs carrying.
    pub data_seed: u64,
    /// `epoch_seed(data_seed, epoch)`: the seed of the generator that drew this epoch's order.
    pub epoch_order_seed: u64,
    /// Seed of the adapter initialization and of the dropout masks (drawn from (seed, step, layer,
    /// call), so the step is all the dropout state there is).
    pub seed: u64,
    /// Settings that fix the batch sequence; resuming with different ones is refused.
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub bucket_by_length: bool,
    pub train_examples: usize,
    pub total_steps: u64,
    pub optimizer: String,
    /// Counters carried into the summary.
    pub tokens_seen: u64,
    pub padded_tokens_seen: u64,
    pub train_time_s: f64,
    pub skipped_steps: u64,
    /// The open logging window (steps since the last log line), so the next line matches an
    /// uninterrupted run's.
    pub window_loss_sum: f64,
    pub window_steps: u64,
    /// Evaluations before training, by split.
    pub eval_before: BTreeMap<String, EvalMetrics>,
}

/// Either optimizer, with its state exportable as named tensors.
#[derive(Debug)]
pub enum Opt {
    AdamW(AdamW),
    Sgd(Sgd),
}

impl Opt {
    pub fn name(&self) -> &'static str {
        match self {
            Opt::AdamW(_) => "adamw",
            Opt::Sgd(_) => "sgd",
        }
    }

    pub fn as_optimizer(&mut self) -> &mut dyn Optimizer {
        match self {
            Opt::AdamW(o) => o,
            Opt::Sgd(o) => o,
        }
    }

    /// The state as tensors: AdamW's `state_tensors`; SGD's momentum buffers as `"{i}.momentum_buffer"`.
    pub fn state_tensors(&self, params: &[Tensor]) -> Result<Vec<(String, Tensor)>> {
        match self {
            Opt::AdamW(o) => o.state_tensors(params),
            Opt::Sgd(o) => {
                let mut out = Vec::new();
                for (i, b) in o.state()?.momentum_buffers.iter().enumerate() {
                    if let (Some(b), Some(p)) = (b, params.get(i)) {
                        out.push((format!("{i}.momentum_buffer"), Tensor::from_slice(b, p.shape())?));
                    }
                }
                Ok(out)
            }
        }
    }

    pub fn load_state_tensors(&mut self, tensors: &[(String, Tensor)], params: &[Tensor]) -> Result<()> {
        match self {
            Opt::AdamW(o) => o.load_state_tensors(tensors, params),
            Opt::Sgd(o) => {
                let mut state = SgdState { momentum_buffers: vec![None; params.len()] };
                for (name, t) in tensors {
                    let i = name
                        .strip_suffix(".momentum_buffer")
                        .and_then(|i| i.parse::<usize>().ok())
                        .filter(|&i| i < params.len())
                        .ok_or_else(|| Error::invalid("Sgd state", format!("unexpected tensor `{name}`")))?;
                    state.momentum_buffers[i] = Some(t.to_vec::<f32>()?);
                }
                o.load_state(state, params)
            }
        }
    }
}

/// `output_dir/checkpoint-<step>`.
pub fn checkpoint_dir(output_dir: &Path, step: u64) -> PathBuf {
    output_dir.join(format!("{CHECKPOINT_PREFIX}{step}"))
}

/// The finished checkpoints of `output_dir`, oldest first.
pub fn list_checkpoints(output_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(output_dir) else { return Vec::new() };
    let mut out: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix(CHECKPOINT_PREFIX)?.parse::<u64>().ok()?;
            let p = e.path();
            p.join(TRAINER_STATE).is_file().then_some((step, p))
        })
        .collect();
    out.sort();
    out
}

/// The folder `resume_from` names: a checkpoint path, or `"latest"` (the newest in `output_dir`).
pub fn resolve_resume(spec: &str, output_dir: &Path) -> Result<PathBuf> {
    if spec == "latest" {
        return list_checkpoints(output_dir).pop().map(|(_, p)| p).ok_or_else(|| Error::File {
            path: output_dir.display().to_string(),
            detail: "resume_from \"latest\": no checkpoint-<step> folder with a trainer_state.json here".into(),
        });
    }
    let p = PathBuf::from(spec);
    if !p.join(TRAINER_STATE).is_file() {
        return Err(Error::File {
            path: p.display().to_string(),
            detail: format!("resume_from: not a checkpoint folder (no {TRAINER_STATE})"),
        });
    }
    Ok(p)
}

/// Writes `checkpoint-<step>` atomically (a temporary folder renamed into place) and removes the
/// oldest checkpoints beyond `keep` (0 = keep all).
pub fn save(
    output_dir: &Path,
    model: &dyn AdapterModel,
    optimizer: &Opt,
    params: &[Tensor],
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| Error::Io { path: p, source: e }
    };
    let target = checkpoint_dir(output_dir, state.global_step);
    let tmp = output_dir.join(format!(".{CHECKPOINT_PREFIX}{}.tmp-{}", state.global_step, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    model.save_adapter(&tmp)?;
    let mut meta = BTreeMap::new();
    meta.insert("optimizer".to_string(), optimizer.name().to_string());
    save_safetensors(tmp.join(OPTIMIZER_STATE), &optimizer.state_tensors(params)?, Some(&meta))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
    engine::io::safetensors::write_atomic(&tmp.join(TRAINER_STATE), &json)?;
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(io(&target))?;
    }
    std::fs::rename(&tmp, &target).map_err(io(&target))?;
    if keep > 0 {
        let all = list_checkpoints(output_dir);
        for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(old).map_err(io(old))?;
        }
    }
    Ok(target)
}

/// Reads `trainer_state.json` of a checkpoint.
pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(TRAINER_STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::File { path: path.display().to_string(), detail: format!("not a trainer state: {e}") })
}

/// Loads a checkpoint's optimizer state into `optimizer` (which must be the same kind).
pub fn load_optimizer(dir: &Path, optimizer: &mut Opt, params: &[Tensor]) -> Result<()> {
    let path = dir.join(OPTIMIZER_STATE);
    let file = SafeTensors::open(&path)?;
    let saved_kind = file.metadata().get("optimizer").cloned().unwrap_or_default();
    if saved_kind != optimizer.name() {
        return Err(Error::File {
            path: path.display().to_string(),
            detail: format!("holds `{saved_kind}` state but the run uses `{}`", optimizer.name()),
        });
    }
    let tensors: Vec<(String, Tensor)> =
        file.names().map(|n| Ok((n.to_string(), file.tensor(n)?))).collect::<Result<_>>()?;
    optimizer
        .load_state_tensors(&tensors, params)
        .map_err(|e| Error::File { path: path.display().to_string(), detail: e.to_string() })
}
