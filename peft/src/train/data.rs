//! Training data: JSONL files of `{"text": ..., "label": ...}` or pre-tokenized
//! `{"input_ids": [...], "labels": ...}`, tokenized with the model's `tokenizer.json`, truncated,
//! then shuffled, (optionally) bucketed by length, padded on the right and collated into tensors.
use super::config::Task;
use engine::models::tokenizer::Tokenizer;
use engine::random::Rng;
use engine::{Error, Result, Tensor};
use serde_json::Value;
use std::cell::OnceCell;
use std::path::{Path, PathBuf};

/// Label positions the losses skip (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Batches sorted by length together when bucketing.
pub const BUCKET_BATCHES: usize = 50;

/// What an example is trained towards.
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// A class id (sequence classification).
    Class(i64),
    /// One label per token, `IGNORE_INDEX` where nothing is predicted (token classification; causal
    /// LM, where they are the input ids, shifted inside the loss).
    Tokens(Vec<i64>),
}

/// One tokenized example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub input_ids: Vec<i64>,
    pub labels: Labels,
    /// Segment ids (BERT's `token_type_ids`): from a text pair, or given with pre-tokenized ids.
    /// They also tell a P-tuning template where one segment ends and the next begins.
    pub token_type_ids: Option<Vec<i64>>,
}

impl Example {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// How examples are read for a model.
#[derive(Clone, Debug)]
pub struct DataSpec {
    pub task: Task,
    /// Classes (classification tasks).
    pub num_labels: usize,
    pub vocab_size: usize,
    pub max_seq_length: usize,
    /// The model folder, whose `tokenizer.json` is loaded the first time a line has `text`.
    pub model_dir: PathBuf,
}

/// The model's tokenizer, loaded on first use (pre-tokenized data needs none).
pub struct LazyTokenizer {
    dir: PathBuf,
    cell: OnceCell<std::result::Result<Tokenizer, String>>,
}

impl LazyTokenizer {
    pub fn new(dir: &Path) -> Self {
        LazyTokenizer { dir: dir.to_path_buf(), cell: OnceCell::new() }
    }

    fn get(&self) -> std::result::Result<&Tokenizer, String> {
        self.cell
            .get_or_init(|| Tokenizer::from_dir(&self.dir).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| e.clone())
    }
}

/// The id to pad with: the `pad_id` of `tokenizer.json`'s padding section, else the model config's
/// `pad_token_id`, else 0. Padded positions are masked out and never labelled, so the value only
/// has to be a valid id.
pub fn pad_id(model_dir: &Path, config_pad: Option<i64>) -> i64 {
    let from_tokenizer = std::fs::read(model_dir.join("tokenizer.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("padding").and_then(|p| p.get("pad_id")).and_then(Value::as_i64));
    from_tokenizer.or(config_pad).unwrap_or(0)
}

/// Truncates special-token-wrapped ids to `max` tokens the way transformers' `truncation=True`
/// does: the text's tokens are cut, the special tokens around them are kept. `plain` are the ids
/// without special tokens; `full` the ids with them.
fn truncate_keeping_specials(plain: &[i64], full: Vec<i64>, max: usize) -> Vec<i64> {
    if full.len() <= max {
        return full;
    }
    let n = plain.len();
    let at = (0..=full.len().saturating_sub(n)).find(|&k| full[k..k + n] == *plain);
    match at {
        Some(k) if full.len() - n < max => {
            let (prefix, suffix) = (&full[..k], &full[k + n..]);
            let keep = max - prefix.len() - suffix.len();
            let mut out = prefix.to_vec();
            out.extend_from_slice(&plain[..keep]);
            out.extend_from_slice(suffix);
            out
        }
        _ => full[..max].to_vec(),
    }
}

fn as_id_list(v: &Value) -> Option<Vec<i64>> {
    v.as_array()?.iter().map(Value::as_i64).collect()
}

/// Reads one JSONL file. Every error names the file and the line.
pub fn load_jsonl(path: &Path, spec: &DataSpec, tokenizer: &LazyTokenizer) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |detail: String| Error::File { path: format!("{}:{}", path.display(), i + 1), detail };
        let v: Value = serde_json::from_str(line).map_err(|e| at(format!("not valid JSON: {e}")))?;
        out.push(parse_example(&v, spec, tokenizer).map_err(at)?);
    }
    if out.is_empty() {
        return Err(Error::File { path: path.display().to_string(), detail: "no examples (the file is empty)".into() });
    }
    Ok(out)
}

/// One JSONL object as an example; errors are the detail of a message that names the line.
pub fn parse_example(v: &Value, spec: &DataSpec, tokenizer: &LazyTokenizer) -> std::result::Result<Example, String> {
    let obj = v.as_object().ok_or("expected a JSON object")?;
    let max = spec.max_seq_length;
    let mut token_type_ids: Option<Vec<i64>> = None;
    let mut ids = match (obj.get("text"), obj.get("input_ids")) {
        (Some(_), Some(_)) => return Err("give either `text` or `input_ids`, not both".into()),
        (Some(Value::Array(pair)), None) => {
            // A text pair, encoded as the tokenizer encodes pairs (BERT: [CLS] a [SEP] b [SEP]) with
            // its segment ids; cut at `max_seq_length` from the end.
            let texts: Vec<&str> = pair.iter().filter_map(Value::as_str).collect();
            if texts.len() != 2 || pair.len() != 2 {
                return Err("`text` must be a string or a pair of strings [first, second]".into());
            }
            if spec.task != Task::SequenceClassification {
                return Err("a text pair is for sequence_classification".into());
            }
            let tok = tokenizer.get().map_err(|e| format!("`text` needs the model's tokenizer: {e}"))?;
            let (mut ids, mut types) = tok.encode_pair(texts[0], texts[1], true).map_err(|e| e.to_string())?;
            ids.truncate(max);
            types.truncate(max);
            token_type_ids = Some(types);
            ids
        }
        (Some(t), None) => {
            let t = t.as_str().ok_or("`text` must be a string")?;
            if spec.task == Task::TokenClassification {
                return Err("token_classification needs pre-tokenized `input_ids` with a `labels` list \
                            (word-to-token label alignment is not done here)"
                    .into());
            }
            let tok = tokenizer.get().map_err(|e| format!("`text` needs the model's tokenizer: {e}"))?;
            let full = tok.encode(t, true).map_err(|e| e.to_string())?;
            if full.len() > max {
                let plain = tok.encode(t, false).map_err(|e| e.to_string())?;
                truncate_keeping_specials(&plain, full, max)
            } else {
                full
            }
        }
        (None, Some(ids)) => as_id_list(ids).ok_or("`input_ids` must be a list of integers")?,
        (None, None) => return Err("missing `text` (or pre-tokenized `input_ids`)".into()),
    };
    if ids.is_empty() {
        return Err("the example has no tokens".into());
    }
    if let Some(types) = obj.get("token_type_ids") {
        if token_type_ids.is_some() || obj.get("text").is_some() {
            return Err("`token_type_ids` go with pre-tokenized `input_ids` (a text pair has its own)".into());
        }
        let types = as_id_list(types).ok_or("`token_type_ids` must be a list of integers")?;
        if types.len() != ids.len() {
            return Err(format!("`token_type_ids` has {} entries but there are {} tokens", types.len(), ids.len()));
        }
        if let Some(bad) = types.iter().find(|&&x| x < 0) {
            return Err(format!("token type id {bad} is negative"));
        }
        token_type_ids = Some(types);
    }
    if let Some(types) = &mut token_type_ids {
        types.truncate(max);
    }
    if let Some((k, &bad)) = ids.iter().enumerate().find(|(_, &t)| t < 0 || t as usize >= spec.vocab_size) {
        return Err(format!("token id {bad} at position {k} is outside the vocabulary (0..{})", spec.vocab_size));
    }
    let label = match (obj.get("label"), obj.get("labels")) {
        // A causal LM reads only a `labels` list; a class `label` (a classification file) is ignored.
        (_, b) if spec.task == Task::CausalLm => b,
        (Some(_), Some(_)) => return Err("give either `label` or `labels`, not both".into()),
        (a, b) => a.or(b),
    };
    let in_range = |l: i64| l >= 0 && (l as usize) < spec.num_labels;
    let labels = match spec.task {
        Task::SequenceClassification => {
            let l = label.ok_or("missing `label` (a class id)")?;
            let l = l.as_i64().ok_or_else(|| format!("`label` must be an integer class id, got {l}"))?;
            if !in_range(l) {
                return Err(format!(
                    "label {l} is out of range for {} classes (0..{})",
                    spec.num_labels, spec.num_labels
                ));
            }
            ids.truncate(max);
            Labels::Class(l)
        }
        Task::TokenClassification => {
            let l = label.ok_or("missing `labels` (one class id per token, -100 to skip)")?;
            let mut l = as_id_list(l).ok_or("`labels` must be a list of integers (one per token)")?;
            if l.len() != ids.len() {
                return Err(format!("`labels` has {} entries but there are {} tokens", l.len(), ids.len()));
            }
            if let Some((k, &bad)) = l.iter().enumerate().find(|(_, &x)| x != IGNORE_INDEX && !in_range(x)) {
                return Err(format!(
                    "label {bad} at position {k} is out of range for {} classes (0..{}, or -100)",
                    spec.num_labels, spec.num_labels
                ));
            }
            ids.truncate(max);
            l.truncate(max);
            Labels::Tokens(l)
        }
        Task::CausalLm => {
            let l = match label {
                None => {
                    ids.truncate(max);
                    ids.clone()
                }
                Some(l) => {
                    let mut l = as_id_list(l).ok_or("`labels` must be a list of token ids (-100 to skip)")?;
                    if l.len() != ids.len() {
                        return Err(format!("`labels` has {} entries but there are {} tokens", l.len(), ids.len()));
                    }
                    ids.truncate(max);
                    l.truncate(max);
                    if let Some((k, &bad)) = l
                        .iter()
                        .enumerate()
                        .find(|(_, &x)| x != IGNORE_INDEX && (x < 0 || x as usize >= spec.vocab_size))
                    {
                        return Err(format!(
                            "label {bad} at position {k} is not a token id (0..{}) or -100",
                            spec.vocab_size
                        ));
                    }
                    l
                }
            };
            if ids.len() < 2 {
                return Err("a causal LM example needs at least 2 tokens (one to read, one to predict)".into());
            }
            Labels::Tokens(l)
        }
    };
    Ok(Example { input_ids: ids, labels, token_type_ids })
}

/// A padded batch, ready for the model and the loss.
#[derive(Debug)]
pub struct Batch {
    /// i64 `[b, t]`, right-padded.
    pub input_ids: Tensor,
    /// i64 `[b, t]`, 1 on real tokens.
    pub attention_mask: Tensor,
    /// i64 `[b, t]` segment ids when some example has them (0 elsewhere and on padding).
    pub token_type_ids: Option<Tensor>,
    /// i64 `[b]` (sequence classification) or `[b, t]` with -100 on padding.
    pub labels: Tensor,
    /// Class ids / per-token labels as plain numbers, for accuracy.
    pub label_values: Vec<i64>,
    /// Real (non-padding) tokens.
    pub tokens: usize,
    /// `b · t`, padding included.
    pub padded_tokens: usize,
    /// What the loss averages over: examples (sequence classification), labelled tokens (token
    /// classification), predicted positions (causal LM: labelled positions after the first).
    pub items: usize,
}

/// Pads and stacks examples (right padding with `pad_id`, an attention mask, -100 labels there).
pub fn collate(examples: &[&Example], task: Task, pad_id: i64) -> Result<Batch> {
    let b = examples.len();
    if b == 0 {
        return Err(Error::invalid("collate", "an empty batch"));
    }
    let t = examples.iter().map(|e| e.len()).max().unwrap_or(0);
    let mut ids = vec![pad_id; b * t];
    let mut mask = vec![0i64; b * t];
    let mut types = examples.iter().any(|e| e.token_type_ids.is_some()).then(|| vec![0i64; b * t]);
    let mut tokens = 0;
    for (r, e) in examples.iter().enumerate() {
        ids[r * t..r * t + e.len()].copy_from_slice(&e.input_ids);
        mask[r * t..r * t + e.len()].fill(1);
        if let (Some(all), Some(mine)) = (types.as_mut(), e.token_type_ids.as_ref()) {
            all[r * t..r * t + mine.len()].copy_from_slice(mine);
        }
        tokens += e.len();
    }
    let (labels, label_values, items) = match task {
        Task::SequenceClassification => {
            let l: Vec<i64> = examples
                .iter()
                .map(|e| match e.labels {
                    Labels::Class(c) => Ok(c),
                    Labels::Tokens(_) => {
                        Err(Error::invalid("collate", "a per-token label list in a classification batch"))
                    }
                })
                .collect::<Result<_>>()?;
            (Tensor::from_vec(l.clone(), &[b])?, l, b)
        }
        Task::TokenClassification | Task::CausalLm => {
            let mut l = vec![IGNORE_INDEX; b * t];
            let mut items = 0;
            for (r, e) in examples.iter().enumerate() {
                let Labels::Tokens(tl) = &e.labels else {
                    return Err(Error::invalid("collate", "a class label in a per-token batch"));
                };
                l[r * t..r * t + tl.len()].copy_from_slice(tl);
                // Causal LM: the first label of a row is never predicted.
                let from = usize::from(task == Task::CausalLm);
                items += tl.iter().skip(from).filter(|&&x| x != IGNORE_INDEX).count();
            }
            (Tensor::from_vec(l.clone(), &[b, t])?, l, items)
        }
    };
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, &[b, t])?,
        attention_mask: Tensor::from_vec(mask, &[b, t])?,
        token_type_ids: types.map(|v| Tensor::from_vec(v, &[b, t])).transpose()?,
        labels,
        label_values,
        tokens,
        padded_tokens: b * t,
        items,
    })
}

/// Mixes the data seed and the epoch into the seed of that epoch's order.
pub fn epoch_seed(data_seed: u64, epoch: u64) -> u64 {
    let mut x = data_seed ^ 0x5EED_0FDA_7A00_0000;
    x = x.wrapping_add(epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// Fisher–Yates shuffle from `rng`.
fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.next_below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// The micro-batches of one epoch, as example indices: a shuffle drawn from a generator seeded by
/// `(data_seed, epoch)` alone (so a resumed run recomputes the same order), then, with `bucket`,
/// each chunk of [`BUCKET_BATCHES`] batches sorted by length, cut into batches, and the batches of
/// the chunk shuffled again. The last batch may be short.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    data_seed: u64,
    epoch: u64,
    bucket: bool,
) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(epoch_seed(data_seed, epoch));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    shuffle(&mut order, &mut rng);
    if !bucket {
        return order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    }
    let mut out = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for chunk in order.chunks(batch_size * BUCKET_BATCHES) {
        let mut chunk = chunk.to_vec();
        // Stable: ties keep their shuffled order.
        chunk.sort_by_key(|&i| lengths[i]);
        let mut batches: Vec<Vec<usize>> = chunk.chunks(batch_size).map(<[usize]>::to_vec).collect();
        shuffle(&mut batches, &mut rng);
        out.extend(batches);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_special_tokens() {
        // [CLS]=2 a b c d [SEP]=3
        let full = vec![2, 10, 11, 12, 13, 3];
        assert_eq!(truncate_keeping_specials(&[10, 11, 12, 13], full.clone(), 4), vec![2, 10, 11, 3]);
        assert_eq!(truncate_keeping_specials(&[10, 11, 12, 13], full.clone(), 6), full);
        // BOS only
        assert_eq!(truncate_keeping_specials(&[10, 11, 12], vec![1, 10, 11, 12], 3), vec![1, 10, 11]);
        // nothing but specials fits: plain cut
        assert_eq!(truncate_keeping_specials(&[10, 11], vec![2, 10, 11, 3], 2), vec![2, 10]);
    }

    #[test]
    fn epochs_are_permutations_and_reproducible() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 61 + 1).collect();
        for bucket in [false, true] {
            let a = epoch_batches(&lengths, 8, 7, 0, bucket);
            let b = epoch_batches(&lengths, 8, 7, 0, bucket);
            let c = epoch_batches(&lengths, 8, 7, 1, bucket);
            assert_eq!(a, b);
            assert_ne!(a, c);
            let mut all: Vec<usize> = a.concat();
            all.sort();
            assert_eq!(all, (0..1000).collect::<Vec<_>>());
            assert_eq!(a.len(), 125);
        }
    }
}
