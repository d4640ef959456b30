//! The tokenizer a GGUF file stores (`tokenizer.ggml.*`) as the `tokenizer.json` Hugging Face's
//! `tokenizers` library reads, so that it tokenizes as the original model's tokenizer does.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE: tokens already in GPT-2's
//! byte-to-unicode alphabet, merges as `"a b"`), with the pre-tokenizers (`tokenizer.ggml.pre`)
//! `smollm` (each digit apart, then GPT-2's regex — llama.cpp's `LLAMA_VOCAB_PRE_TYPE_SMOLLM`,
//! Hugging Face's `Digits(individual_digits) + ByteLevel`) and `gpt-2` / `default` (GPT-2's regex
//! alone). Control and user-defined tokens (`token_type` 3 and 4) are added tokens, matched before
//! BPE; control tokens are special (left out by `decode(.., skip_special_tokens)`).
//! `add_bos_token` puts the BOS token in front when special tokens are added.
use super::{GgufFile, GgufValue};
use crate::error::Result;
use serde_json::{json, Value};

/// llama.cpp's token types.
const TOKEN_CONTROL: u64 = 3;
const TOKEN_USER_DEFINED: u64 = 4;

impl GgufFile {
    fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let arr = self.require(key)?.as_array().ok_or_else(|| self.err(format!("metadata `{key}` is not an array")))?;
        arr.iter().map(|v| v.as_str().ok_or_else(|| self.err(format!("metadata `{key}` holds a non-string")))).collect()
    }

    /// The `tokenizer.json` (as JSON) of the tokenizer in the metadata.
    pub fn tokenizer_json(&self) -> Result<Value> {
        let model = self.require("tokenizer.ggml.model")?.as_str().unwrap_or("");
        if model != "gpt2" {
            return Err(
                self.err(format!("tokenizer.ggml.model `{model}` is not supported (only `gpt2`, byte-level BPE, is)"))
            );
        }
        let byte_level =
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre = self.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
        let pre_tokenizer = match pre {
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level.clone(),
            ]}),
            "gpt-2" | "gpt2" | "default" => byte_level.clone(),
            other => {
                return Err(self
                    .err(format!("tokenizer.ggml.pre `{other}` is not supported (supported: smollm, gpt-2, default)")))
            }
        };
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match self.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
            Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(self.err(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, (&tok, &ty)) in tokens.iter().zip(&types).enumerate() {
            if vocab.insert(tok.to_string(), json!(id)).is_some() {
                return Err(self.err(format!("token `{tok}` appears twice in tokenizer.ggml.tokens")));
            }
            if ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED {
                added.push(json!({"id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                                  "normalized": false, "special": ty == TOKEN_CONTROL}));
            }
        }
        let id_of = |key: &str| -> Result<Option<(String, u64)>> {
            let Some(v) = self.get(key) else { return Ok(None) };
            let id = v.as_u64().ok_or_else(|| self.err(format!("metadata `{key}` is not a token id")))?;
            let tok = tokens
                .get(id as usize)
                .ok_or_else(|| self.err(format!("{key} {id} is outside the {} tokens", tokens.len())))?;
            Ok(Some((tok.to_string(), id)))
        };
        let add_bos = self.get("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(false);
        let post_processor = match (add_bos, id_of("tokenizer.ggml.bos_token_id")?) {
            (true, Some((bos, id))) => json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos.clone(): {"id": bos, "ids": [id], "tokens": [bos]}},
            }),
            (true, None) => return Err(self.err("add_bos_token is true but there is no bos_token_id")),
            (false, _) => {
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true})
            }
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        }))
    }

    /// The chat template (`tokenizer.chat_template`, a Jinja template), when the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.get("tokenizer.chat_template").and_then(GgufValue::as_str)
    }
}
