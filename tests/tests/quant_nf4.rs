//! bitsandbytes' 4-bit quantization reproduced byte for byte (`fixtures/nf4`, made with
//! `bitsandbytes.functional.quantize_4bit` 0.50.2 on CPU), its checkpoint layout, and the
//! 4-bit LLaMA transformers saved (`models/llama-bnb-nf4`) computing transformers' logits.
use engine::io::{SafeTensors, WeightFiles};
use engine::models::{load, ForwardInput};
use engine::quant::bnb4::{torch_sum_f32, Absmax, Bnb4bit, QuantType};
use engine::quant::{read_bnb4_weight, write_bnb4_weight, PackedMatrix};
use engine::Tensor;
use integration_tests::{fixtures_dir, input_ids, manifest, worst_excess};
use std::collections::HashMap;

fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn quantize_and_dequantize_match_bitsandbytes_bit_for_bit() {
    let m = manifest();
    let cases = m["nf4"].as_array().expect("nf4 cases");
    assert_eq!(cases.len(), 12);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let file = SafeTensors::open(fixtures_dir().join(case["file"].as_str().unwrap())).unwrap();
        let get = |k: &str| file.tensor(k).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape: Vec<usize> = serde_json::from_value(case["shape"].clone()).unwrap();
        let shape = [shape[0], shape[1]];
        let qt = QuantType::parse(case["quant_type"].as_str().unwrap()).unwrap();
        let bs = case["blocksize"].as_u64().unwrap() as usize;
        let dq = case["double_quant"].as_bool().unwrap();
        let weight = get("weight").to_vec::<f32>().unwrap();
        let q = Bnb4bit::quantize(&weight, shape, qt, bs, dq).unwrap();

        assert_eq!(q.packed, get("packed").to_vec::<u8>().unwrap(), "{name}: packed codes");
        assert_eq!(bits(&q.code), f32_bits(&get("code")), "{name}: code book");
        match &q.absmax {
            Absmax::Plain(a) => assert_eq!(bits(a), f32_bits(&get("absmax")), "{name}: absmax"),
            Absmax::Double { codes, nested_absmax, nested_code, offset, .. } => {
                assert_eq!(offset.to_bits(), get("offset").to_vec::<f32>().unwrap()[0].to_bits(), "{name}: offset");
                assert_eq!(codes, &get("absmax_q").to_vec::<u8>().unwrap(), "{name}: absmax codes");
                assert_eq!(bits(nested_absmax), f32_bits(&get("nested_absmax")), "{name}: nested absmax");
                assert_eq!(bits(nested_code), f32_bits(&get("nested_code")), "{name}: dynamic code");
            }
        }
        let mut deq = vec![0f32; weight.len()];
        q.dequantize_rows(0..shape[0], &mut deq).unwrap();
        assert_eq!(bits(&deq), f32_bits(&get("dequantized")), "{name}: dequantized values");
        // A row range in the middle gives the same values as the whole matrix.
        let (r0, r1) = (shape[0] / 3, shape[0] / 3 + 5);
        let mut part = vec![0f32; (r1 - r0) * shape[1]];
        q.dequantize_rows(r0..r1, &mut part).unwrap();
        assert_eq!(bits(&part), bits(&deq[r0 * shape[1]..r1 * shape[1]]), "{name}: rows {r0}..{r1}");

        let bpp = q.stored_bytes() as f64 * 8.0 / weight.len() as f64;
        assert!((bpp - case["bits_per_param"].as_f64().unwrap()).abs() < 1e-9, "{name}: {bpp} bits per parameter");

        // transformers' serialized layout: every tensor and the quant-state JSON bytes.
        let written: HashMap<String, Tensor> = write_bnb4_weight("serialized", &q).unwrap().into_iter().collect();
        for key in file.names().filter(|k| k.starts_with("serialized.")) {
            let ours = written.get(key).unwrap_or_else(|| panic!("{name}: we do not write {key}"));
            let want = get(key);
            assert_eq!(ours.dtype(), want.dtype(), "{name}: {key} dtype");
            assert_eq!(ours.shape(), want.shape(), "{name}: {key} shape");
            let same = match want.dtype() {
                engine::DType::U8 => ours.to_vec::<u8>().unwrap() == want.to_vec::<u8>().unwrap(),
                _ => f32_bits(ours) == f32_bits(&want),
            };
            assert!(same, "{name}: {key} differs");
        }
    }
}

#[test]
fn degenerate_inputs_are_refused_or_handled() {
    assert!(Bnb4bit::quantize(&[1.0; 10], [2, 5], QuantType::Nf4, 48, false).is_err(), "block size 48");
    assert!(Bnb4bit::quantize(&[1.0; 10], [2, 6], QuantType::Nf4, 64, false).is_err(), "wrong length");
    // An all-zero matrix and an odd element count still round-trip to zeros.
    let q = Bnb4bit::quantize(&[0.0; 15], [3, 5], QuantType::Nf4, 64, true).unwrap();
    let mut out = vec![1f32; 15];
    q.dequantize_rows(0..3, &mut out).unwrap();
    assert!(out.iter().all(|&v| v == 0.0), "{out:?}");
    assert!(q.dequantize_rows(2..4, &mut [0.0; 10]).is_err(), "rows out of range");
    assert!(q.dequantize_rows(0..1, &mut [0.0; 4]).is_err(), "buffer too small");
}

#[test]
fn checkpoint_layout_round_trips() {
    let w: Vec<f32> =
        (0..300 * 70).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32)).collect();
    for (qt, dq) in [(QuantType::Nf4, true), (QuantType::Nf4, false), (QuantType::Fp4, true)] {
        let q = Bnb4bit::quantize(&w, [300, 70], qt, 128, dq).unwrap();
        let tensors = write_bnb4_weight("layer.weight", &q).unwrap();
        let dir = std::env::temp_dir().join(format!("quant-roundtrip-{}-{dq}-{}", qt.name(), std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        engine::io::save_safetensors(&path, &tensors, None).unwrap();
        let back = read_bnb4_weight(&WeightFiles::open(&path).unwrap(), "layer.weight").unwrap().expect("4-bit weight");
        assert_eq!(back, q, "{} dq={dq}", qt.name());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn bnb_nf4_llama_reproduces_transformers_logits() {
    let m = manifest();
    let case =
        m["models"].as_array().unwrap().iter().find(|c| c["name"] == "llama-bnb-nf4").expect("llama-bnb-nf4 case");
    let model = load(fixtures_dir().join(case["model_dir"].as_str().unwrap())).unwrap();
    let mut packed = 0;
    for (name, t) in model.named_parameters() {
        if name.ends_with("_proj.weight") {
            assert_eq!(t.dtype(), engine::DType::U8, "{name} should stay packed");
            packed += 1;
        }
    }
    assert_eq!(packed, 14);
    let ids = input_ids(case);
    let out = model.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None).unwrap();
    let want = SafeTensors::open(fixtures_dir().join(case["expected"].as_str().unwrap()))
        .unwrap()
        .tensor_f32("logits")
        .unwrap();
    let got = out.logits.unwrap();
    assert_eq!(got.shape(), want.shape());
    // Same tolerance multiple as the float models: our GEMM sums in another order.
    let (rtol, atol) = (case["rtol"].as_f64().unwrap() as f32 * 5.0, case["atol"].as_f64().unwrap() as f32 * 5.0);
    let (excess, at) = worst_excess(&got.to_vec::<f32>().unwrap(), &want.to_vec::<f32>().unwrap(), rtol, atol);
    assert!(excess <= 0.0, "element {at} off by {excess} beyond tolerance");
}

#[test]
fn offsets_are_pytorchs_f32_mean_to_the_bit() {
    // Double quantization subtracts torch's f32 mean of the absmaxes; its summation order is
    // reproduced (vectors and torch's results from scripts/make-torch-sum-fixture.py).
    let path = fixtures_dir().join("../fixtures-extra/torch-f32-sums.safetensors");
    let f = SafeTensors::open(path).unwrap();
    let mut checked = 0;
    for name in f.names().filter(|n| n.starts_with('v')) {
        let v = f.tensor(name).unwrap().to_vec::<f32>().unwrap();
        let one = |k: &str| f.tensor(&format!("{k}{}", &name[1..])).unwrap().to_vec::<f32>().unwrap()[0];
        assert_eq!(torch_sum_f32(&v).to_bits(), one("sum").to_bits(), "sum of {} values", v.len());
        let mean = engine::quant::bnb4::absmax_offset(&v);
        assert_eq!(mean.to_bits(), one("mean").to_bits(), "mean of {} values", v.len());
        checked += 1;
    }
    assert_eq!(checked, 49);
}
