//! `peft generate --model FILE.gguf` on the real SmolLM2-135M-Instruct (issue 8's reference
//! continuation), `--chat` with the file's ChatML template, and the errors around a GGUF model.
//! Needs `scripts/fetch-assets.sh` (CI runs it first); `PEFT_SKIP_REAL_MODELS=1` skips it.
use integration_tests::smollm2;
use std::path::PathBuf;
use std::process::{Command, Output};

fn peft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peft")).args(args).output().expect("the peft binary runs")
}

fn ok_stdout(o: &Output) -> String {
    assert!(o.status.success(), "peft failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn generate_continues_the_prompt_as_the_reference() {
    let Some(model) = smollm2() else { return };
    let m = model.to_str().unwrap();
    // Greedy, no BOS (add_bos_token=false): the reference continuation of issue 8.
    let o = peft(&["generate", "--model", m, "--prompt", "The capital of France is", "--max-new-tokens", "12"]);
    assert_eq!(ok_stdout(&o), " Paris.\n\nThe answer is: 201\n");
    // With the chat template the instruct model answers the question and stops at <|im_end|>.
    let o = peft(&["generate", "--model", m, "--chat", "--prompt", "What is the capital of France?"]);
    let answer = ok_stdout(&o);
    assert!(answer.contains("Paris") && answer.len() < 200, "{answer:?}");
}

#[test]
fn gguf_errors_are_clear() {
    let o = peft(&["generate", "--model", "/nonexistent/model.gguf", "--prompt", "x"]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.starts_with("error: ") && e.contains("/nonexistent/model.gguf"), "{e}");
    // A file with the extension but not the format.
    let bad = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("not-gguf-{}.gguf", std::process::id()));
    std::fs::write(&bad, b"GGML and then some bytes").unwrap();
    let o = peft(&["generate", "--model", bad.to_str().unwrap(), "--prompt", "x"]);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    std::fs::remove_file(&bad).ok();
    assert_eq!(o.status.code(), Some(1));
    assert!(e.contains("not a GGUF file") && e.contains("not-gguf"), "{e}");
}
