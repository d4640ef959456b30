//! Writes bottleneck adapters made here in AdapterHub's format, with the outputs we compute for
//! them and our parameter counts, so that `scripts/check-adapterhub-interop.py` can load each with
//! `adapters` 1.3.0 and compare.
//! Usage: cargo run -p peft --example interop_bottleneck -- OUT_DIR
use engine::models::load;
use engine::Tensor;
use peft::bottleneck::BottleneckModel;
use peft::method::AdapterModel;
use serde_json::json;
use std::path::PathBuf;

#[path = "common/interop_case.rs"]
mod interop_case;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args().nth(1).ok_or("usage: interop_bottleneck OUT_DIR")?.into();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    // (case, model folder, peft section): every placement and optional part once.
    let cases = [
        (
            "bert-houlsby-ln",
            "bert",
            json!({"preset": "double_seq_bn", "reduction_factor": 8, "ln_before": true, "ln_after": true}),
        ),
        ("bert-cls-pfeiffer-head", "bert-cls", json!({"preset": "seq_bn", "reduction_factor": 8, "name": "sst"})),
        (
            "bert-post-add-leave-out",
            "bert",
            json!({"preset": "seq_bn", "reduction_factor": {"0": 4, "default": 8}, "residual_before_ln": "post_add",
                   "leave_out": [1], "non_linearity": "gelu"}),
        ),
        ("gpt2-scaled-parallel", "gpt2", json!({"preset": "scaled_par_bn", "reduction_factor": 8})),
        (
            "llama-houlsby-gated",
            "llama",
            json!({"preset": "double_seq_bn", "reduction_factor": 8, "use_gating": true, "scaling": "channel",
                   "adapter_residual_before_ln": true, "ln_after": true}),
        ),
    ];
    for (i, (case, model_name, section)) in cases.into_iter().enumerate() {
        let model_dir = fixtures.join(model_name);
        let model = BottleneckModel::new(load(&model_dir)?, &section, 11 + i as u64)?;
        // Noise on every trained tensor (the classifier too) so that the adapter visibly changes
        // the outputs and a head that failed to load would show.
        for (k, (_, t)) in model.trainable_parameters().into_iter().enumerate() {
            let noise = Tensor::randn(t.shape(), 0.0, 0.2, 500 + k as u64)?;
            t.assign(&noise.add(&t.detach())?)?;
        }
        let dir = out.join(case);
        model.save_adapter(&dir.join("adapter"))?;
        interop_case::write_case(&dir, &model, &model_dir, model.parameter_counts())?;
        println!("{case}: {}", model.trainable_parameters_line());
    }
    Ok(())
}
