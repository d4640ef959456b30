//! `peft quantize` and `peft inspect` end to end: the folder written loads back as the same 4-bit
//! model (byte-identical packed weights, the same logits), inspect reports the bits per parameter,
//! and bad options are refused with a message naming them.
use engine::models::{load, ForwardInput};
use engine::quant::{quantize_model, Bnb4bitConfig, QuantType};
use engine::Tensor;
use integration_tests::fixtures_dir;
use std::path::PathBuf;
use std::process::{Command, Output};

fn peft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peft")).args(args).output().expect("the peft binary runs")
}

fn logits(m: &dyn engine::models::Model, ids: &Tensor) -> Vec<f32> {
    m.forward(&ForwardInput { input_ids: Some(ids), ..Default::default() }, None)
        .unwrap()
        .logits
        .unwrap()
        .to_vec_f32()
        .unwrap()
}

fn out_dir(tag: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("qlora-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// `peft quantize` of the LLaMA fixture into a fresh folder, with extra options.
fn quantize_fixture(tag: &str, options: &[&str]) -> PathBuf {
    let (src, out) = (fixtures_dir().join("models/llama"), out_dir(tag));
    let o = peft(&[&["quantize", "--model", src.to_str().unwrap(), "--out", out.to_str().unwrap()], options].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn read_config(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn quantize_writes_a_4bit_folder_that_loads_back_identically() {
    let src = fixtures_dir().join("models/llama");
    let out = quantize_fixture("fp4", &["--bnb-4bit-quant-type", "fp4", "--bnb-4bit-use-double-quant"]);
    let config = read_config(&out);
    let qc = &config["quantization_config"];
    assert_eq!(qc["quant_method"], "bitsandbytes");
    assert_eq!(qc["bnb_4bit_quant_type"], "fp4");
    assert_eq!(qc["bnb_4bit_use_double_quant"], true);

    // The same quantization in memory computes exactly what the folder computes.
    let mut want = load(&src).unwrap();
    let cfg = Bnb4bitConfig { quant_type: QuantType::Fp4, double_quant: true, ..Default::default() };
    quantize_model(want.as_mut(), &cfg).unwrap();
    let got = load(&out).unwrap();
    let ids = Tensor::from_vec(vec![5i64, 81, 65, 96, 48, 14, 5], &[1, 7]).unwrap();
    assert_eq!(logits(got.as_ref(), &ids), logits(want.as_ref(), &ids));

    let o = peft(&["inspect", "--model", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 18432 parameters: 9216 code bytes + 288 absmax codes + 14 matrices × (nested absmax + offset).
    assert!(text.contains("quantized fp4+dq/64: 18432 parameters in 9616 bytes"), "{text}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn inspect_quantizes_on_load_and_bad_options_are_named() {
    let src = fixtures_dir().join("models/llama");
    let o = peft(&["inspect", "--model", src.to_str().unwrap(), "--load-in-4bit", "--bnb-4bit-blocksize", "32"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // No double quantization: 4 bits + one f32 absmax per 32 values = 5 bits.
    assert!(text.contains("quantized nf4/32: 18432 parameters in 11520 bytes = 5.0000 bits per parameter"), "{text}");
    let o = peft(&["inspect", "--model", src.to_str().unwrap(), "--load-in-4bit", "--bnb-4bit-quant-type", "int4"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("`int4` is not one of nf4, fp4"));
    let out = out_dir("blocksize");
    let o = peft(&[
        "quantize",
        "--model",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--bnb-4bit-blocksize",
        "48",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("blocksize 48"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists(), "nothing written on error");
}

#[test]
fn merging_a_lora_trained_on_a_4bit_base_exports_float_weights() {
    let q4 = quantize_fixture("merge-base", &["--bnb-4bit-use-double-quant"]);
    // An adapter on the 4-bit base, non-zero in both factors.
    let mut model = peft::PeftModel::new(load(&q4).unwrap());
    let mut lc = peft::LoraConfig::new(4, 8.0, &["q_proj", "v_proj", "up_proj"]);
    lc.init_lora_weights = serde_json::from_value(serde_json::json!(false)).unwrap();
    model.add_adapter("default", lc, 5).unwrap();
    let adapter = out_dir("merge-adapter");
    model.save_adapter(&adapter, "default").unwrap();
    let ids = Tensor::from_vec(vec![5i64, 81, 65, 96, 48, 14, 5], &[1, 7]).unwrap();
    let want = logits(&model, &ids);
    for (dtype, tol) in [("f32", 1e-5f32), ("bf16", 3e-2)] {
        let out = out_dir(&format!("merged-{dtype}"));
        let args = ["merge", "--model", q4.to_str().unwrap(), "--adapter", adapter.to_str().unwrap()];
        let o = peft(&[&args[..], &["--out", out.to_str().unwrap(), "--dtype", dtype]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert!(config.get("quantization_config").is_none(), "a merged model is a float model");
        let merged = load(&out).unwrap();
        let got = logits(merged.as_ref(), &ids);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{dtype}: {a} vs {b}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
    // Re-quantizing warns and writes a 4-bit folder.
    let out = out_dir("merged-q4");
    let args = ["merge", "--model", q4.to_str().unwrap(), "--adapter", adapter.to_str().unwrap()];
    let o =
        peft(&[&args[..], &["--out", out.to_str().unwrap(), "--requantize", "--bnb-4bit-use-double-quant"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: --requantize"));
    assert_eq!(read_config(&out)["quantization_config"]["bnb_4bit_use_double_quant"], true);
    for d in [out, adapter, q4] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
