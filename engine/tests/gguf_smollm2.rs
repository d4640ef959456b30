//! The real SmolLM2-135M-Instruct GGUF file (Q4_1, Q8_0 embeddings) against reference values
//! computed independently (issue 8: a float32 numpy forward of the dequantized weights with the
//! Hugging Face tokenizer): tokenization, the next-token logits and a greedy continuation.
//! Needs `scripts/fetch-assets.sh` (CI runs it first); `PEFT_SKIP_REAL_MODELS=1` skips it.
use engine::io::gguf::llama::load_llama_packed;
use engine::io::gguf::GgufFile;
use engine::models::sampling::{generate, SamplingConfig};
use engine::models::tokenizer::Tokenizer;
use engine::models::{load, Architecture, ForwardInput, Model, ModelConfig};
use engine::Tensor;
use std::path::PathBuf;

const PROMPT: &str = "The capital of France is";

fn smollm2() -> Option<PathBuf> {
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

#[test]
fn metadata_and_config_are_the_published_ones() {
    let Some(path) = smollm2() else { return };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.tensors().count(), 272);
    let c = ModelConfig::from_dir(&path).unwrap();
    assert_eq!(c.architecture, Architecture::LlamaForCausalLM);
    assert_eq!(
        (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size, c.vocab_size),
        (30, 576, 9, 3, 64, 1536, 49152)
    );
    assert_eq!((c.rope_theta, c.norm_eps, c.tie_word_embeddings), (100000.0, 1e-5, true));
    assert_eq!((c.bos_token_id, c.eos_token_ids.as_slice()), (Some(1), &[2][..]));
    assert!(f.chat_template().unwrap().contains("<|im_start|>"));
}

#[test]
fn tokenizer_matches_the_reference() {
    let Some(path) = smollm2() else { return };
    let tok = Tokenizer::from_dir(&path).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    // add_bos_token is false: adding special tokens adds nothing.
    assert_eq!(tok.encode(PROMPT, true).unwrap(), vec![504, 3575, 282, 4649, 314]);
    let fox = "The quick brown fox jumps over the lazy dog.";
    let ids = tok.encode(fox, true).unwrap();
    assert_eq!(ids, vec![504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30]);
    assert_eq!(tok.decode(&ids, false).unwrap(), fox);
    // The smollm pre-tokenizer splits digits one by one; control tokens are single tokens.
    let digits = tok.encode("2024", false).unwrap();
    assert_eq!(digits.len(), 4, "{digits:?}");
    assert_eq!(tok.encode("<|im_start|>user", false).unwrap()[0], 1);
    assert_eq!(tok.decode(&[1, 504, 2], true).unwrap(), "The");
}

/// The last position's logits of the reference prompt, checked against the reference values.
fn check_reference_logits(model: &dyn Model) {
    let ids = Tensor::from_vec(vec![504i64, 3575, 282, 4649, 314], &[1, 5]).unwrap();
    let out = model.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None).unwrap();
    let logits = out.logits.unwrap();
    assert_eq!(logits.shape(), &[1, 5, 49152]);
    let last: Vec<f32> = logits.narrow(1, 4, 1).unwrap().contiguous().unwrap().to_vec().unwrap();
    let want_first = [1.6136f32, -11.8719, -7.9445, -9.3469];
    for (i, (&g, &w)) in last.iter().zip(&want_first).enumerate() {
        println!("logits[{i}] = {g:.5} (reference {w})");
        assert!((g - w).abs() < 1e-3, "logits[{i}] = {g}, reference {w}");
    }
    let mut order: Vec<usize> = (0..last.len()).collect();
    order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
    let want_top = [(7042usize, 17.371f32), (260, 14.889), (4528, 13.245), (2250, 13.010), (1315, 12.952)];
    for (rank, &(id, value)) in want_top.iter().enumerate() {
        assert_eq!(order[rank], id, "top-{} token", rank + 1);
        println!("top-{} = {id}: {:.5} (reference {value})", rank + 1, last[id]);
        assert!((last[id] - value).abs() < 1e-3, "logit of {id} = {}, reference {value}", last[id]);
    }
}

#[test]
fn logits_and_greedy_continuation_match_the_reference() {
    let Some(path) = smollm2() else { return };
    let model = load(&path).unwrap();
    check_reference_logits(model.as_ref());
    let new =
        generate(model.as_ref(), &[504, 3575, 282, 4649, 314], 12, &[2], &SamplingConfig::default(), true).unwrap();
    let tok = Tokenizer::from_dir(&path).unwrap();
    let text = tok.decode(&[&[504i64, 3575, 282, 4649, 314][..], &new].concat(), true).unwrap();
    assert_eq!(text, "The capital of France is Paris.\n\nThe answer is: 201");
}

/// QLoRA's loading: the Q4_1 Linears stay packed in the mapped file (dequantized tile by tile in
/// the matmul) and the model computes the same reference logits.
#[test]
fn packed_gguf_blocks_compute_the_reference_logits() {
    let Some(path) = smollm2() else { return };
    let mut model = load_llama_packed(&path).unwrap();
    let (mut packed, mut stored) = (0usize, 0usize);
    model
        .visit_linears(&mut |name, l| {
            if let Some(p) = &l.base.packed {
                assert_eq!(p.type_name(), "q4_1", "{name}");
                packed += 1;
                stored += p.stored_bytes();
            }
            Ok(())
        })
        .unwrap();
    // 30 layers × 7 projections; the tied head is the (Q8_0, dequantized) embedding matrix.
    assert_eq!(packed, 210);
    // 20 bytes per 32 weights (+ the Q/K row maps): the Linears' 106M parameters in 63.4 MiB.
    let params = 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536);
    assert_eq!(stored, params / 32 * 20 + 30 * (576 + 192) * 4);
    check_reference_logits(model.as_ref());
}
