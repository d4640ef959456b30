//! The training loop.
use super::checkpoint::{self, Opt, TrainerState};
use super::config::{OptimizerKind, SchedulerKind, Task, TrainConfig};
use super::data::{collate, epoch_batches, epoch_seed, load_jsonl, pad_id, Batch, DataSpec, Example, LazyTokenizer};
use super::load_base_model;
use super::metrics::{peak_rss_mib, MetricsLog, Progress};
use crate::eval::{evaluate, EvalMetrics};
use crate::method::{self, AdapterModel};
use engine::models::ModelConfig;
use engine::optim::{clip_grad_norm, grad_norm, AdamW, LrSchedule, Sgd};
use engine::{Error, Grads, Result, Tensor};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a run did, also written to `output_dir/summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub task: Task,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    pub model: PathBuf,
    pub output_dir: PathBuf,
    /// The final adapter, in PEFT's format.
    pub adapter_dir: PathBuf,
    pub trainable_params: usize,
    pub total_params: usize,
    /// PEFT's `print_trainable_parameters` line.
    pub trainable_line: String,
    pub train_examples: usize,
    /// Optimizer steps done (in this run and, when resumed, before it).
    pub steps: u64,
    pub total_steps: u64,
    pub warmup_steps: u64,
    /// Passes over the training data, fractional.
    pub epochs: f64,
    /// Seconds from start to end of this process's run (loading, evaluation and saving included).
    pub wall_time_s: f64,
    /// Seconds spent in training steps (all runs of a resumed training).
    pub train_time_s: f64,
    /// Real (non-padding) tokens trained on.
    pub tokens: u64,
    /// Tokens including padding.
    pub padded_tokens: u64,
    /// `tokens / train_time_s`.
    pub tokens_per_s: f64,
    /// Peak resident memory of the process (VmHWM), MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// Mean training loss of the last logging window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_train_loss: Option<f64>,
    /// Steps skipped because the gradient norm was not finite.
    pub skipped_steps: u64,
    /// Where the adapter's parameters were when training ended (`cpu`, `cuda:0`).
    pub device: String,
    /// Dev / test metrics before and after training, by split name.
    pub eval_before: BTreeMap<String, EvalMetrics>,
    pub eval_after: BTreeMap<String, EvalMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<PathBuf>,
    pub warnings: Vec<String>,
    /// The run file as used (paths resolved, overrides applied).
    pub config: TrainConfig,
}

/// The learning-rate schedule of the config over `total` steps.
fn schedule(config: &TrainConfig, total: u64) -> (LrSchedule, u64) {
    let warmup = match (config.warmup_steps, config.warmup_ratio) {
        (Some(w), _) => w,
        (None, Some(r)) => (r * total as f64).ceil() as u64,
        (None, None) => 0,
    };
    let s = match config.lr_scheduler {
        SchedulerKind::Constant if warmup == 0 => LrSchedule::Constant,
        SchedulerKind::Constant => LrSchedule::ConstantWithWarmup { warmup_steps: warmup },
        SchedulerKind::Linear => LrSchedule::linear(warmup, total),
        SchedulerKind::Cosine => LrSchedule::cosine(warmup, total),
    };
    (s, warmup)
}

fn make_optimizer(config: &TrainConfig) -> Opt {
    match config.optimizer {
        OptimizerKind::Adamw => Opt::AdamW(
            AdamW::new(config.learning_rate)
                .with_betas(config.adam_beta1, config.adam_beta2)
                .with_eps(config.adam_epsilon)
                .with_weight_decay(config.weight_decay),
        ),
        OptimizerKind::Sgd => Opt::Sgd(
            Sgd::new(config.learning_rate).with_momentum(config.momentum).with_weight_decay(config.weight_decay),
        ),
    }
}

/// Whether a checkpoint's adapter config (`have`) is the run file's (`want`): every field the run
/// file's config sets (not null) has the same value, except those saving changes (`inference_mode`,
/// `peft_version`). Fields the method fills in from the model (a prompt's `token_dim`) are null in
/// `want` and so not compared.
fn same_config(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    let (Some(want), Some(have)) = (want.as_object(), have.as_object()) else { return want == have };
    want.iter()
        .filter(|(k, v)| !v.is_null() && !matches!(k.as_str(), "inference_mode" | "peft_version"))
        .all(|(k, v)| have.get(k) == Some(v))
}

fn load_split(path: &Option<PathBuf>, spec: &DataSpec, tok: &LazyTokenizer) -> Result<Option<Vec<Example>>> {
    path.as_ref().map(|p| load_jsonl(p, spec, tok)).transpose()
}

/// Trains as `config` says (paths already resolved). `quiet` silences the progress output.
pub fn train(config: &TrainConfig, quiet: bool) -> Result<Summary> {
    let started = Instant::now();
    let task = config.task;
    let model_dir = &config.model;
    let bnb_4bit = config.bnb_4bit()?;
    // bf16 mixed precision: forward, backward and evaluation run under the autocast guard.
    let cast = config.autocast_dtype()?;
    let autocast = || cast.map(engine::autocast).transpose();
    // On a GGUF file, 4-bit loading keeps the file's own blocks (see load_base_model).
    let gguf_blocks = bnb_4bit.is_some() && engine::io::gguf::is_gguf(model_dir);
    let (mut base, num_labels) = load_base_model(model_dir, task, config.num_labels, bnb_4bit.is_some())
        .map_err(|e| Error::invalid("train", format!("`model` {}: {e}", model_dir.display())))?;
    if let Some(q) = bnb_4bit {
        let r = engine::quant::quantize_model(base.as_mut(), &q)?;
        if !quiet {
            let format = match gguf_blocks {
                true => "the GGUF file's own blocks, frozen".to_string(),
                false => {
                    format!("{}{}", q.quant_type.name(), if q.double_quant { " + double quantization" } else { "" })
                }
            };
            eprintln!(
                "loaded in 4 bits ({format}): {} Linears, {:.3} bits per quantized parameter; {} left in f32",
                r.quantized.len(),
                r.bits_per_param(),
                r.skipped.len()
            );
        }
    }
    let model_config = ModelConfig::from_dir(model_dir)?;
    let out = &config.output_dir;
    std::fs::create_dir_all(out).map_err(|e| Error::Io { path: out.display().to_string(), source: e })?;

    // The adapter: from a checkpoint, from an adapter folder, or fresh; the method is the config's.
    let mut warnings = Vec::new();
    let resume_dir = config.resume_from.as_deref().map(|r| checkpoint::resolve_resume(r, out)).transpose()?;
    let section = config.peft_section()?;
    let mut model: Box<dyn AdapterModel> = if let Some(dir) = &resume_dir {
        let (model, w) = method::load_adapter_model(base, dir, true)?;
        warnings.extend(w);
        if let Some(section) = &section {
            let want = method::section_config_json(section, task)?;
            if want.is_some_and(|want| !same_config(&want, &model.adapter_config_json())) {
                return Err(Error::File {
                    path: dir.display().to_string(),
                    detail: "resume_from: the checkpoint's adapter config differs from the run file's `peft` section"
                        .into(),
                });
            }
        }
        model
    } else if let Some(dir) = &config.init_adapter {
        let (model, w) = method::load_adapter_model(base, dir, true)
            .map_err(|e| Error::invalid("train", format!("`init_adapter` {}: {e}", dir.display())))?;
        warnings.extend(w);
        model
    } else if let Some(section) = &section {
        method::build_adapter_model(base, section, task, config.seed)?
    } else {
        return Err(Error::invalid("train", "no adapter: give a `peft` section, `init_adapter` or `resume_from`"));
    };

    let device = config.device()?;
    method::move_to_device(model.as_mut(), device)?;

    // A soft prompt's virtual tokens take positions too.
    let max_pos = model_config.max_position_embeddings;
    let virtual_positions = model.virtual_positions();
    let max_seq_length = config.max_seq_length.unwrap_or(max_pos.saturating_sub(virtual_positions).min(512));
    if max_seq_length + virtual_positions > max_pos {
        let with = if virtual_positions > 0 { format!(" + {virtual_positions} virtual tokens") } else { String::new() };
        return Err(Error::invalid(
            "train",
            format!("`max_seq_length` {max_seq_length}{with} exceeds the model's max_position_embeddings {max_pos}"),
        ));
    }
    let spec = DataSpec {
        task,
        num_labels: num_labels.unwrap_or(0),
        vocab_size: model_config.vocab_size,
        max_seq_length,
        model_dir: model_dir.clone(),
    };
    let tok = LazyTokenizer::new(model_dir);
    let train_set = load_jsonl(&config.data.train, &spec, &tok)?;
    let dev = load_split(&config.data.dev, &spec, &tok)?;
    let test = load_split(&config.data.test, &spec, &tok)?;
    let pad = pad_id(model_dir, model_config.pad_token_id);
    let named = model.trainable_parameters();
    if named.is_empty() {
        return Err(Error::invalid("train", "the adapter has no trainable parameters"));
    }
    let params: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
    let (trainable_params, total_params) = model.parameter_counts();
    let trainable_line = model.trainable_parameters_line();

    // Steps and schedule.
    let bs = config.batch_size;
    let accum = config.gradient_accumulation_steps;
    let batches_per_epoch = train_set.len().div_ceil(bs);
    let steps_per_epoch = batches_per_epoch.div_ceil(accum) as u64;
    let total_steps = match config.max_steps {
        Some(n) => n,
        None => ((config.epochs.unwrap_or(3.0) * steps_per_epoch as f64).ceil() as u64).max(1),
    };
    let (sched, warmup_steps) = schedule(config, total_steps);
    let mut optimizer = make_optimizer(config);
    let data_seed = config.data_order_seed();

    let mut state = match &resume_dir {
        Some(dir) => {
            let s = checkpoint::load_state(dir)?;
            let mismatch = |what: &str, was: String, now: String| {
                Err(Error::File {
                    path: dir.join(checkpoint::TRAINER_STATE).display().to_string(),
                    detail: format!(
                        "resume_from: the checkpoint was made with {what} = {was}, the run has {now}; \
                         it could not continue exactly"
                    ),
                })
            };
            if s.batch_size != bs {
                return mismatch("batch_size", s.batch_size.to_string(), bs.to_string());
            }
            if s.gradient_accumulation_steps != accum {
                return mismatch(
                    "gradient_accumulation_steps",
                    s.gradient_accumulation_steps.to_string(),
                    accum.to_string(),
                );
            }
            if s.bucket_by_length != config.bucket_by_length {
                return mismatch(
                    "bucket_by_length",
                    s.bucket_by_length.to_string(),
                    config.bucket_by_length.to_string(),
                );
            }
            if s.train_examples != train_set.len() {
                return mismatch("training examples", s.train_examples.to_string(), train_set.len().to_string());
            }
            if s.seed != config.seed || s.data_seed != data_seed {
                return mismatch(
                    "seed/data_seed",
                    format!("{}/{}", s.seed, s.data_seed),
                    format!("{}/{data_seed}", config.seed),
                );
            }
            if s.optimizer != optimizer.name() {
                return mismatch("optimizer", s.optimizer.clone(), optimizer.name().into());
            }
            if s.total_steps != total_steps {
                warnings.push(format!(
                    "resuming a run planned for {} steps with {total_steps} steps: the learning-rate schedule changes",
                    s.total_steps
                ));
            }
            checkpoint::load_optimizer(dir, &mut optimizer, &params)?;
            s
        }
        None => TrainerState {
            global_step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            data_seed,
            epoch_order_seed: epoch_seed(data_seed, 0),
            seed: config.seed,
            batch_size: bs,
            gradient_accumulation_steps: accum,
            bucket_by_length: config.bucket_by_length,
            train_examples: train_set.len(),
            total_steps,
            optimizer: optimizer.name().into(),
            tokens_seen: 0,
            padded_tokens_seen: 0,
            train_time_s: 0.0,
            skipped_steps: 0,
            window_loss_sum: 0.0,
            window_steps: 0,
            eval_before: BTreeMap::new(),
        },
    };
    state.total_steps = total_steps;

    let mut log = MetricsLog::open(out, resume_dir.as_ref().map(|_| state.global_step))?;
    let mut progress = Progress::new(total_steps, state.global_step, quiet);
    progress.line(&trainable_line);
    for w in &warnings {
        progress.line(&format!("warning: {w}"));
    }
    if let Some(dir) = &resume_dir {
        progress.line(&format!("resuming from {} at step {}", dir.display(), state.global_step));
    }
    let eval_bs = config.eval_batch();
    let splits: Vec<(&str, &Vec<Example>)> =
        [("dev", dev.as_ref()), ("test", test.as_ref())].into_iter().filter_map(|(n, d)| Some((n, d?))).collect();

    // Evaluation before training (kept in the checkpoints, so a resumed run reports it too).
    if resume_dir.is_none() {
        for (name, data) in &splits {
            let m = {
                let _cast = autocast()?;
                evaluate(model.as_ref(), task, data, eval_bs, pad)?
            };
            log.push(eval_record(name, "before", 0, 0.0, &m))?;
            state.eval_before.insert(name.to_string(), m);
        }
    }
    for (name, m) in &state.eval_before {
        progress.result(&format!("{name} {} before: {}", m.headline(), m.describe()));
    }

    let lengths: Vec<usize> = train_set.iter().map(Example::len).collect();
    let mut plan = epoch_batches(&lengths, bs, data_seed, state.epoch, config.bucket_by_length);
    let mut window_tokens = 0u64;
    let mut window_time = 0.0f64;
    let mut last_window_loss = None;
    while state.global_step < total_steps {
        let step_start = Instant::now();
        let from = state.batch_in_epoch;
        let to = (from + accum).min(plan.len());
        let batches: Vec<Batch> = plan[from..to]
            .iter()
            .map(|idx| collate(&idx.iter().map(|&i| &train_set[i]).collect::<Vec<_>>(), task, pad))
            .collect::<Result<_>>()?;
        let terms: Vec<usize> = batches.iter().map(|b| model.loss_terms(task, b)).collect();
        let items: usize = terms.iter().sum();
        model.train(true);
        model.set_dropout_seed(config.seed, state.global_step);
        let mut grads = Grads::new();
        let mut step_loss = 0.0f64;
        let cast_guard = autocast()?;
        for (b, &n) in batches.iter().zip(&terms).filter(|(_, &n)| n > 0) {
            // Each micro-batch's mean loss weighted by its share of the step's loss terms: the
            // gradient of the mean over the whole step (= 1/accumulation for equal micro-batches).
            let w = n as f32 / items as f32;
            let (_, loss) = model.batch_loss(task, b)?;
            step_loss += loss.to_scalar()? as f64 * w as f64;
            let scaled = if w == 1.0 { loss } else { loss.mul_scalar(w)? };
            grads.accumulate(scaled.backward()?)?;
        }
        drop(cast_guard);
        let norm = if config.max_grad_norm > 0.0 {
            clip_grad_norm(&mut grads, &params, config.max_grad_norm)?
        } else {
            grad_norm(&grads, &params)?
        };
        let lr = sched.lr_at(config.learning_rate, state.global_step);
        if norm.is_finite() && items > 0 {
            let opt = optimizer.as_optimizer();
            opt.set_lr(lr);
            opt.step(&params, &grads)?;
        } else {
            state.skipped_steps += 1;
            progress.line(&format!("warning: step {} skipped (gradient norm {norm})", state.global_step + 1));
        }
        drop(grads);
        state.global_step += 1;
        state.batch_in_epoch = to;
        let tokens: u64 = batches.iter().map(|b| b.tokens as u64).sum();
        state.tokens_seen += tokens;
        state.padded_tokens_seen += batches.iter().map(|b| b.padded_tokens as u64).sum::<u64>();
        state.window_loss_sum += step_loss;
        state.window_steps += 1;
        let secs = step_start.elapsed().as_secs_f64();
        state.train_time_s += secs;
        window_tokens += tokens;
        window_time += secs;
        let epoch_f = state.epoch as f64 + state.batch_in_epoch as f64 / plan.len() as f64;
        if state.batch_in_epoch >= plan.len() {
            state.epoch += 1;
            state.batch_in_epoch = 0;
            state.epoch_order_seed = epoch_seed(data_seed, state.epoch);
            plan = epoch_batches(&lengths, bs, data_seed, state.epoch, config.bucket_by_length);
        }
        let tps = window_tokens as f64 / window_time.max(1e-9);
        progress.step(state.global_step, step_loss, lr, tps);
        let step = state.global_step;
        if step % config.logging_steps == 0 || step == total_steps {
            let loss = state.window_loss_sum / state.window_steps.max(1) as f64;
            log.push(json!({
                "step": step, "epoch": epoch_f, "loss": loss, "lr": lr, "grad_norm": norm, "tokens_per_s": tps,
            }))?;
            if !progress.is_drawn() {
                progress.line(&format!(
                    "step {step}/{total_steps} epoch {epoch_f:.2} loss {loss:.4} lr {lr:.3e} grad_norm {norm:.3} \
                     {tps:.0} tok/s"
                ));
            }
            last_window_loss = Some(loss);
            state.window_loss_sum = 0.0;
            state.window_steps = 0;
            window_tokens = 0;
            window_time = 0.0;
        }
        if config.eval_steps > 0 && step % config.eval_steps == 0 && step != total_steps {
            if let Some(d) = &dev {
                let m = {
                    let _cast = autocast()?;
                    evaluate(model.as_ref(), task, d, eval_bs, pad)?
                };
                log.push(eval_record("dev", "during", step, epoch_f, &m))?;
                progress.line(&format!("step {step}: dev {} {}", m.headline(), m.describe()));
            }
        }
        if config.save_steps > 0 && step % config.save_steps == 0 {
            let dir = checkpoint::save(out, model.as_ref(), &optimizer, &params, &state, config.save_total_limit)?;
            if !progress.is_drawn() {
                progress.line(&format!("saved {}", dir.display()));
            }
        }
    }
    progress.finish();

    let adapter_dir = out.join("adapter");
    model.save_adapter(&adapter_dir)?;
    progress.line(&format!("adapter saved to {}", adapter_dir.display()));
    let mut eval_after = BTreeMap::new();
    let epochs_done = state.epoch as f64 + state.batch_in_epoch as f64 / plan.len() as f64;
    for (name, data) in &splits {
        let m = {
            let _cast = autocast()?;
            evaluate(model.as_ref(), task, data, eval_bs, pad)?
        };
        log.push(eval_record(name, "after", state.global_step, epochs_done, &m))?;
        progress.result(&format!("{name} {} after: {}", m.headline(), m.describe()));
        eval_after.insert(name.to_string(), m);
    }
    let summary = Summary {
        device: params.first().map_or(device, Tensor::device).to_string(),
        task,
        num_labels,
        model: model_dir.clone(),
        output_dir: out.clone(),
        adapter_dir,
        trainable_params,
        total_params,
        trainable_line,
        train_examples: train_set.len(),
        steps: state.global_step,
        total_steps,
        warmup_steps,
        epochs: epochs_done,
        wall_time_s: started.elapsed().as_secs_f64(),
        train_time_s: state.train_time_s,
        tokens: state.tokens_seen,
        padded_tokens: state.padded_tokens_seen,
        tokens_per_s: state.tokens_seen as f64 / state.train_time_s.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
        final_train_loss: last_window_loss,
        skipped_steps: state.skipped_steps,
        eval_before: state.eval_before.clone(),
        eval_after,
        resumed_from: resume_dir,
        warnings,
        config: config.clone(),
    };
    write_summary(out, &summary)?;
    progress.result(&format!(
        "trained {} steps in {:.1} s ({:.0} tokens/s), wall time {:.1} s",
        summary.steps, summary.train_time_s, summary.tokens_per_s, summary.wall_time_s
    ));
    Ok(summary)
}

fn eval_record(split: &str, when: &str, step: u64, epoch: f64, m: &EvalMetrics) -> serde_json::Value {
    let mut v = json!({"step": step, "epoch": epoch, "eval": split, "when": when, "eval_loss": m.loss});
    if let Some(o) = v.as_object_mut() {
        if let Some(a) = m.accuracy {
            o.insert("eval_accuracy".into(), json!(a));
        }
        if let Some(p) = m.perplexity {
            o.insert("eval_perplexity".into(), json!(p));
        }
        o.insert("eval_examples".into(), json!(m.examples));
    }
    v
}

fn write_summary(out: &Path, summary: &Summary) -> Result<()> {
    let json = serde_json::to_vec_pretty(summary).map_err(|e| Error::invalid("summary", e.to_string()))?;
    engine::io::safetensors::write_atomic(&out.join("summary.json"), &json)
}
