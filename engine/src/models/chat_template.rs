//! Chat templates of the ChatML family, the one SmolLM2 (and many instruct models) ship:
//!
//! ```text
//! {% for message in messages %}
//!   [{% if loop.first and messages[0]['role'] != 'system' %}{{ '<default system turn>' }}{% endif %}]
//!   {{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
//! {% endfor %}
//! [{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}]
//! ```
//!
//! Templates are Jinja programs; rather than interpret Jinja, this recognizes exactly that shape
//! (whitespace, `{%-`/`-%}` trimming and the quote style do not matter; the optional parts may be
//! absent) and renders it. Any other template is an error saying what is supported.
use crate::error::{Error, Result};
use std::path::Path;

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.to_string(), content: content.to_string() }
    }
}

/// A recognized ChatML template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    /// The text put in front when the first message is not a system message.
    pub default_system: Option<String>,
    /// Whether the template opens the assistant's turn when asked to (`add_generation_prompt`).
    pub generation_prompt: bool,
}

// Delimiters of decoded string literals in the compact form (never in a template's text).
const OPEN: char = '\u{1}';
const CLOSE: char = '\u{2}';

/// The template without whitespace outside string literals and without Jinja's trim markers,
/// string literals decoded (Python escapes) and wrapped in OPEN/CLOSE whatever their quotes.
fn compact(template: &str) -> Result<String> {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(OPEN);
                loop {
                    match chars.next() {
                        None => return Err(Error::invalid("chat template", "a string literal is not closed")),
                        Some(q) if q == c => break,
                        Some('\\') => out.push(match chars.next() {
                            Some('n') => '\n',
                            Some('t') => '\t',
                            Some('r') => '\r',
                            Some(other) => other,
                            None => return Err(Error::invalid("chat template", "a string literal is not closed")),
                        }),
                        Some(other) => out.push(other),
                    }
                }
                out.push(CLOSE);
            }
            c if c.is_whitespace() => {}
            '-' if out.ends_with("{%") || out.ends_with("{{") => {}
            '-' if matches!(chars.peek(), Some('%') | Some('}')) => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

impl ChatTemplate {
    /// Recognizes a ChatML template; any other is an error that shows what is supported.
    pub fn parse(template: &str) -> Result<ChatTemplate> {
        let unsupported = || {
            Error::invalid(
                "chat template",
                "only ChatML templates are supported: `{% for message in messages %}` with an optional default \
                 system turn when the first message is not a system one, then `'<|im_start|>' + message['role'] + \
                 '\\n' + message['content'] + '<|im_end|>' + '\\n'`, and an optional `{% if add_generation_prompt \
                 %}{{ '<|im_start|>assistant\\n' }}{% endif %}`; this template has another shape",
            )
        };
        let c = compact(template)?;
        let canon = |s: &str| compact(s).unwrap_or_default();
        let mut rest = c.as_str();
        let mut expect = |part: &str| -> Result<()> {
            rest = rest.strip_prefix(canon(part).as_str()).ok_or_else(unsupported)?;
            Ok(())
        };
        expect("{% for message in messages %}")?;
        // The optional default system turn: one string literal between the `if` and `endif`.
        let system_if = canon("{% if loop.first and messages[0]['role'] != 'system' %}{{");
        let default_system = match rest.strip_prefix(system_if.as_str()).and_then(|r| r.strip_prefix(OPEN)) {
            Some(after) => {
                let (text, tail) = after.split_once(CLOSE).ok_or_else(unsupported)?;
                rest = tail.strip_prefix(canon("}}{% endif %}").as_str()).ok_or_else(unsupported)?;
                Some(text.to_string())
            }
            None => None,
        };
        let mut expect = |part: &str| -> Result<()> {
            rest = rest.strip_prefix(canon(part).as_str()).ok_or_else(unsupported)?;
            Ok(())
        };
        expect("{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}")?;
        expect("{% endfor %}")?;
        let generation = canon("{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}");
        let generation_prompt = match rest.strip_prefix(generation.as_str()) {
            Some(tail) => {
                rest = tail;
                true
            }
            None => false,
        };
        if !rest.is_empty() {
            return Err(unsupported());
        }
        Ok(ChatTemplate { default_system, generation_prompt })
    }

    /// The chat template of a model: a `.gguf` file's `tokenizer.chat_template`, or the
    /// `chat_template` of a folder's `tokenizer_config.json`.
    pub fn from_model(path: &Path) -> Result<ChatTemplate> {
        let text = if crate::io::gguf::is_gguf(path) {
            let file = crate::io::gguf::GgufFile::open(path)?;
            file.chat_template().map(str::to_string).ok_or_else(|| Error::File {
                path: path.display().to_string(),
                detail: "no tokenizer.chat_template".into(),
            })?
        } else {
            let p = path.join("tokenizer_config.json");
            let bad = |detail: String| Error::File { path: p.display().to_string(), detail };
            let s =
                std::fs::read_to_string(&p).map_err(|e| bad(format!("cannot read it for the chat template: {e}")))?;
            let json: serde_json::Value = serde_json::from_str(&s).map_err(|e| bad(format!("not valid JSON: {e}")))?;
            json.get("chat_template")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad("no `chat_template` string".into()))?
        };
        ChatTemplate::parse(&text).map_err(|e| Error::File { path: path.display().to_string(), detail: e.to_string() })
    }

    /// The conversation as the template writes it; with `add_generation_prompt`, the assistant's
    /// turn is opened (when the template does that).
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        for (i, m) in messages.iter().enumerate() {
            if i == 0 && m.role != "system" {
                if let Some(s) = &self.default_system {
                    out.push_str(s);
                }
            }
            out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
        }
        if add_generation_prompt && self.generation_prompt {
            out.push_str("<|im_start|>assistant\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as its GGUF file and tokenizer_config.json carry it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ \
        '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% \
        endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% \
        if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn smollm2_template_renders_like_jinja() {
        let t = ChatTemplate::parse(SMOLLM2).unwrap();
        let sys =
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
        assert_eq!(t.default_system.as_deref(), Some(sys));
        let user = [ChatMessage::new("user", "Hi")];
        assert_eq!(t.render(&user, true), format!("{sys}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
        assert_eq!(t.render(&user, false), format!("{sys}<|im_start|>user\nHi<|im_end|>\n"));
        // A system message of the caller replaces the default one.
        let conv = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
        assert_eq!(
            t.render(&conv, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn plain_chatml_with_trim_markers_and_double_quotes() {
        let t = ChatTemplate::parse(
            "{%- for message in messages -%}\n  {{- \"<|im_start|>\" + message['role'] + \"\\n\" + message['content'] + \
             '<|im_end|>' + '\\n' -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- \
             endif -%}",
        )
        .unwrap();
        assert_eq!(t, ChatTemplate { default_system: None, generation_prompt: true });
        assert_eq!(
            t.render(&[ChatMessage::new("user", "x")], true),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn other_templates_are_refused_clearly() {
        let llama2 =
            "{% for message in messages %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% endfor %}";
        let e = ChatTemplate::parse(llama2).unwrap_err().to_string();
        assert!(e.contains("only ChatML templates are supported"), "{e}");
        // ChatML with something extra at the end is refused too, not silently cut.
        let e = ChatTemplate::parse(&format!("{SMOLLM2}{{{{ eos_token }}}}")).unwrap_err().to_string();
        assert!(e.contains("only ChatML"), "{e}");
        assert!(ChatTemplate::parse("{{ 'unclosed }}").unwrap_err().to_string().contains("not closed"));
    }
}
