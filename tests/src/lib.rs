//! Shared helpers for the cross-crate integration tests: where the fixtures are, reading the
//! manifest, comparing outputs.
use engine::autograd::Grads;
use engine::io::SafeTensors;
use engine::Tensor;
use std::path::PathBuf;

/// `PEFT_FIXTURES_DIR`, or the repository's `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    std::env::var("PEFT_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures"))
}

pub fn manifest() -> serde_json::Value {
    let path = fixtures_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// `input_ids` of a manifest case as an i64 `[batch, seq]` tensor.
pub fn input_ids(case: &serde_json::Value) -> Tensor {
    let rows: Vec<Vec<i64>> = serde_json::from_value(case["input_ids"].clone()).expect("input_ids");
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), &[b, t]).unwrap()
}

/// Largest |got − want| − (atol + rtol·|want|) over all elements; ≤ 0 means within tolerance.
pub fn worst_excess(got: &[f32], want: &[f32], rtol: f32, atol: f32) -> (f32, usize) {
    assert_eq!(got.len(), want.len(), "output sizes differ");
    let mut worst = (f32::NEG_INFINITY, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = if g.is_finite() { (g - w).abs() - (atol + rtol * w.abs()) } else { f32::INFINITY };
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    worst
}

/// A fresh folder for one test under the system temp dir (unique per process and call), removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("peft-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        TempDir(p)
    }
    /// The folder itself.
    pub fn dir(&self) -> &std::path::Path {
        &self.0
    }
    /// `name` inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real SmolLM2-135M-Instruct GGUF file under `PEFT_ASSETS_DIR` (or the repository's `assets`);
/// `None` (the test skips) when it is missing and `PEFT_SKIP_REAL_MODELS=1`, a panic otherwise.
pub fn smollm2() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let assets = std::env::var("PEFT_ASSETS_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("assets"));
    let path = assets.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("PEFT_SKIP_REAL_MODELS").as_deref() == Ok("1") {
        println!("skipped: PEFT_SKIP_REAL_MODELS=1 and no {}", path.display());
        return None;
    }
    panic!("{} is missing: run scripts/fetch-assets.sh", path.display());
}

/// Our kernels sum in a different order from PyTorch: allow this multiple of the manifest's tolerances.
pub const MULTIPLE: f32 = 5.0;

/// Every element of `got` within [`MULTIPLE`] × (atol + rtol·|want|) of `want`.
pub fn assert_within(name: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: sizes differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= MULTIPLE * (atol + rtol * w.abs()), "{name}[{i}]: got {g}, want {w}");
    }
}

/// The gradient of each of `params` (case `name`) against the fixture's `grad.PARAM` tensor in
/// `expected`, with [`assert_within`]; a failure names `{label} PARAM`.
pub fn assert_grads(
    name: &str,
    label: &str,
    grads: &Grads,
    params: &[(String, Tensor)],
    expected: &SafeTensors,
    rtol: f32,
    atol: f32,
) {
    for (pname, t) in params {
        let g = grads.get(t).unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
        let want = expected.tensor_f32(&format!("grad.{pname}")).unwrap();
        assert_within(&format!("{label} {pname}"), &g.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap(), rtol, atol);
    }
}

/// Sequence classification rows (`{"input_ids", "label"}`) that the tiny random BERT learns in a few
/// steps: the first token (whose position the classifier reads) is one of 10..15 for label 0 and one
/// of 50..55 for label 1; the rest are drawn from 20..40 whatever the label; lengths vary (3..=12).
pub fn cls_rows(n: usize, seed: u64) -> Vec<serde_json::Value> {
    let mut rng = engine::random::Rng::new(seed);
    (0..n)
        .map(|i| {
            let label = (i % 2) as i64;
            let len = 3 + rng.next_below(10) as usize;
            let mut ids = vec![10 + 40 * label + rng.next_below(5) as i64];
            ids.extend((0..len - 2).map(|_| 20 + rng.next_below(20) as i64));
            ids.push(3);
            serde_json::json!({"input_ids": ids, "label": label})
        })
        .collect()
}

/// Causal LM rows: a cycle of 6 tokens (10, 11, ..., 15, 10, ...) from a random start, lengths 4..=12.
pub fn lm_rows(n: usize, seed: u64) -> Vec<serde_json::Value> {
    let mut rng = engine::random::Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = 4 + rng.next_below(9) as i64;
            let start = rng.next_below(6) as i64;
            serde_json::json!({"input_ids": (start..start + len).map(|t| 10 + t % 6).collect::<Vec<i64>>()})
        })
        .collect()
}

/// Writes `rows` as JSON lines.
pub fn write_jsonl(path: &std::path::Path, rows: &[serde_json::Value]) {
    std::fs::write(path, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
}
