//! LoRA against Hugging Face PEFT: saved adapters reproduce PEFT's outputs, and a fresh LoRA model's
//! loss and gradients match PyTorch's for the same parameter values.
use engine::io::SafeTensors;
use engine::models::{load, ForwardInput};
use peft::{LoraConfig, PeftModel};

use integration_tests::{assert_grads, assert_within, fixtures_dir as fixtures, input_ids as ids, manifest};

#[test]
fn saved_peft_adapters_reproduce_peft_outputs() {
    let m = manifest();
    let mut n = 0;
    for case in m["adapters"].as_array().unwrap().iter().filter(|c| c["peft_type"] == "LORA") {
        let name = case["name"].as_str().unwrap();
        let base = load(fixtures().join(case["model_dir"].as_str().unwrap())).unwrap();
        let mut model = PeftModel::new(base);
        let warnings =
            model.load_adapter(fixtures().join(case["adapter_dir"].as_str().unwrap()), "default", false).unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        let x = ids(case);
        let out = model.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let (out_name, got) = out.main();
        assert_eq!(out_name, case["output"].as_str().unwrap());
        let want = SafeTensors::open(fixtures().join(case["expected"].as_str().unwrap()))
            .unwrap()
            .tensor_f32(out_name)
            .unwrap();
        let (rtol, atol) = (case["rtol"].as_f64().unwrap() as f32, case["atol"].as_f64().unwrap() as f32);
        assert_within(name, &got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap(), rtol, atol);
        // merged: the same outputs from W + s·BA (PEFT measured its own merge error in the manifest)
        model.merge().unwrap();
        let merged = model.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        assert_within(
            &format!("{name} merged"),
            &merged.main().1.to_vec_f32().unwrap(),
            &want.to_vec_f32().unwrap(),
            rtol,
            atol.max(2e-6),
        );
        model.unmerge().unwrap();
        // disabled: exactly the base model
        model.set_disabled(true).unwrap();
        let off = model.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let plain = load(fixtures().join(case["model_dir"].as_str().unwrap())).unwrap();
        let base_out = plain.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let same = off.main().1.to_vec_f32().unwrap() == base_out.main().1.to_vec_f32().unwrap();
        assert!(same, "{name}: a disabled adapter must give the base model's outputs bit for bit");
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn lora_gradients_match_pytorch() {
    let m = manifest();
    let mut n = 0;
    for case in m["grads"].as_array().unwrap().iter().filter(|c| c["method"] == "lora") {
        let name = case["name"].as_str().unwrap();
        let expected = SafeTensors::open(fixtures().join(case["expected"].as_str().unwrap())).unwrap();
        let (config, _) = LoraConfig::from_json(case["peft_config"].clone()).unwrap();
        let task = config.task_type.clone().unwrap_or_default();
        let mut model = PeftModel::new(load(fixtures().join(case["model_dir"].as_str().unwrap())).unwrap());
        model.add_adapter("default", config, 0).unwrap();
        model.train(true);
        let params = model.trainable_parameters();
        let want_names: Vec<String> =
            expected.names().filter_map(|n| n.strip_prefix("param.")).map(str::to_string).collect();
        let mut got_names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
        got_names.sort();
        let mut sorted_want = want_names.clone();
        sorted_want.sort();
        assert_eq!(got_names, sorted_want, "{name}: trainable parameter names");
        for (pname, t) in &params {
            t.assign(&expected.tensor_f32(&format!("param.{pname}")).unwrap()).unwrap();
        }
        let x = expected.tensor("input_ids").unwrap();
        let labels = expected.tensor("labels").unwrap();
        let out = model.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let logits = out.logits.unwrap();
        let loss = if task == "SEQ_CLS" {
            peft::loss::classification_loss(&logits, &labels).unwrap()
        } else {
            peft::loss::causal_lm_loss(&logits, &labels).unwrap()
        };
        let want_loss = expected.tensor_f32("loss").unwrap().to_vec::<f32>().unwrap()[0];
        let (rtol, atol) = (case["rtol"].as_f64().unwrap() as f32, case["atol"].as_f64().unwrap() as f32);
        assert_within(&format!("{name} loss"), &[loss.to_scalar().unwrap()], &[want_loss], rtol, atol);
        let grads = loss.backward().unwrap();
        assert_grads(name, &format!("{name} grad"), &grads, &params, &expected, rtol, atol);
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn merged_models_save_as_hugging_face_folders() {
    let m = manifest();
    for case in m["adapters"].as_array().unwrap().iter().filter(|c| c["peft_type"] == "LORA") {
        let name = case["name"].as_str().unwrap();
        let model_dir = fixtures().join(case["model_dir"].as_str().unwrap());
        let mut model = PeftModel::new(load(&model_dir).unwrap());
        model.load_adapter(fixtures().join(case["adapter_dir"].as_str().unwrap()), "default", false).unwrap();
        let x = ids(case);
        let want = model.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let out_dir = std::env::temp_dir().join(format!("peft-merged-{}-{name}", std::process::id()));
        let merged = model.merge_and_unload().unwrap();
        engine::models::save_pretrained(merged.as_ref(), &out_dir, Some(&model_dir)).unwrap();
        let reloaded = load(&out_dir).unwrap();
        let got = reloaded.forward(&ForwardInput { input_ids: Some(&x), ..Default::default() }, None).unwrap();
        let (rtol, atol) = (case["rtol"].as_f64().unwrap() as f32, case["atol"].as_f64().unwrap() as f32);
        assert_within(
            &format!("{name} merged+saved"),
            &got.main().1.to_vec_f32().unwrap(),
            &want.main().1.to_vec_f32().unwrap(),
            rtol,
            atol,
        );
        // the saved file has exactly the base checkpoint's tensor names and shapes
        let before = SafeTensors::open(model_dir.join("model.safetensors")).unwrap();
        let after = SafeTensors::open(out_dir.join("model.safetensors")).unwrap();
        let names =
            |s: &SafeTensors| s.names().map(|n| (n.to_string(), s.info(n).unwrap().shape.clone())).collect::<Vec<_>>();
        assert_eq!(names(&before), names(&after), "{name}");
        std::fs::remove_dir_all(&out_dir).ok();
    }
}
