//! Memory and time of loading a model folder with `engine::models::load`, then of one forward pass,
//! all in this process: resident set size before loading, after loading and after the forward pass
//! (VmRSS), and the peak resident set size (VmHWM) after each, next to the f32 size of the weights.
//!
//! Memory-mapped weights count in the RSS only once their pages are touched, so the figure right
//! after loading shows what loading itself copied; the forward pass then touches every weight (and
//! the embedding rows of the ids it looks up). RssFile (touched mapped pages) and RssAnon (heap)
//! split each figure. Linux only: the figures come from /proc/self/status.
use engine::models::{self, ForwardInput};
use engine::Tensor;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;

/// Memory figures of this process, in bytes, from /proc/self/status.
#[derive(Clone, Copy, Debug)]
struct Mem {
    /// VmRSS: resident now.
    rss: u64,
    /// VmHWM: peak resident since the process started.
    peak: u64,
    /// RssFile: resident pages of mapped files (the memory-mapped weights touched so far).
    file: u64,
    /// RssAnon: resident anonymous memory (heap: copied weights, activations, buffers).
    anon: u64,
}

fn mem() -> Result<Mem, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status (Linux only): {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("/proc/self/status has no {name} line"))?;
        let kb = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("{line:?}: {e}"))?;
        Ok(kb * 1024)
    };
    Ok(Mem { rss: field("VmRSS:")?, peak: field("VmHWM:")?, file: field("RssFile:")?, anon: field("RssAnon:")? })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn default_model() -> PathBuf {
    let assets = match std::env::var_os("PEFT_ASSETS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("assets"),
    };
    assets.join("all-MiniLM-L6-v2")
}

fn arg<T: std::str::FromStr>(args: &[String], flag: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == flag) {
        Some(i) => {
            let v = args.get(i + 1).ok_or_else(|| format!("{flag} needs a value"))?;
            v.parse().map(Some).map_err(|_| format!("{flag}: cannot parse {v:?}"))
        }
        None => Ok(None),
    }
}

/// `bench load [--model DIR] [--batch N] [--seq N]` (defaults: assets/all-MiniLM-L6-v2, 16, 128).
pub fn run(args: &[String]) -> Result<(), String> {
    let before = mem()?;
    let dir: PathBuf = arg::<String>(args, "--model")?.map(PathBuf::from).unwrap_or_else(default_model);
    let batch: usize = arg(args, "--batch")?.unwrap_or(16);
    let seq: usize = arg(args, "--seq")?.unwrap_or(128);
    if !dir.join("config.json").is_file() {
        return Err(format!("{} has no config.json (run scripts/fetch-assets.sh, or pass --model DIR)", dir.display()));
    }

    let t = Instant::now();
    let model = models::load(&dir).map_err(|e| format!("loading {}: {e}", dir.display()))?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let after_load = mem()?;

    let params = model.named_parameters();
    let numel: usize = params.iter().map(|(_, p)| p.numel()).sum();
    let mapped = params.iter().filter(|(_, p)| p.is_memory_mapped()).count();
    let weights_f32 = (numel * 4) as f64;

    // Deterministic pseudo-random ids spread over the vocabulary (avoiding the low special ids), so
    // the lookup touches embedding rows the way varied text does.
    let config = model.config();
    let vocab = config.vocab_size.max(2) as u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let ids: Vec<i64> = (0..batch * seq)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let low = vocab.min(1000);
            (low + (state >> 33) % (vocab - low).max(1)) as i64
        })
        .collect();
    let input_ids = Tensor::from_vec(ids, &[batch, seq]).map_err(|e| e.to_string())?;
    let attention_mask = Tensor::from_vec(vec![1i64; batch * seq], &[batch, seq]).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let out = engine::no_grad_scope(|| {
        model.forward(
            &ForwardInput { input_ids: Some(&input_ids), attention_mask: Some(&attention_mask), ..Default::default() },
            None,
        )
    })
    .map_err(|e| format!("forward: {e}"))?;
    let forward_ms = t.elapsed().as_secs_f64() * 1e3;
    let after_forward = mem()?;
    let out_shape = out.main().1.shape().to_vec();
    drop(out);

    println!(
        "{}",
        json!({
            "bench": "load",
            "model": dir.canonicalize().unwrap_or_else(|_| dir.clone()).display().to_string(),
            "architecture": config.architecture.name(),
            "parameters": numel,
            "parameter_tensors": params.len(),
            "memory_mapped_tensors": mapped,
            "weights_f32_mib": weights_f32 / MIB,
            "rss_before_mib": mib(before.rss),
            "rss_after_load_mib": mib(after_load.rss),
            "rss_file_after_load_mib": mib(after_load.file),
            "rss_anon_after_load_mib": mib(after_load.anon),
            "peak_rss_after_load_mib": mib(after_load.peak),
            "load_ms": load_ms,
            "forward_tokens": [batch, seq],
            "forward_output_shape": out_shape,
            "forward_ms": forward_ms,
            "rss_after_forward_mib": mib(after_forward.rss),
            "rss_file_after_forward_mib": mib(after_forward.file),
            "rss_anon_after_forward_mib": mib(after_forward.anon),
            "peak_rss_mib": mib(after_forward.peak),
            "ratio_peak_over_weights": after_forward.peak as f64 / weights_f32,
        })
    );
    Ok(())
}
