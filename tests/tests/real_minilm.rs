//! The real all-MiniLM-L6-v2 checkpoint (sentence-transformers, `BertModel`, 6 layers, hidden 384),
//! fetched by `scripts/fetch-assets.sh` into `assets/all-MiniLM-L6-v2` (or `$PEFT_ASSETS_DIR`).
//!
//! A missing model folder is a failure, not a skip: set `PEFT_SKIP_REAL_MODELS=1` to skip on purpose.
//!
//! Reference figures: the cosine similarity 0.7553 and the tokenization come from
//! `/work/shared/ASSETS.md`; the first embedding components come from the same checkpoint run
//! through transformers 4.57.6 (`AutoModel`, padded batch, mean pooling, L2 norm): 0.755337 and the
//! values below, which a float64 NumPy re-implementation of BERT also reproduces to 1e-7.
use engine::models::tokenizer::Tokenizer;
use engine::models::{self, ForwardInput, Model};
use engine::Tensor;
use std::path::PathBuf;

const HIDDEN: usize = 384;
/// First components of the normalised embeddings of "A man is eating food." and "A man is eating a
/// piece of bread." (transformers reference, see the module docs).
const E1_HEAD: [f32; 4] = [0.03324157, 0.00440606, -0.00627694, 0.04837871];
const E2_HEAD: [f32; 4] = [0.05251841, 0.05524131, -0.01118822, -0.00574544];

/// The model folder, `None` when real-model tests are switched off; panics when it is missing.
fn minilm_dir() -> Option<PathBuf> {
    if std::env::var("PEFT_SKIP_REAL_MODELS").as_deref() == Ok("1") {
        eprintln!("real_minilm: skipped (PEFT_SKIP_REAL_MODELS=1)");
        return None;
    }
    let assets = match std::env::var_os("PEFT_ASSETS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("assets"),
    };
    let dir = assets.join("all-MiniLM-L6-v2");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"] {
        assert!(
            dir.join(f).is_file(),
            "real_minilm: {} is missing — run `scripts/fetch-assets.sh` (or set PEFT_ASSETS_DIR to the \
             folder holding all-MiniLM-L6-v2/, or PEFT_SKIP_REAL_MODELS=1 to skip the real-model tests)",
            dir.join(f).display()
        );
    }
    Some(dir)
}

fn load(dir: &PathBuf) -> Box<dyn Model> {
    models::load(dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

fn encode(tok: &Tokenizer, text: &str) -> Vec<i64> {
    tok.encode(text, true).unwrap_or_else(|e| panic!("encoding {text:?}: {e}"))
}

/// Mean over the tokens whose mask is nonzero of `hidden` `[batch, seq, HIDDEN]`, L2-normalised.
fn mean_pool_normalize(hidden: &Tensor, mask: &[Vec<i64>]) -> Vec<Vec<f32>> {
    let (batch, seq) = (mask.len(), mask[0].len());
    assert_eq!(hidden.shape(), &[batch, seq, HIDDEN], "last_hidden_state shape");
    let h = hidden.to_vec_f32().unwrap();
    (0..batch)
        .map(|b| {
            let mut sum = vec![0f64; HIDDEN];
            let mut count = 0f64;
            for t in 0..seq {
                let m = mask[b][t] as f64;
                if m == 0.0 {
                    continue;
                }
                count += m;
                let row = &h[(b * seq + t) * HIDDEN..(b * seq + t + 1) * HIDDEN];
                for (s, &x) in sum.iter_mut().zip(row) {
                    *s += m * x as f64;
                }
            }
            let mean: Vec<f64> = sum.iter().map(|s| s / count.max(1e-9)).collect();
            let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            mean.iter().map(|x| (x / norm) as f32).collect()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Embeds each sentence on its own: batch of 1, no attention mask.
fn embed_alone(model: &dyn Model, ids: &[i64]) -> Vec<f32> {
    let input_ids = Tensor::from_vec(ids.to_vec(), &[1, ids.len()]).unwrap();
    let out = engine::no_grad_scope(|| {
        model.forward(&ForwardInput { input_ids: Some(&input_ids), ..Default::default() }, None)
    })
    .unwrap();
    assert!(out.logits.is_none(), "a bare BertModel has no logits");
    mean_pool_normalize(&out.hidden, &[vec![1; ids.len()]]).remove(0)
}

#[test]
fn tokenizes_like_bert_uncased() {
    let Some(dir) = minilm_dir() else { return };
    let tok = Tokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("tokenizer of {}: {e}", dir.display()));
    let pieces = ["[CLS]", "a", "man", "is", "riding", "a", "horse", ".", "[SEP]"];
    let expected: Vec<i64> =
        pieces.iter().map(|p| tok.token_to_id(p).unwrap_or_else(|| panic!("{p:?} not in the vocabulary"))).collect();
    // The ids of these pieces in the model's vocab.txt (line numbers, from 0).
    assert_eq!(expected, [101, 1037, 2158, 2003, 5559, 1037, 3586, 1012, 102]);
    let ids = encode(&tok, "A man is riding a horse.");
    assert_eq!(ids, expected, "tokens of \"A man is riding a horse.\" (padding and truncation must be off)");
    let text = tok.decode(&ids, true).unwrap();
    assert_eq!(text, "a man is riding a horse.", "decoding {ids:?} without special tokens");
}

#[test]
fn sentence_embeddings_match_reference_alone_and_padded() {
    let Some(dir) = minilm_dir() else { return };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let model = load(&dir);
    let (s1, s2) = ("A man is eating food.", "A man is eating a piece of bread.");
    let (ids1, ids2) = (encode(&tok, s1), encode(&tok, s2));
    assert_eq!(ids1.len(), 8, "{s1:?} -> {ids1:?}");
    assert_eq!(ids2.len(), 11, "{s2:?} -> {ids2:?}");

    // Each sentence on its own.
    let e1 = embed_alone(model.as_ref(), &ids1);
    let e2 = embed_alone(model.as_ref(), &ids2);
    let cos = cosine(&e1, &e2);
    assert!((cos - 0.7553).abs() <= 5e-4, "cosine similarity {cos:.6}, expected 0.7553 ± 5e-4");
    // First components of each embedding (transformers reference, see the module docs).
    for (e, want) in [(&e1, E1_HEAD), (&e2, E2_HEAD)] {
        for (i, (&got, want)) in e.iter().zip(want).enumerate() {
            assert!((got - want).abs() <= 1e-4, "embedding component {i}: got {got}, reference {want}");
        }
    }

    // Both in one right-padded batch with an attention mask: padding must change nothing.
    let seq = ids1.len().max(ids2.len());
    let pad = tok.token_to_id("[PAD]").expect("[PAD] in the vocabulary");
    let mut ids = Vec::with_capacity(2 * seq);
    let mut mask = Vec::new();
    for row in [&ids1, &ids2] {
        ids.extend(row.iter().copied().chain(std::iter::repeat(pad)).take(seq));
        mask.push((0..seq).map(|t| i64::from(t < row.len())).collect::<Vec<i64>>());
    }
    let input_ids = Tensor::from_vec(ids, &[2, seq]).unwrap();
    let attention_mask = Tensor::from_vec(mask.concat(), &[2, seq]).unwrap();
    let out = engine::no_grad_scope(|| {
        model.forward(
            &ForwardInput { input_ids: Some(&input_ids), attention_mask: Some(&attention_mask), ..Default::default() },
            None,
        )
    })
    .unwrap();
    let batch = mean_pool_normalize(&out.hidden, &mask);
    let (d1, d2) = (max_abs_diff(&batch[0], &e1), max_abs_diff(&batch[1], &e2));
    assert!(d1 <= 1e-5 && d2 <= 1e-5, "padded batch differs from the separate runs by {d1:e} and {d2:e} (max 1e-5)");
    let cos_batch = cosine(&batch[0], &batch[1]);
    assert!((cos_batch - 0.7553).abs() <= 5e-4, "batched cosine similarity {cos_batch:.6}");
}

#[test]
fn loading_keeps_f32_weights_memory_mapped() {
    let Some(dir) = minilm_dir() else { return };
    let model = load(&dir);
    let params = model.named_parameters();
    let (name, word) = params
        .iter()
        .find(|(n, _)| n.ends_with("word_embeddings.weight"))
        .unwrap_or_else(|| panic!("no word_embeddings.weight among {} parameters", params.len()));
    assert_eq!(word.shape(), &[30522, HIDDEN], "{name}");
    assert!(word.is_memory_mapped(), "{name} was copied at load; f32 weights should stay memory-mapped");
    let copied: Vec<&str> = params
        .iter()
        .filter(|(_, t)| t.dtype() == engine::DType::F32 && !t.is_memory_mapped())
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(copied.is_empty(), "f32 parameters copied at load instead of memory-mapped: {copied:?}");
}
