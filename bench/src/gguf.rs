//! SmolLM2-135M-Instruct from its GGUF file (`assets/smollm2`, Q4_1 Linears, Q8_0 tied embedding),
//! loaded two ways, each in its own process so the memory figures are its own:
//! - `dense`: every weight dequantized to f32 (`engine::models::load`), the baseline;
//! - `packed`: the Q4_1 blocks kept in the mapped file, dequantized tile by tile inside each matmul
//!   (`load_llama_packed`, what QLoRA trains on).
//!
//! For each: load time and resident memory after loading (RssAnon: the heap, i.e. the dequantized
//! weights; RssFile: mapped file pages touched), forward tokens/s (no grad, batch 1 × 128 and
//! 4 × 128) and one LoRA training step (r 16, α 32 on all seven projections, AdamW; batch 4 × 128),
//! median of `--steps` runs after a warm-up, with the peak RSS. Prints JSON lines; the packed line
//! carries its ratios to the dense one.
use engine::io::gguf::llama::load_llama_packed;
use engine::models::{load, ForwardInput, Model};
use engine::optim::AdamW;
use engine::random::Rng;
use engine::Tensor;
use peft::{LoraConfig, PeftModel};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

fn e<T>(r: engine::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn model_path() -> PathBuf {
    let assets = match std::env::var_os("PEFT_ASSETS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("assets"),
    };
    assets.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// (VmRSS, RssAnon, RssFile, VmHWM) in MiB, from /proc/self/status (Linux).
fn mem_mib() -> Result<[f64; 4], String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    let field = |name: &str| -> Result<f64, String> {
        let line = status.lines().find(|l| l.starts_with(name)).ok_or_else(|| format!("no {name} line"))?;
        let kb: f64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().map_err(|e| format!("{e}"))?;
        Ok(kb / 1024.0)
    };
    Ok([field("VmRSS:")?, field("RssAnon:")?, field("RssFile:")?, field("VmHWM:")?])
}

/// Median seconds of `n` calls after one warm-up call.
fn median_s(n: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    f()?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

fn random_ids(batch: usize, seq: usize, vocab: usize, seed: u64) -> Result<Tensor, String> {
    let mut rng = Rng::new(seed);
    let ids: Vec<i64> = (0..batch * seq).map(|_| rng.next_below(vocab as u64) as i64).collect();
    e(Tensor::from_vec(ids, &[batch, seq]))
}

fn run_one(mode: &str, steps: usize) -> Result<Value, String> {
    let path = model_path();
    if !path.is_file() {
        return Err(format!("{} is missing: run scripts/fetch-assets.sh smollm2", path.display()));
    }
    let t = Instant::now();
    let base: Box<dyn Model> = match mode {
        "dense" => e(load(&path))?,
        _ => e(load_llama_packed(&path))?,
    };
    let load_s = t.elapsed().as_secs_f64();
    let [rss, anon, file, _] = mem_mib()?;
    let vocab = base.config().vocab_size;
    let mut forward_tps = serde_json::Map::new();
    for batch in [1usize, 4] {
        let ids = random_ids(batch, 128, vocab, batch as u64)?;
        let s = median_s(steps, || {
            let _g = engine::no_grad();
            e(base.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None)).map(|_| ())
        })?;
        forward_tps.insert(format!("{batch}x128"), json!((batch * 128) as f64 / s));
    }
    let mut model = PeftModel::new(base);
    let targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    let mut cfg = LoraConfig::new(16, 32.0, &targets);
    cfg.task_type = Some("CAUSAL_LM".into());
    e(model.add_adapter("default", cfg, 0))?;
    model.train(true);
    let params: Vec<Tensor> = model.trainable_parameters().into_iter().map(|(_, t)| t).collect();
    let mut opt = AdamW::new(1e-4);
    let ids = random_ids(4, 128, vocab, 7)?;
    let step_s = median_s(steps, || {
        let out = e(model.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None))?;
        let loss = e(peft::loss::causal_lm_loss(&out.logits.ok_or("no logits")?, &ids))?;
        let grads = e(loss.backward())?;
        e(opt.step(&params, &grads))
    })?;
    let [_, _, _, peak] = mem_mib()?;
    Ok(json!({"bench": "gguf", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "base": mode,
              "threads": rayon::current_num_threads(), "load_s": load_s,
              "rss_after_load_mib": rss, "anon_after_load_mib": anon, "file_after_load_mib": file,
              "forward_tokens_per_s": forward_tps, "lora_step_4x128_s": step_s,
              "lora_step_tokens_per_s": 512.0 / step_s, "peak_rss_mib": peak, "steps": steps}))
}

pub fn run(args: &[String]) -> Result<(), String> {
    let steps = match args.iter().position(|a| a == "--steps") {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or("--steps needs a number")?,
        None => 3,
    };
    if let Some(i) = args.iter().position(|a| a == "--mode") {
        let mode = args.get(i + 1).ok_or("--mode needs dense or packed")?;
        if mode != "dense" && mode != "packed" {
            return Err(format!("unknown mode `{mode}` (dense or packed)"));
        }
        println!("{}", run_one(mode, steps)?);
        return Ok(());
    }
    // One child process per mode, so that each memory figure is that mode's alone.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut lines: Vec<Value> = Vec::new();
    for mode in ["dense", "packed"] {
        let out = std::process::Command::new(&exe)
            .args(["gguf", "--mode", mode, "--steps", &steps.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("gguf --mode {mode} failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        lines.push(serde_json::from_str(line.trim()).map_err(|e| format!("{e}: {line}"))?);
    }
    let (dense, packed) = (&lines[0], &lines[1]);
    let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if y > 0.0 => json!(x / y),
        _ => Value::Null,
    };
    let mut packed = packed.clone();
    packed["vs_dense"] = json!({
        "anon_after_load": ratio(&packed["anon_after_load_mib"], &dense["anon_after_load_mib"]),
        "forward_1x128": ratio(&packed["forward_tokens_per_s"]["1x128"], &dense["forward_tokens_per_s"]["1x128"]),
        "forward_4x128": ratio(&packed["forward_tokens_per_s"]["4x128"], &dense["forward_tokens_per_s"]["4x128"]),
        "lora_step_tokens_per_s": ratio(&packed["lora_step_tokens_per_s"], &dense["lora_step_tokens_per_s"]),
        "peak_rss": ratio(&packed["peak_rss_mib"], &dense["peak_rss_mib"]),
    });
    println!("{dense}");
    println!("{packed}");
    Ok(())
}
