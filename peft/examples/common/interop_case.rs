//! What the interop examples write per case for `scripts/check-python-interop.py`: the outputs we
//! compute on fixed ids (`expected.safetensors`), the base model folder, and our parameter counts.
use engine::io::save_safetensors;
use engine::models::{ForwardInput, Model};
use engine::Tensor;
use std::path::Path;

pub fn write_case(
    dir: &Path,
    model: &dyn Model,
    model_dir: &Path,
    counts: (usize, usize),
) -> Result<(), Box<dyn std::error::Error>> {
    let ids = Tensor::from_vec(vec![3i64, 14, 15, 92, 65, 35, 8, 9, 79, 32, 38, 46], &[2, 6])?;
    let y = model.forward(&ForwardInput { input_ids: Some(&ids), ..Default::default() }, None)?;
    let (out_name, t) = y.main();
    save_safetensors(
        dir.join("expected.safetensors"),
        &[("input_ids".into(), ids.clone()), (out_name.into(), t.contiguous()?)],
        None,
    )?;
    std::fs::write(dir.join("model_dir"), model_dir.display().to_string())?;
    std::fs::write(dir.join("counts"), format!("{} {}", counts.0, counts.1))?;
    Ok(())
}
