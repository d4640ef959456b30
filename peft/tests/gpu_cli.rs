//! The command line on the GPU: `peft forward --device cuda:0` reproduces every model and adapter
//! fixture of the manifest (outputs made by transformers, PEFT and `adapters`) within the fixture
//! tolerances, as on the host; `peft generate --device cuda:0` continues a prompt with the host's tokens.
//! Without a GPU each test prints why and returns; REQUIRE_GPU=1 makes that a failure.
#![cfg(feature = "cuda")]

mod gpu_common;

use engine::io::{save_safetensors, SafeTensors};
use gpu_common::gpu_available;
use integration_tests::{assert_within, fixtures_dir, input_ids, manifest, TempDir};
use std::process::{Command, Output};

fn peft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peft")).args(args).output().expect("the peft binary runs")
}

#[test]
fn forward_on_the_gpu_reproduces_every_model_and_adapter_fixture() {
    if !gpu_available() {
        return;
    }
    let tmp = TempDir::new("gpu-cli");
    let m = manifest();
    let cases = m["models"].as_array().unwrap().iter().chain(m["adapters"].as_array().unwrap());
    let mut checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let path = |k: &str| fixtures_dir().join(case[k].as_str().unwrap()).display().to_string();
        let input = tmp.path(&format!("{name}-in.safetensors"));
        save_safetensors(&input, &[("input_ids".to_string(), input_ids(case))], None).unwrap();
        let out = tmp.path(&format!("{name}-out.safetensors"));
        let mut args = vec!["forward".to_string(), "--device".into(), "cuda:0".into(), "--model".into()];
        args.push(path("model_dir"));
        if case.get("adapter_dir").is_some() {
            args.extend(["--adapter".to_string(), path("adapter_dir")]);
        }
        args.extend(["--input".to_string(), input.display().to_string(), "--out".into(), out.display().to_string()]);
        let o = peft(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let output = case["output"].as_str().unwrap();
        let got = SafeTensors::open(&out).unwrap().tensor_f32(output).unwrap().to_vec::<f32>().unwrap();
        let want = SafeTensors::open(path("expected")).unwrap().tensor_f32(output).unwrap().to_vec::<f32>().unwrap();
        let (rtol, atol) = (case["rtol"].as_f64().unwrap() as f32, case["atol"].as_f64().unwrap() as f32);
        assert_within(&format!("{name} on the GPU"), &got, &want, rtol, atol);
        checked += 1;
    }
    assert!(checked >= 24, "only {checked} fixture cases");
}

#[test]
fn generate_on_the_gpu_gives_the_host_tokens() {
    if !gpu_available() {
        return;
    }
    let model = fixtures_dir().join("models/llama").display().to_string();
    let adapter = fixtures_dir().join("adapters/llama-lora").display().to_string();
    let run = |device: &str| {
        let o = peft(&[
            "generate",
            "--model",
            &model,
            "--adapter",
            &adapter,
            "--prompt-ids",
            "5,17,42,8",
            "--max-new-tokens",
            "10",
            "--device",
            device,
        ]);
        assert!(o.status.success(), "{device}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(run("cuda:0"), run("cpu"));
}
