//! transformers' bitsandbytes 4-bit checkpoint layout, for one weight `<path>.weight`:
//! `weight` (u8 `[n/2, 1]`, the packed codes), `weight.absmax` (f32, or u8 codes with double
//! quantization), `weight.quant_map` (the 16 levels), with double quantization also
//! `weight.nested_absmax` and `weight.nested_quant_map`, and `weight.quant_state.bitsandbytes__<type>`
//! (u8 bytes of a JSON object: `quant_type`, `blocksize`, `dtype`, `shape`, and `nested_blocksize`,
//! `nested_dtype`, `nested_offset` with double quantization). This is what `Params4bit` saves and
//! `QuantState.from_dict` reads.
use super::bnb4::{Absmax, Bnb4bit, QuantType};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::WeightFiles;
use crate::tensor::Tensor;

const OP: &str = "bnb 4-bit checkpoint";

/// The quant-state key of a weight, if the file holds one (`…weight.quant_state.bitsandbytes__nf4`).
pub fn quant_state_key(weights: &WeightFiles, weight: &str) -> Option<String> {
    ["nf4", "fp4"].iter().map(|t| format!("{weight}.quant_state.bitsandbytes__{t}")).find(|k| weights.contains(k))
}

fn f32s(weights: &WeightFiles, name: &str) -> Result<Vec<f32>> {
    weights.tensor_f32(name)?.to_vec::<f32>()
}

fn bytes(weights: &WeightFiles, name: &str) -> Result<Vec<u8>> {
    let t = weights.tensor(name)?;
    if t.dtype() != DType::U8 {
        return Err(Error::invalid(OP, format!("`{name}` is {:?}, expected uint8", t.dtype())));
    }
    t.to_vec::<u8>()
}

/// Reads the 4-bit weight `weight` (e.g. `model.layers.0.mlp.up_proj.weight`); `None` when the
/// file stores it as an ordinary tensor.
pub fn read_bnb4_weight(weights: &WeightFiles, weight: &str) -> Result<Option<Bnb4bit>> {
    let Some(state_key) = quant_state_key(weights, weight) else { return Ok(None) };
    let state_bytes = bytes(weights, &state_key)?;
    let state: serde_json::Value = serde_json::from_slice(&state_bytes)
        .map_err(|e| Error::invalid(OP, format!("`{state_key}` is not a JSON object: {e}")))?;
    let field = |k: &str| state.get(k).ok_or_else(|| Error::invalid(OP, format!("`{state_key}` lacks `{k}`")));
    let quant_type = QuantType::parse(field("quant_type")?.as_str().unwrap_or_default())?;
    let blocksize =
        field("blocksize")?.as_u64().ok_or_else(|| Error::invalid(OP, "blocksize is not an integer"))? as usize;
    let shape: Vec<usize> = field("shape")?
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64().map(|v| v as usize)).collect())
        .unwrap_or_default();
    let [rows, cols] = shape[..] else {
        return Err(Error::invalid(OP, format!("`{state_key}`: shape {shape:?} is not a matrix")));
    };
    let code_vec = f32s(weights, &format!("{weight}.quant_map"))?;
    let code: [f32; 16] = code_vec
        .try_into()
        .map_err(|v: Vec<f32>| Error::invalid(OP, format!("`{weight}.quant_map` has {} values, not 16", v.len())))?;
    let absmax_name = format!("{weight}.absmax");
    let absmax = match state.get("nested_offset") {
        Some(off) => Absmax::Double {
            codes: bytes(weights, &absmax_name)?,
            nested_absmax: f32s(weights, &format!("{weight}.nested_absmax"))?,
            nested_code: f32s(weights, &format!("{weight}.nested_quant_map"))?,
            nested_blocksize: state.get("nested_blocksize").and_then(|v| v.as_u64()).unwrap_or(256) as usize,
            offset: off.as_f64().ok_or_else(|| Error::invalid(OP, "nested_offset is not a number"))? as f32,
        },
        None => Absmax::Plain(f32s(weights, &absmax_name)?),
    };
    let packed = bytes(weights, weight)?;
    Bnb4bit::from_parts([rows, cols], quant_type, blocksize, packed, absmax, code)
        .map_err(|e| Error::invalid(OP, format!("`{weight}`: {e}")))
        .map(Some)
}

/// The tensors that store `m` under the weight name `weight`, as transformers saves them.
pub fn write_bnb4_weight(weight: &str, m: &Bnb4bit) -> Result<Vec<(String, Tensor)>> {
    let n = m.packed.len();
    let mut out = vec![
        (weight.to_string(), Tensor::from_vec(m.packed.clone(), &[n, 1])?),
        (format!("{weight}.quant_map"), Tensor::from_slice(&m.code, &[16])?),
    ];
    let mut state = serde_json::Map::new();
    state.insert("quant_type".into(), m.quant_type.name().into());
    state.insert("blocksize".into(), m.blocksize.into());
    state.insert("dtype".into(), "float32".into());
    state.insert("shape".into(), serde_json::json!(m.shape));
    match &m.absmax {
        Absmax::Plain(a) => out.push((format!("{weight}.absmax"), Tensor::from_slice(a, &[a.len()])?)),
        Absmax::Double { codes, nested_absmax, nested_code, nested_blocksize, offset } => {
            out.push((format!("{weight}.absmax"), Tensor::from_slice(codes, &[codes.len()])?));
            out.push((format!("{weight}.nested_absmax"), Tensor::from_slice(nested_absmax, &[nested_absmax.len()])?));
            out.push((format!("{weight}.nested_quant_map"), Tensor::from_slice(nested_code, &[nested_code.len()])?));
            state.insert("nested_blocksize".into(), (*nested_blocksize).into());
            state.insert("nested_dtype".into(), "float32".into());
            state.insert("nested_offset".into(), serde_json::json!(*offset as f64));
        }
    }
    // Python's json.dumps spacing, so the bytes equal what transformers writes.
    let json = python_json(&serde_json::Value::Object(state));
    let key = format!("{weight}.quant_state.bitsandbytes__{}", m.quant_type.name());
    let len = json.len();
    out.push((key, Tensor::from_vec(json.into_bytes(), &[len])?));
    Ok(out)
}

/// A flat JSON object written with `", "` and `": "` separators (Python's default), keys in insertion
/// order (serde_json keeps it sorted; write by hand instead).
fn python_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let order =
                ["quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"];
            let items: Vec<String> =
                order.iter().filter_map(|k| map.get(*k).map(|val| format!("\"{k}\": {}", python_json(val)))).collect();
            format!("{{{}}}", items.join(", "))
        }
        serde_json::Value::Array(a) => format!("[{}]", a.iter().map(python_json).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// Writes `model` as a Hugging Face folder in transformers' bitsandbytes 4-bit layout: packed
/// Linears as above, everything else as it is, `config.json` with `quantization_config` (so that
/// `from_pretrained` loads it as a 4-bit model), and the tokenizer files of `source_dir`.
pub fn save_pretrained_4bit(
    model: &mut dyn crate::models::Model,
    dir: &std::path::Path,
    source_dir: Option<&std::path::Path>,
    config: &super::Bnb4bitConfig,
) -> Result<()> {
    if model.config().architecture == crate::models::Architecture::Gpt2LMHeadModel {
        // Conv1D weights are stored [in, out]; transformers' 4-bit layout of them is not implemented.
        return Err(Error::invalid(OP, "writing GPT-2 in the 4-bit layout is not supported (its Conv1D weights)"));
    }
    let mut packed: Vec<(String, Vec<(String, Tensor)>)> = Vec::new();
    model.visit_linears(&mut |path, hooked| {
        let Some(p) = &hooked.base.packed else { return Ok(()) };
        let q = p.as_any().downcast_ref::<Bnb4bit>().ok_or_else(|| {
            Error::invalid(OP, format!("{path} holds a {} weight, which has no bitsandbytes layout", p.type_name()))
        })?;
        let name = format!("{path}.weight");
        packed.push((name.clone(), write_bnb4_weight(&name, q)?));
        Ok(())
    })?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, t) in model.named_parameters() {
        match packed.iter().position(|(n, _)| *n == name) {
            Some(i) => tensors.append(&mut packed[i].1),
            None => tensors.push((name, t.detach().contiguous()?)),
        }
    }
    if let Some((name, _)) = packed.iter().find(|(_, t)| !t.is_empty()) {
        return Err(Error::invalid(OP, format!("packed weight `{name}` is not among the model's parameters")));
    }
    crate::models::save_pretrained_tensors(
        model,
        &tensors,
        dir,
        source_dir,
        &[("quantization_config", config.to_json())],
    )
}
