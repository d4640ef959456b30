//! A thin wrapper over Hugging Face's `tokenizers` crate that reads a model folder's `tokenizer.json`
//! (BERT WordPiece, GPT-2 / LLaMA byte-level BPE, ...) and speaks the engine's `i64` ids.
//!
//! Padding and truncation that the file enables (all-MiniLM-L6-v2's pads and truncates to 128) are
//! switched off: the ids are exactly the text's tokens, and callers pad or cut as they need.
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The file name looked for in a model folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A loaded `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json` file, with its padding and truncation switched off.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        Tokenizer::from_bytes(&bytes, path)
    }

    /// A `tokenizer.json` given as bytes; `path` is the file named in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::File {
            path: path.display().to_string(),
            detail: format!("not a tokenizer.json that the tokenizers library can load: {e}"),
        })?;
        let mut inner = inner;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| Error::File {
            path: path.display().to_string(),
            detail: format!("cannot switch truncation off: {e}"),
        })?;
        Ok(Tokenizer { inner, path: path.to_path_buf() })
    }

    /// Loads `tokenizer.json` from a model folder, or the tokenizer stored in a `.gguf` file.
    pub fn from_dir(model_dir: impl AsRef<Path>) -> Result<Tokenizer> {
        let dir = model_dir.as_ref();
        if crate::io::gguf::is_gguf(dir) {
            let json = crate::io::gguf::GgufFile::open(dir)?.tokenizer_json()?;
            return Tokenizer::from_bytes(json.to_string().as_bytes(), dir);
        }
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Err(Error::File {
                path: dir.display().to_string(),
                detail: format!("no {TOKENIZER_FILE} in this model folder (only tokenizer.json files are supported)"),
            });
        }
        Tokenizer::from_file(path)
    }

    /// The file this tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, detail: impl Into<String>) -> Error {
        Error::File { path: self.path.display().to_string(), detail: detail.into() }
    }

    /// Token ids of `text`; `add_special_tokens` adds what the file's post-processor adds
    /// (`[CLS] ... [SEP]` for BERT, `<s>` for LLaMA, nothing for GPT-2).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.err(format!("cannot encode {text:?}: {e}")))?;
        Ok(to_i64(enc.get_ids()))
    }

    /// Ids and segment (token type) ids of a text pair, as BERT reads a sentence pair.
    pub fn encode_pair(&self, first: &str, second: &str, add_special_tokens: bool) -> Result<(Vec<i64>, Vec<i64>)> {
        let enc = self
            .inner
            .encode((first, second), add_special_tokens)
            .map_err(|e| self.err(format!("cannot encode the pair ({first:?}, {second:?}): {e}")))?;
        Ok((to_i64(enc.get_ids()), to_i64(enc.get_type_ids())))
    }

    /// Ids of each text, unpadded (each as long as its own tokens).
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<i64>>> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), add_special_tokens)
            .map_err(|e| self.err(format!("cannot encode a batch of {} texts: {e}", texts.len())))?;
        Ok(encs.iter().map(|e| to_i64(e.get_ids())).collect())
    }

    /// The text of `ids`; `skip_special_tokens` leaves out special tokens (`[CLS]`, `<|endoftext|>`).
    /// An id that names no token is an error.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids = ids
            .iter()
            .map(|&id| match u32::try_from(id).ok().filter(|&u| self.inner.id_to_token(u).is_some()) {
                Some(u) => Ok(u),
                None => Err(self.err(format!("token id {id} is not in the vocabulary (size {})", self.vocab_size()))),
            })
            .collect::<Result<Vec<u32>>>()?;
        self.inner.decode(&ids, skip_special_tokens).map_err(|e| self.err(format!("cannot decode {ids:?}: {e}")))
    }

    /// The id of a token string (`"[CLS]"`, `"hello"`), special and added tokens included.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// The token string of an id.
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|u| self.inner.id_to_token(u))
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

fn to_i64(ids: &[u32]) -> Vec<i64> {
    ids.iter().map(|&i| i64::from(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("engine-tokenizer-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A small BERT tokenizer.json laid out as transformers saves one (BertNormalizer,
    /// BertPreTokenizer, WordPiece, `[CLS] $A [SEP]` template), with padding and truncation to 8 on,
    /// as all-MiniLM-L6-v2's file has them (to 128).
    fn bert_json() -> String {
        let vocab = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "the", "cat", "sat", "un", "##aff",
            "##able", ",", "!", ".", "a",
        ];
        let vocab: serde_json::Map<String, serde_json::Value> =
            vocab.iter().enumerate().map(|(i, t)| (t.to_string(), serde_json::json!(i))).collect();
        let added: Vec<serde_json::Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                                   "normalized": false, "special": true})
            })
            .collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0,
                        "pad_type_id": 0, "pad_token": "[PAD]"},
            "added_tokens": added,
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                         {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
                }
            },
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab}
        })
        .to_string()
    }

    /// A small GPT-2 byte-level BPE tokenizer.json as GPT-2's is laid out (ByteLevel pre-tokenizer,
    /// post-processor and decoder, string merges, `<|endoftext|>` added as special).
    fn gpt2_json() -> String {
        // Space is `Ġ` in the byte-level alphabet.
        let tokens = [
            "!",
            ",",
            "d",
            "e",
            "h",
            "l",
            "o",
            "r",
            "w",
            "Ġ",
            "he",
            "ll",
            "hell",
            "hello",
            "Ġw",
            "or",
            "Ġwor",
            "Ġworl",
            "Ġworld",
            "<|endoftext|>",
        ];
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d"];
        let vocab: serde_json::Map<String, serde_json::Value> =
            tokens.iter().enumerate().map(|(i, t)| (t.to_string(), serde_json::json!(i))).collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": 19, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": true, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "vocab": vocab,
                      "merges": merges}
        })
        .to_string()
    }

    fn write(dir: &TempDir, text: &str) -> PathBuf {
        let p = dir.0.join(TOKENIZER_FILE);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bert_wordpiece_loads_without_padding_or_truncation() {
        let dir = TempDir::new("bert");
        write(&dir, &bert_json());
        let tok = Tokenizer::from_dir(&dir.0).unwrap();
        // Lowercased, split on punctuation, WordPiece with `##` continuations; not padded to 8.
        assert_eq!(tok.encode("Hello, World!", true).unwrap(), vec![2, 5, 13, 6, 14, 3]);
        assert_eq!(tok.encode("Hello, World!", false).unwrap(), vec![5, 13, 6, 14]);
        assert_eq!(tok.encode("unaffable", false).unwrap(), vec![10, 11, 12]);
        assert_eq!(tok.encode("dog", false).unwrap(), vec![1]);
        // Not truncated to 8 either.
        let long = tok.encode("the cat sat the cat sat the cat sat", true).unwrap();
        assert_eq!(long.len(), 11);
        let batch = tok.encode_batch(&["hello", "the cat sat"], true).unwrap();
        assert_eq!(batch, vec![vec![2, 5, 3], vec![2, 7, 8, 9, 3]]);
        let (ids, types) = tok.encode_pair("hello", "the cat", true).unwrap();
        assert_eq!(ids, vec![2, 5, 3, 7, 8, 3]);
        assert_eq!(types, vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(tok.decode(&[2, 5, 13, 6, 14, 3], true).unwrap(), "hello, world!");
        assert_eq!(tok.decode(&[2, 10, 11, 12, 3], false).unwrap(), "[CLS] unaffable [SEP]");
        assert_eq!(tok.token_to_id("[CLS]"), Some(2));
        assert_eq!(tok.token_to_id("##aff"), Some(11));
        assert_eq!(tok.token_to_id("nope"), None);
        assert_eq!(tok.id_to_token(8).as_deref(), Some("cat"));
        assert_eq!(tok.vocab_size(), 17);
    }

    #[test]
    fn gpt2_byte_level_bpe_round_trips() {
        let dir = TempDir::new("gpt2");
        let path = write(&dir, &gpt2_json());
        let tok = Tokenizer::from_file(&path).unwrap();
        assert_eq!(tok.path(), path.as_path());
        assert_eq!(tok.encode("hello world!", true).unwrap(), vec![13, 18, 0]);
        assert_eq!(tok.encode("hello world", false).unwrap(), vec![13, 18]);
        assert_eq!(tok.encode("hello<|endoftext|>", false).unwrap(), vec![13, 19]);
        assert_eq!(tok.decode(&[13, 18, 0], false).unwrap(), "hello world!");
        assert_eq!(tok.decode(&[13, 18, 19], true).unwrap(), "hello world");
        assert_eq!(tok.decode(&[13, 19], false).unwrap(), "hello<|endoftext|>");
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(19));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = TempDir::new("errors");
        let e = Tokenizer::from_dir(&dir.0).unwrap_err().to_string();
        assert!(e.contains(&dir.0.display().to_string()) && e.contains("tokenizer.json"), "{e}");
        let missing = dir.0.join("missing.json");
        let e = Tokenizer::from_file(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.json"), "{e}");
        let bad = write(&dir, "{\"model\": 3}");
        let e = Tokenizer::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains(&bad.display().to_string()), "{e}");
        write(&dir, &gpt2_json());
        let tok = Tokenizer::from_dir(&dir.0).unwrap();
        for id in [-1i64, 20, 1 << 40] {
            let e = tok.decode(&[13, id], false).unwrap_err().to_string();
            assert!(e.contains(&id.to_string()) && e.contains("tokenizer.json"), "{e}");
        }
    }

    /// all-MiniLM-L6-v2's real tokenizer.json, when the assets are present (they are not committed):
    /// its padding and truncation to 128 must be off.
    #[test]
    fn real_minilm_tokenizer_when_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/all-MiniLM-L6-v2/tokenizer.json");
        if !path.is_file() {
            eprintln!("skipped: {} is absent", path.display());
            return;
        }
        let tok = Tokenizer::from_file(&path).unwrap();
        let ids = tok.encode("Hello world", true).unwrap();
        assert_eq!(ids, vec![101, 7592, 2088, 102]);
        let long = "word ".repeat(300);
        assert_eq!(tok.encode(&long, true).unwrap().len(), 302);
        assert_eq!(tok.decode(&ids, true).unwrap(), "hello world");
    }
}
