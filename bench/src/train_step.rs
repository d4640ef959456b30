//! LoRA training steps on two fixed model shapes, to compare with PyTorch + PEFT on the same machine
//! (`bench/baseline/pytorch_train_step.py` runs the same configs):
//! (a) BERT with all-MiniLM-L6-v2's shape, sequence classification, batch 16 × 128, LoRA r=8 α=16 on
//!     query,value (classifier trained);
//! (b) LLaMA, hidden 512, 8 layers, 8 heads / 4 kv heads, intermediate 1376, vocab 32000, causal LM,
//!     batch 4 × 256, LoRA r=16 α=32 on all seven projections.
//! Both AdamW. `--device cuda:N` runs the step on a GPU (build with `--features cuda`). Random weights are written to a temporary model folder and loaded the normal way.
//! Each model runs in its own process so that its peak RSS is its own. `--load-in-4bit` (QLoRA)
//! stores the base Linears in NF4 + double quantization first (heads stay f32). `--bf16` runs forward
//! and backward under `engine::autocast(BF16)` (matmul operands in bf16, f32 accumulation; PyTorch's
//! baseline: `torch.autocast(dtype=torch.bfloat16)`).
use engine::io::save_safetensors;
use engine::models::{load, ForwardInput};
use engine::optim::AdamW;
use engine::random::Rng;
use engine::{DType, Tensor};
use peft::{LoraConfig, PeftModel};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

fn e<T>(r: engine::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn rand(shape: &[usize], seed: u64) -> Result<Tensor, String> {
    e(Tensor::randn(shape, 0.0, 0.02, seed))
}

/// Writes config.json + model.safetensors with random weights for the named shape.
fn write_model(dir: &Path, which: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut t: Vec<(String, Tensor)> = Vec::new();
    let mut seed = 0u64;
    let mut add = |name: String, shape: &[usize], ones: bool| -> Result<(), String> {
        seed += 1;
        let v = if ones { e(Tensor::ones(shape, DType::F32))? } else { rand(shape, seed)? };
        t.push((name, v));
        Ok(())
    };
    let config = match which {
        "bert" => {
            let (h, i, v) = (384, 1536, 30522);
            add("bert.embeddings.word_embeddings.weight".into(), &[v, h], false)?;
            add("bert.embeddings.position_embeddings.weight".into(), &[512, h], false)?;
            add("bert.embeddings.token_type_embeddings.weight".into(), &[2, h], false)?;
            add("bert.embeddings.LayerNorm.weight".into(), &[h], true)?;
            add("bert.embeddings.LayerNorm.bias".into(), &[h], false)?;
            for l in 0..6 {
                let p = format!("bert.encoder.layer.{l}");
                for (n, o, i_) in [
                    ("attention.self.query", h, h),
                    ("attention.self.key", h, h),
                    ("attention.self.value", h, h),
                    ("attention.output.dense", h, h),
                    ("intermediate.dense", i, h),
                    ("output.dense", h, i),
                ] {
                    add(format!("{p}.{n}.weight"), &[o, i_], false)?;
                    add(format!("{p}.{n}.bias"), &[o], false)?;
                }
                for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
                    add(format!("{p}.{n}.weight"), &[h], true)?;
                    add(format!("{p}.{n}.bias"), &[h], false)?;
                }
            }
            add("bert.pooler.dense.weight".into(), &[h, h], false)?;
            add("bert.pooler.dense.bias".into(), &[h], false)?;
            add("classifier.weight".into(), &[2, h], false)?;
            add("classifier.bias".into(), &[2], false)?;
            json!({"architectures": ["BertForSequenceClassification"], "model_type": "bert", "hidden_size": h,
                   "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": i, "vocab_size": v,
                   "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
                   "hidden_act": "gelu", "num_labels": 2})
        }
        "llama" => {
            let (h, i, v, hd) = (512, 1376, 32000, 64);
            add("model.embed_tokens.weight".into(), &[v, h], false)?;
            for l in 0..8 {
                let p = format!("model.layers.{l}");
                for (n, o, i_) in [
                    ("self_attn.q_proj", 8 * hd, h),
                    ("self_attn.k_proj", 4 * hd, h),
                    ("self_attn.v_proj", 4 * hd, h),
                    ("self_attn.o_proj", h, 8 * hd),
                    ("mlp.gate_proj", i, h),
                    ("mlp.up_proj", i, h),
                    ("mlp.down_proj", h, i),
                ] {
                    add(format!("{p}.{n}.weight"), &[o, i_], false)?;
                }
                add(format!("{p}.input_layernorm.weight"), &[h], true)?;
                add(format!("{p}.post_attention_layernorm.weight"), &[h], true)?;
            }
            add("model.norm.weight".into(), &[h], true)?;
            add("lm_head.weight".into(), &[v, h], false)?;
            json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
                   "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 4,
                   "intermediate_size": i, "vocab_size": v, "max_position_embeddings": 2048,
                   "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": false})
        }
        other => return Err(format!("unknown model `{other}` (bert or llama)")),
    };
    e(save_safetensors(dir.join("model.safetensors"), &t, None))?;
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| e.to_string())
}

fn peak_rss_mib() -> f64 {
    peft::train::metrics::peak_rss_mib().unwrap_or(f64::NAN)
}

/// QLoRA: rewrites the model folder `dir` in 4 bits (NF4 + double quantization, heads in f32), as
/// `peft quantize` does, so that the measured run loads packed weights and never touches f32 ones.
fn quantize_folder(dir: &Path) -> Result<(), String> {
    let mut model = e(load(dir))?;
    let q = engine::quant::Bnb4bitConfig { double_quant: true, ..Default::default() };
    e(engine::quant::quantize_model(model.as_mut(), &q))?;
    let tmp = dir.with_extension("q4");
    e(engine::quant::save_pretrained_4bit(model.as_mut(), &tmp, None, &q))?;
    drop(model);
    std::fs::remove_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, dir).map_err(|e| e.to_string())
}

/// Bytes of the packed Linear weights as stored, and as they would be in f32 (0, 0 without any).
fn packed_weight_bytes(model: &mut dyn engine::models::Model) -> Result<(usize, usize), String> {
    let (mut stored, mut f32_bytes) = (0, 0);
    e(model.visit_linears(&mut |_, l| {
        if let Some(p) = &l.base.packed {
            f32_bytes += p.shape()[0] * p.shape()[1] * 4;
            stored += p.stored_bytes();
        }
        Ok(())
    }))?;
    Ok((stored, f32_bytes))
}

fn run_one(which: &str, steps: usize, load_in_4bit: bool, bf16: bool, device: engine::Device) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("bench-train-step-{which}-{}", std::process::id()));
    write_model(&dir, which)?;
    if load_in_4bit {
        quantize_folder(&dir)?;
    }
    // Writing the random model is set-up, not training: start the peak-RSS count after it (Linux
    // resets VmHWM when 5 is written to clear_refs).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let result = (|| -> Result<(), String> {
        let mut base = e(load(&dir))?;
        let (packed_bytes, packed_f32_bytes) = packed_weight_bytes(base.as_mut())?;
        let mut model = PeftModel::new(base);
        let (batch, seq, vocab, targets, r, alpha): (usize, usize, usize, &[&str], usize, f32) = match which {
            "bert" => (16, 128, 30522, &["query", "value"], 8, 16.0),
            _ => (
                4,
                256,
                32000,
                &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                16,
                32.0,
            ),
        };
        let mut cfg = LoraConfig::new(r, alpha, targets);
        if which == "bert" {
            cfg.task_type = Some("SEQ_CLS".into());
            cfg.modules_to_save = Some(vec!["classifier".into(), "score".into()]);
        } else {
            cfg.task_type = Some("CAUSAL_LM".into());
        }
        e(model.add_adapter("default", cfg, 0))?;
        e(peft::method::move_to_device(&mut model, device))?;
        model.train(true);
        let params: Vec<Tensor> = model.trainable_parameters().into_iter().map(|(_, t)| t).collect();
        let mut opt = AdamW::new(1e-4);
        let mut rng = Rng::new(1);
        let ids: Vec<i64> = (0..batch * seq).map(|_| rng.next_below(vocab as u64) as i64).collect();
        let ids = e(Tensor::from_vec(ids, &[batch, seq]))?;
        let cls_labels = e(Tensor::from_vec((0..batch as i64).map(|i| i % 2).collect::<Vec<_>>(), &[batch]))?;
        let mut step = || -> Result<f64, String> {
            let t = Instant::now();
            let cast = if bf16 { Some(e(engine::autocast(DType::BF16))?) } else { None };
            let out = e(model.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None))?;
            let logits = out.logits.ok_or("no logits")?;
            let loss = if which == "bert" {
                e(peft::loss::classification_loss(&logits, &cls_labels))?
            } else {
                e(peft::loss::causal_lm_loss(&logits, &ids))?
            };
            let grads = e(loss.backward())?;
            drop(cast);
            e(opt.step(&params, &grads))?;
            // GPU launches are queued: the step ends when they have run.
            #[cfg(feature = "cuda")]
            if let engine::Device::Cuda(o) = device {
                e(engine::gpu::synchronize(o))?;
            }
            Ok(t.elapsed().as_secs_f64())
        };
        step()?; // warm-up: first-touch of weights, pools filled
        let mut times: Vec<f64> = (0..steps).map(|_| step()).collect::<Result<_, _>>()?;
        times.sort_by(|a, b| a.total_cmp(b));
        let median = times[times.len() / 2];
        println!(
            "{}",
            json!({"bench":"train-step","impl":"engine","model":which,"batch":batch,"seq":seq,
                   "tokens_per_s": (batch * seq) as f64 / median, "step_s": median, "step_s_min": times[0],
                   "steps": steps, "threads": rayon::current_num_threads(), "device": device.to_string(), "peak_rss_mib": peak_rss_mib(),
                   "base": if load_in_4bit { "nf4+dq/64" } else { "f32" },
                   "mixed_precision": if bf16 { "bf16" } else { "no" },
                   "packed_weight_bytes": packed_bytes, "packed_weight_f32_bytes": packed_f32_bytes})
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

pub fn run(args: &[String]) -> Result<(), String> {
    let steps = match args.iter().position(|a| a == "--steps") {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or("--steps needs a number")?,
        None => 5,
    };
    // QLoRA: the base model's Linears in 4 bits.
    let q4 = args.iter().any(|a| a == "--load-in-4bit");
    let bf16 = args.iter().any(|a| a == "--bf16");
    let device = match args.iter().position(|a| a == "--device") {
        Some(i) => e(engine::Device::parse(args.get(i + 1).ok_or("--device needs cpu, cuda or cuda:N")?))?,
        None => engine::Device::Cpu,
    };
    if let Some(i) = args.iter().position(|a| a == "--model") {
        let which = args.get(i + 1).ok_or("--model needs bert or llama")?;
        return run_one(which, steps, q4, bf16, device);
    }
    // One child process per model, so each peak RSS is that model's alone.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    for which in ["bert", "llama"] {
        let status = std::process::Command::new(&exe)
            .args(["train-step", "--model", which, "--steps", &steps.to_string()])
            .args(q4.then_some("--load-in-4bit"))
            .args(bf16.then_some("--bf16"))
            .args(["--device", &device.to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("train-step for {which} failed"));
        }
    }
    Ok(())
}
