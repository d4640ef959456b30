//! Run output: `metrics.jsonl` (one JSON object per logging step and per evaluation), the progress
//! bar (indicatif, on stderr when it is a terminal; plain lines every `logging_steps` otherwise),
//! and the process's peak memory.
use engine::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const METRICS_FILE: &str = "metrics.jsonl";

/// `metrics.jsonl`, rewritten atomically on every line (it stays small: one line per log or eval).
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    lines: Vec<String>,
}

impl MetricsLog {
    /// A new log in `output_dir`. When resuming at `resume_step`, the lines of the earlier run up to
    /// that step are kept and later ones (which the resumed run rewrites) dropped.
    pub fn open(output_dir: &Path, resume_step: Option<u64>) -> Result<MetricsLog> {
        let path = output_dir.join(METRICS_FILE);
        let mut lines = Vec::new();
        if let Some(step) = resume_step {
            if let Ok(text) = std::fs::read_to_string(&path) {
                for line in text.lines() {
                    let s = serde_json::from_str::<Value>(line).ok().and_then(|v| v.get("step")?.as_u64());
                    if s.is_some_and(|s| s <= step) {
                        lines.push(line.to_string());
                    }
                }
            }
        }
        let log = MetricsLog { path, lines };
        log.flush()?;
        Ok(log)
    }

    pub fn push(&mut self, record: Value) -> Result<()> {
        let line = serde_json::to_string(&record).map_err(|e| Error::invalid("metrics", e.to_string()))?;
        self.lines.push(line);
        self.flush()
    }

    fn flush(&self) -> Result<()> {
        let mut text = self.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        engine::io::safetensors::write_atomic(&self.path, text.as_bytes())
    }
}

/// The process's peak resident set (`VmHWM` of `/proc/self/status`) in MiB, where available.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The progress bar, or plain lines when stderr is not a terminal; nothing at all when quiet.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    pub fn new(total_steps: u64, start_step: u64, quiet: bool) -> Progress {
        if quiet {
            return Progress { bar: None, quiet };
        }
        let bar = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
        if bar.is_hidden() {
            return Progress { bar: None, quiet };
        }
        let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_position(start_step);
        bar.reset_eta();
        Progress { bar: Some(bar), quiet }
    }

    /// Whether the bar is drawn (otherwise logging steps print plain lines).
    pub fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    pub fn step(&self, step: u64, loss: f64, lr: f32, tokens_per_s: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"));
        }
    }

    /// A line on stderr (above the bar when it is drawn).
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// A result line on stdout (kept clear of the bar).
    pub fn result(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    /// Clears the bar; later lines are printed plainly.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
