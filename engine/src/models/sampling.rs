//! Choosing the next token from a row of logits, and the generation loop built on it.
//!
//! Greedy decoding takes the first maximum (as `torch.argmax`). Sampling follows transformers'
//! logits warpers in their order: temperature, then top-k (`TopKLogitsWarper`: every token whose
//! logit is below the k-th largest is removed, so ties with the k-th are kept), then top-p
//! (`TopPLogitsWarper`: sort ascending, remove the tokens whose cumulative probability is
//! `<= 1 - top_p`, always keep the most likely one); the survivors are renormalized by a softmax and
//! one is drawn from a seeded [`Rng`].
use crate::error::{Error, Result};
use crate::models::{ForwardInput, KvCache, Model, ModelConfig};
use crate::random::Rng;
use crate::tensor::Tensor;
use std::path::Path;

/// How to pick the next token. Greedy when `temperature` is `None` or `0`; `top_k` and `top_p` only
/// apply when sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingConfig {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig::greedy()
    }
}

impl SamplingConfig {
    /// Greedy decoding (argmax).
    pub fn greedy() -> Self {
        SamplingConfig { temperature: None, top_k: None, top_p: None, seed: 0 }
    }

    /// Sampling at `temperature` with no top-k / top-p filtering.
    pub fn sample(temperature: f32, seed: u64) -> Self {
        SamplingConfig { temperature: Some(temperature), top_k: None, top_p: None, seed }
    }

    /// True when the next token is the argmax (no temperature, or temperature 0).
    pub fn is_greedy(&self) -> bool {
        matches!(self.temperature, None | Some(0.0))
    }

    /// Checks every value: temperature finite and `>= 0`, `top_k >= 1`, `top_p` in `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = self.temperature {
            if !t.is_finite() || t < 0.0 {
                return Err(Error::invalid("sampling", format!("temperature must be a finite number >= 0, got {t}")));
            }
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid("sampling", "top_k must be at least 1, got 0"));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid("sampling", format!("top_p must be in (0, 1], got {p}")));
            }
        }
        Ok(())
    }
}

fn check_logits(logits: &[f32]) -> Result<()> {
    if logits.is_empty() {
        return Err(Error::invalid("sampling", "the logits row is empty"));
    }
    if let Some(i) = logits.iter().position(|v| v.is_nan()) {
        return Err(Error::invalid("sampling", format!("logit {i} is NaN")));
    }
    Ok(())
}

/// Index of the largest logit; the first one on ties. Errors on an empty row or a NaN.
pub fn argmax(logits: &[f32]) -> Result<usize> {
    check_logits(logits)?;
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate().skip(1) {
        if v > logits[best] {
            best = i;
        }
    }
    Ok(best)
}

/// The distribution sampling draws from: logits divided by the temperature, filtered by top-k and
/// top-p, renormalized. Removed tokens get probability exactly 0. For a greedy config this is the
/// one-hot vector of [`argmax`].
pub fn probabilities(logits: &[f32], cfg: &SamplingConfig) -> Result<Vec<f64>> {
    cfg.validate()?;
    check_logits(logits)?;
    let n = logits.len();
    if cfg.is_greedy() {
        let mut p = vec![0.0; n];
        p[argmax(logits)?] = 1.0;
        return Ok(p);
    }
    let t = cfg.temperature.unwrap_or(1.0) as f64;
    let mut scores: Vec<f64> = logits.iter().map(|&v| v as f64 / t).collect();
    // Top-k: remove everything strictly below the k-th largest score.
    if let Some(k) = cfg.top_k {
        let k = k.min(n);
        if k < n {
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            for s in scores.iter_mut() {
                if *s < kth {
                    *s = f64::NEG_INFINITY;
                }
            }
        }
    }
    // Top-p: ascending order, remove while the cumulative probability stays <= 1 - p; the last
    // (most likely) token is always kept. transformers skips the warper at top_p = 1.
    if let Some(p) = cfg.top_p.filter(|&p| p < 1.0) {
        let probs = softmax(&scores)?;
        let mut order: Vec<usize> = (0..n).collect();
        // Ascending by score; equal scores keep index order, so the lower index counts as the more
        // likely one and survives last.
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)));
        let mut cum = 0.0;
        for &i in &order[..n - 1] {
            cum += probs[i];
            if cum <= 1.0 - p as f64 {
                scores[i] = f64::NEG_INFINITY;
            } else {
                break;
            }
        }
    }
    softmax(&scores)
}

fn softmax(scores: &[f64]) -> Result<Vec<f64>> {
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return Err(Error::invalid("sampling", "every logit is -inf: no token can be chosen"));
    }
    if max == f64::INFINITY {
        // +inf logits: uniform over them (the limit of the softmax).
        let count = scores.iter().filter(|&&s| s == f64::INFINITY).count() as f64;
        return Ok(scores.iter().map(|&s| if s == f64::INFINITY { 1.0 / count } else { 0.0 }).collect());
    }
    let exps: Vec<f64> = scores.iter().map(|&s| (s - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    Ok(exps.into_iter().map(|e| e / total).collect())
}

/// Picks tokens one after another with its own seeded random stream.
pub struct Sampler {
    cfg: SamplingConfig,
    rng: Rng,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Sampler {
    /// Validates `cfg` and seeds the random stream with `cfg.seed`.
    pub fn new(cfg: SamplingConfig) -> Result<Sampler> {
        cfg.validate()?;
        Ok(Sampler { cfg, rng: Rng::new(cfg.seed) })
    }

    pub fn config(&self) -> &SamplingConfig {
        &self.cfg
    }

    /// The next token from a logits row `[vocab]`.
    pub fn next_token(&mut self, logits: &[f32]) -> Result<usize> {
        if self.cfg.is_greedy() {
            return argmax(logits);
        }
        let probs = probabilities(logits, &self.cfg)?;
        // Uniform in [0, 1) with 53 random bits, then the inverse of the cumulative distribution.
        let u = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let mut cum = 0.0;
        let mut last_kept = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                cum += p;
                last_kept = i;
                if u < cum {
                    return Ok(i);
                }
            }
        }
        // Rounding left the total a hair under 1 and u above it.
        Ok(last_kept)
    }

    /// The next token from a logits tensor of shape `[vocab]` or `[1, vocab]`.
    pub fn next_token_tensor(&mut self, logits: &Tensor) -> Result<usize> {
        let row = logits_row(logits)?;
        self.next_token(&row)
    }
}

fn logits_row(logits: &Tensor) -> Result<Vec<f32>> {
    match logits.shape() {
        [_] | [1, _] => logits.to_vec_f32(),
        s => Err(Error::shape("sampling", format!("expected logits of shape [vocab] or [1, vocab], got {s:?}"))),
    }
}

/// Greedy choice from a logits tensor `[vocab]` or `[1, vocab]`.
pub fn argmax_tensor(logits: &Tensor) -> Result<usize> {
    argmax(&logits_row(logits)?)
}

/// Continues `prompt_ids` with a causal language model and returns only the new tokens (an EOS token
/// that ended generation is included, as transformers includes it). Stops at any id in `eos` or
/// after `max_new_tokens`. With `use_cache` the prompt runs once into a [`KvCache`] and each new
/// token is fed alone; without, the whole sequence is recomputed at every step (same tokens, slower).
pub fn generate(
    model: &dyn Model,
    prompt_ids: &[i64],
    max_new_tokens: usize,
    eos: &[i64],
    cfg: &SamplingConfig,
    use_cache: bool,
) -> Result<Vec<i64>> {
    let _guard = crate::no_grad();
    let mut sampler = Sampler::new(*cfg)?;
    let config = model.config();
    if !config.architecture.is_causal_lm() {
        return Err(Error::invalid(
            "generate",
            format!(
                "{} is not a causal language model: generation needs GPT2LMHeadModel or LlamaForCausalLM",
                config.architecture.name()
            ),
        ));
    }
    if prompt_ids.is_empty() {
        return Err(Error::invalid("generate", "the prompt is empty: give at least one token id"));
    }
    let vocab = config.vocab_size;
    if let Some(&bad) = prompt_ids.iter().find(|&&id| id < 0 || id as u64 >= vocab as u64) {
        return Err(Error::invalid(
            "generate",
            format!("prompt token id {bad} is outside the vocabulary (size {vocab})"),
        ));
    }
    let total = prompt_ids.len() + max_new_tokens;
    if total > config.max_position_embeddings {
        return Err(Error::invalid(
            "generate",
            format!(
                "the prompt ({} tokens) plus {max_new_tokens} new tokens exceeds the model's {} positions",
                prompt_ids.len(),
                config.max_position_embeddings
            ),
        ));
    }
    let mut seq: Vec<i64> = prompt_ids.to_vec();
    let mut new_tokens = Vec::with_capacity(max_new_tokens);
    let mut cache = use_cache.then(|| KvCache::new(config.num_layers));
    // Ids fed at the next step: the whole prompt first; then one token (cache) or everything.
    let mut feed: Vec<i64> = prompt_ids.to_vec();
    while new_tokens.len() < max_new_tokens {
        let ids = Tensor::from_vec(feed.clone(), &[1, feed.len()])?;
        let input = ForwardInput { input_ids: Some(&ids), ..Default::default() };
        let out = model.forward(&input, cache.as_mut())?;
        let logits = out
            .logits
            .as_ref()
            .ok_or_else(|| Error::invalid("generate", "the model returned no logits (is it a language model?)"))?;
        let (seq_len, n_vocab) = match logits.shape() {
            &[1, s, v] if s == feed.len() && v > 0 => (s, v),
            s => {
                return Err(Error::shape(
                    "generate",
                    format!("expected logits of shape [1, {}, vocab], got {s:?}", feed.len()),
                ))
            }
        };
        let last = logits.narrow(1, seq_len - 1, 1)?.reshape(&[n_vocab])?;
        let token = sampler.next_token(&last.to_vec_f32()?)? as i64;
        new_tokens.push(token);
        seq.push(token);
        if eos.contains(&token) {
            break;
        }
        feed = if cache.is_some() { vec![token] } else { seq.clone() };
    }
    Ok(new_tokens)
}

/// The ids generation stops at for a model folder: `eos_token_id` (an id or a list of ids) of its
/// `generation_config.json` when that file sets one, as transformers' `generate` reads it, else
/// `config.json`'s (`config.eos_token_ids`). Empty when neither names one.
pub fn eos_token_ids(model_dir: &Path, config: &ModelConfig) -> Result<Vec<i64>> {
    let path = model_dir.join("generation_config.json");
    if path.is_file() {
        let bad = |detail: String| Error::File { path: path.display().to_string(), detail };
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        match json.get("eos_token_id") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(ids)) => {
                return ids
                    .iter()
                    .map(|v| v.as_i64().ok_or_else(|| bad(format!("eos_token_id entries must be integers, got {v}"))))
                    .collect();
            }
            Some(v) => {
                return v
                    .as_i64()
                    .map(|id| vec![id])
                    .ok_or_else(|| bad(format!("eos_token_id must be an integer or a list of integers, got {v}")))
            }
        }
    }
    Ok(config.eos_token_ids.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelConfig, ModelOutput};
    use crate::nn::HookedLinear;

    fn sampled(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> SamplingConfig {
        SamplingConfig { temperature: Some(temperature), top_k, top_p, seed: 1 }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]).unwrap(), 1);
        assert_eq!(argmax(&[5.0, 5.0]).unwrap(), 0);
        assert_eq!(argmax(&[-1.0]).unwrap(), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY, -3.0]).unwrap(), 2);
        let mut s = Sampler::new(SamplingConfig::greedy()).unwrap();
        assert_eq!(s.next_token(&[0.0, 2.0, 2.0]).unwrap(), 1);
        // Temperature 0 is greedy too, whatever top-k / top-p say.
        let mut s =
            Sampler::new(SamplingConfig { temperature: Some(0.0), top_k: Some(3), top_p: Some(0.5), seed: 9 }).unwrap();
        assert_eq!(s.next_token(&[0.0, 2.0, 2.0]).unwrap(), 1);
        let t = Tensor::from_vec(vec![0.5f32, 4.0, -1.0], &[1, 3]).unwrap();
        assert_eq!(argmax_tensor(&t).unwrap(), 1);
        assert!(argmax(&[]).is_err());
        assert!(argmax(&[0.0, f32::NAN]).is_err());
        let bad = Tensor::from_vec(vec![0.0f32; 4], &[2, 2]).unwrap();
        assert!(argmax_tensor(&bad).is_err());
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut rng = Rng::new(3);
        let mut s = Sampler::new(sampled(1.5, Some(1), None)).unwrap();
        for _ in 0..200 {
            let logits: Vec<f32> = (0..17).map(|_| rng.next_normal() * 3.0).collect();
            assert_eq!(s.next_token(&logits).unwrap(), argmax(&logits).unwrap());
        }
        // Ties with the k-th value are all kept, as TopKLogitsWarper keeps them.
        let p = probabilities(&[1.0, 3.0, 3.0, 0.0], &sampled(1.0, Some(1), None)).unwrap();
        assert_eq!(p, vec![0.0, 0.5, 0.5, 0.0]);
    }

    #[test]
    fn top_k_keeps_the_k_largest() {
        let p = probabilities(&[0.0, 2.0, 1.0, 3.0, -1.0], &sampled(1.0, Some(2), None)).unwrap();
        let (e2, e3) = (2f64.exp(), 3f64.exp());
        let want = [0.0, e2 / (e2 + e3), 0.0, e3 / (e2 + e3), 0.0];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
        // k larger than the vocabulary keeps everything.
        let p = probabilities(&[0.0, 0.0], &sampled(1.0, Some(10), None)).unwrap();
        assert_eq!(p, vec![0.5, 0.5]);
    }

    #[test]
    fn top_p_keeps_the_expected_set() {
        // Probabilities 0.5, 0.25, 0.15, 0.1 (as logs, so softmax gives them back).
        let probs = [0.1f64, 0.5, 0.15, 0.25];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
        let kept = |p: f32| -> Vec<usize> {
            let d = probabilities(&logits, &sampled(1.0, None, Some(p))).unwrap();
            let mut k: Vec<usize> = (0..4).filter(|&i| d[i] > 0.0).collect();
            k.sort();
            k
        };
        // Ascending cumulative: 0.1, 0.25, 0.5, 1.0; removed while <= 1 - p.
        assert_eq!(kept(0.3), vec![1]); // 1 - p = 0.7: remove 0.1, 0.15, 0.25 -> keep {0.5}
        assert_eq!(kept(0.45), vec![1]); // 1 - p = 0.55: cumulative 0.5 of the three others goes
        assert_eq!(kept(0.6), vec![1, 3]); // 1 - p = 0.4: remove 0.1, 0.15
        assert_eq!(kept(0.8), vec![1, 2, 3]); // 1 - p = 0.2: remove 0.1
        assert_eq!(kept(0.95), vec![0, 1, 2, 3]);
        assert_eq!(kept(1.0), vec![0, 1, 2, 3]);
        // Always at least one token, however small p is.
        assert_eq!(kept(1e-6), vec![1]);
        // Renormalized over the kept set.
        let d = probabilities(&logits, &sampled(1.0, None, Some(0.6))).unwrap();
        assert!((d[1] - 0.5 / 0.75).abs() < 1e-6 && (d[3] - 0.25 / 0.75).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn warpers_apply_temperature_then_top_k_then_top_p() {
        // Temperature 0.5 squares the probabilities (then renormalizes): 0.5, 0.3, 0.2 -> 0.25, 0.09, 0.04.
        let logits: Vec<f32> = [0.5f64, 0.3, 0.2].iter().map(|p| p.ln() as f32).collect();
        let d = probabilities(&logits, &sampled(0.5, None, None)).unwrap();
        let z = 0.25 + 0.09 + 0.04;
        for (a, b) in d.iter().zip([0.25 / z, 0.09 / z, 0.04 / z]) {
            assert!((a - b).abs() < 1e-6);
        }
        // At temperature 1, top_p 0.6 keeps {0.5, 0.3}; after temperature 0.5 the top token alone
        // holds 0.66 >= 0.6, so only it survives: top-p sees the tempered distribution.
        let d1 = probabilities(&logits, &sampled(1.0, None, Some(0.6))).unwrap();
        assert!(d1[0] > 0.0 && d1[1] > 0.0 && d1[2] == 0.0);
        let d2 = probabilities(&logits, &sampled(0.5, None, Some(0.6))).unwrap();
        assert_eq!(d2, vec![1.0, 0.0, 0.0]);
        // Top-k before top-p: top_k 2 leaves {0.5, 0.3} renormalized to 0.625, 0.375; top_p 0.6
        // then keeps only the first (0.625 >= 0.6). Without top-k it would keep two.
        let d3 = probabilities(&logits, &sampled(1.0, Some(2), Some(0.6))).unwrap();
        assert_eq!(d3, vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn draws_follow_the_renormalized_distribution() {
        let logits = [1.0f32, 0.2, -0.5, 2.0, 0.7, -3.0, 1.4];
        for cfg in [sampled(1.0, None, None), sampled(0.7, Some(4), None), sampled(1.3, Some(5), Some(0.8))] {
            let want = probabilities(&logits, &cfg).unwrap();
            let mut s = Sampler::new(SamplingConfig { seed: 12345, ..cfg }).unwrap();
            let n = 60_000;
            let mut counts = vec![0usize; logits.len()];
            for _ in 0..n {
                counts[s.next_token(&logits).unwrap()] += 1;
            }
            let mut chi2 = 0.0;
            let mut dof = 0;
            for (c, p) in counts.iter().zip(&want) {
                if *p == 0.0 {
                    assert_eq!(*c, 0, "a filtered token was drawn ({cfg:?})");
                } else {
                    let e = p * n as f64;
                    chi2 += (*c as f64 - e).powi(2) / e;
                    dof += 1;
                }
            }
            // With at most 6 degrees of freedom, chi-square exceeds 30 with probability < 1e-4.
            assert!(chi2 < 30.0, "chi2 {chi2} over {dof} cells: counts {counts:?}, expected {want:?} ({cfg:?})");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits = [0.3f32, 0.1, 0.2, 0.25];
        let draw = |seed| {
            let mut s = Sampler::new(SamplingConfig::sample(1.0, seed)).unwrap();
            (0..50).map(|_| s.next_token(&logits).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn invalid_values_are_errors() {
        let bad = [
            SamplingConfig { top_p: Some(0.0), ..sampled(1.0, None, None) },
            SamplingConfig { top_p: Some(1.5), ..sampled(1.0, None, None) },
            SamplingConfig { top_p: Some(-0.1), ..sampled(1.0, None, None) },
            SamplingConfig { top_p: Some(f32::NAN), ..sampled(1.0, None, None) },
            sampled(-0.5, None, None),
            sampled(f32::NAN, None, None),
            sampled(f32::INFINITY, None, None),
            sampled(1.0, Some(0), None),
            // Invalid filters are rejected even for a greedy config.
            SamplingConfig { top_k: Some(0), ..SamplingConfig::greedy() },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
            assert!(Sampler::new(cfg).is_err(), "{cfg:?}");
            assert!(probabilities(&[0.0, 1.0], &cfg).is_err(), "{cfg:?}");
        }
        let err = Sampler::new(sampled(1.0, None, Some(2.0))).unwrap_err().to_string();
        assert!(err.contains("top_p"), "{err}");
        assert!(probabilities(&[f32::NEG_INFINITY; 3], &sampled(1.0, None, None)).is_err());
    }

    /// A causal "language model" whose logits at a position depend on every token so far: the
    /// next token is (sum of ids so far * 7 + position) mod vocab, with a margin. With a cache it keeps
    /// the running sum in `KvCache` as a one-element key, so cached and uncached runs must agree.
    struct ToyLm {
        config: ModelConfig,
    }

    impl ToyLm {
        fn new(eos: i64) -> ToyLm {
            let raw = serde_json::json!({
                "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 11,
                "n_embd": 4, "n_layer": 1, "n_head": 1, "n_positions": 40, "eos_token_id": eos
            });
            ToyLm { config: ModelConfig::from_json(raw).unwrap() }
        }
    }

    impl Model for ToyLm {
        fn config(&self) -> &ModelConfig {
            &self.config
        }
        fn forward(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Result<ModelOutput> {
            let ids = input.input_ids.unwrap().to_vec::<i64>()?;
            let v = self.config.vocab_size;
            let (mut sum, start) = match &cache {
                Some(c) if !c.is_empty() => {
                    let kv = c.layers[0].as_ref().unwrap();
                    (kv.value.to_scalar()? as i64, c.len())
                }
                _ => (0, 0),
            };
            let mut logits = vec![0f32; ids.len() * v];
            for (j, &id) in ids.iter().enumerate() {
                sum += id;
                let next = ((sum * 7 + (start + j) as i64) % v as i64) as usize;
                for t in 0..v {
                    logits[j * v + t] = if t == next { 5.0 } else { (t as f32) * 0.1 };
                }
            }
            if let Some(c) = cache {
                let len = start + ids.len();
                c.layers[0] = Some(crate::models::KvPrefix {
                    key: Tensor::zeros(&[1, 1, len, 1], crate::DType::F32),
                    value: Tensor::scalar(sum as f32),
                });
            }
            let logits = Tensor::from_vec(logits, &[1, ids.len(), v])?;
            Ok(ModelOutput { hidden: logits.clone(), logits: Some(logits) })
        }
        fn embed_tokens(&self, _ids: &Tensor) -> Result<Tensor> {
            Err(crate::Error::invalid("ToyLm", "has no embeddings"))
        }
        fn named_parameters(&self) -> Vec<(String, Tensor)> {
            Vec::new()
        }
        fn visit_linears(&mut self, _f: &mut dyn FnMut(&str, &mut HookedLinear) -> Result<()>) -> Result<()> {
            Ok(())
        }
        fn visit_parameters(&mut self, _f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
            Ok(())
        }
        fn head_paths(&self) -> Vec<String> {
            Vec::new()
        }
    }

    fn toy_reference(prompt: &[i64], n: usize, eos: &[i64]) -> Vec<i64> {
        let mut seq = prompt.to_vec();
        let mut out = Vec::new();
        while out.len() < n {
            let sum: i64 = seq.iter().sum();
            let next = (sum * 7 + seq.len() as i64 - 1) % 11;
            out.push(next);
            seq.push(next);
            if eos.contains(&next) {
                break;
            }
        }
        out
    }

    #[test]
    fn generate_with_and_without_cache_agree() {
        let model = ToyLm::new(-1);
        let g = SamplingConfig::greedy();
        for prompt in [vec![3i64], vec![1, 2, 3, 4], vec![10, 0]] {
            let want = toy_reference(&prompt, 12, &[]);
            assert_eq!(generate(&model, &prompt, 12, &[], &g, true).unwrap(), want);
            assert_eq!(generate(&model, &prompt, 12, &[], &g, false).unwrap(), want);
        }
        assert!(generate(&model, &[1, 2], 0, &[], &g, true).unwrap().is_empty());
        // Sampling with a seed is reproducible and agrees across the two paths too.
        let s = SamplingConfig { temperature: Some(2.0), top_k: Some(6), top_p: Some(0.9), seed: 4 };
        let a = generate(&model, &[5], 20, &[], &s, true).unwrap();
        let b = generate(&model, &[5], 20, &[], &s, false).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 20);
    }

    #[test]
    fn generate_stops_at_eos() {
        let model = ToyLm::new(-1);
        let g = SamplingConfig::greedy();
        let full = toy_reference(&[1, 2], 20, &[]);
        let eos = full[4];
        let first = full.iter().position(|&t| t == eos).unwrap();
        for cache in [true, false] {
            let out = generate(&model, &[1, 2], 20, &[99, eos], &g, cache).unwrap();
            assert_eq!(out, full[..=first].to_vec());
        }
    }

    #[test]
    fn eos_ids_prefer_the_generation_config() {
        let dir = std::env::temp_dir().join(format!("engine-sampling-eos-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = ToyLm::new(7).config.clone();
        assert_eq!(eos_token_ids(&dir, &config).unwrap(), vec![7]);
        let gen = dir.join("generation_config.json");
        for (text, want) in
            [("{\"eos_token_id\": [2, 5]}", vec![2i64, 5]), ("{\"eos_token_id\": 3}", vec![3]), ("{}", vec![7])]
        {
            std::fs::write(&gen, text).unwrap();
            assert_eq!(eos_token_ids(&dir, &config).unwrap(), want, "{text}");
        }
        std::fs::write(&gen, "{\"eos_token_id\": \"x\"}").unwrap();
        let e = eos_token_ids(&dir, &config).unwrap_err().to_string();
        assert!(e.contains("generation_config.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generate_rejects_bad_prompts() {
        let model = ToyLm::new(-1);
        let g = SamplingConfig::greedy();
        let e = generate(&model, &[], 3, &[], &g, true).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = generate(&model, &[11], 3, &[], &g, true).unwrap_err().to_string();
        assert!(e.contains("11") && e.contains("vocabulary"), "{e}");
        let e = generate(&model, &[1; 30], 20, &[], &g, true).unwrap_err().to_string();
        assert!(e.contains("positions"), "{e}");
        let e = generate(&model, &[1], 3, &[], &sampled(1.0, Some(0), None), true).unwrap_err().to_string();
        assert!(e.contains("top_k"), "{e}");
    }
}
