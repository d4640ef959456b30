//! Quantizing a loaded float model to 4 bits, as transformers' `BitsAndBytesConfig(load_in_4bit=True)`
//! does while loading: every Linear except the skipped ones gets a frozen packed weight.
use super::bnb4::{Bnb4bit, QuantType, BLOCKSIZES};
use super::PackedMatrix;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::nn::Linear;
use std::sync::Arc;

/// The 4-bit options of transformers' `BitsAndBytesConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct Bnb4bitConfig {
    /// `bnb_4bit_quant_type`: nf4 (default) or fp4.
    pub quant_type: QuantType,
    /// `bnb_4bit_use_double_quant`.
    pub double_quant: bool,
    /// bitsandbytes' block size (64; transformers does not expose it, `peft quantize` does).
    pub blocksize: usize,
    /// `bnb_4bit_compute_dtype`: float32, bfloat16 or float16. The engine computes in f32 whatever
    /// it says: dequantized weights and activations stay f32, so results are at least as precise as
    /// transformers' (which rounds activations and dequantized weights to this dtype); it is kept so
    /// that the config written with a checkpoint says what transformers should use.
    pub compute_dtype: String,
    /// `llm_int8_skip_modules`: modules whose path contains one of these stay in f32. `None` skips what
    /// transformers skips by default: the output head (`lm_head`, `classifier`, `score`), or for a
    /// bare encoder the module of its last parameter (BERT's pooler).
    pub skip_modules: Option<Vec<String>>,
}

impl Default for Bnb4bitConfig {
    fn default() -> Self {
        Bnb4bitConfig {
            quant_type: QuantType::Nf4,
            double_quant: false,
            blocksize: 64,
            compute_dtype: "float32".into(),
            skip_modules: None,
        }
    }
}

impl Bnb4bitConfig {
    pub fn validate(&self) -> Result<()> {
        if !BLOCKSIZES.contains(&self.blocksize) {
            return Err(Error::invalid(
                "bnb 4-bit config",
                format!("blocksize {} is not one of {BLOCKSIZES:?}", self.blocksize),
            ));
        }
        if !["float32", "bfloat16", "float16"].contains(&self.compute_dtype.as_str()) {
            return Err(Error::invalid(
                "bnb_4bit_compute_dtype",
                format!("`{}` is not one of float32, bfloat16, float16", self.compute_dtype),
            ));
        }
        Ok(())
    }

    /// Reads a `quantization_config` object (config.json, or the same keys in a run file).
    pub fn from_json(v: &serde_json::Value) -> Result<Bnb4bitConfig> {
        let d = Bnb4bitConfig::default();
        let str_field = |k: &str| v.get(k).and_then(|x| x.as_str());
        let skip = match v.get("llm_int8_skip_modules") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Array(a)) => Some(
                a.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| Error::invalid("llm_int8_skip_modules", "must be a list of strings"))?,
            ),
            Some(other) => return Err(Error::invalid("llm_int8_skip_modules", format!("must be a list, got {other}"))),
        };
        let c = Bnb4bitConfig {
            quant_type: match str_field("bnb_4bit_quant_type") {
                Some(s) => QuantType::parse(s)?,
                None => d.quant_type,
            },
            double_quant: v.get("bnb_4bit_use_double_quant").and_then(|x| x.as_bool()).unwrap_or(false),
            blocksize: v.get("bnb_4bit_blocksize").and_then(|x| x.as_u64()).map(|b| b as usize).unwrap_or(d.blocksize),
            compute_dtype: str_field("bnb_4bit_compute_dtype").unwrap_or("float32").to_string(),
            skip_modules: skip,
        };
        c.validate()?;
        Ok(c)
    }

    /// The `quantization_config` transformers writes into config.json for this setting.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "_load_in_4bit": true,
            "_load_in_8bit": false,
            "bnb_4bit_compute_dtype": self.compute_dtype,
            "bnb_4bit_quant_storage": "uint8",
            "bnb_4bit_quant_type": self.quant_type.name(),
            "bnb_4bit_use_double_quant": self.double_quant,
            "llm_int8_enable_fp32_cpu_offload": false,
            "llm_int8_has_fp16_weight": false,
            "llm_int8_skip_modules": self.skip_modules,
            "llm_int8_threshold": 6.0,
            "load_in_4bit": true,
            "load_in_8bit": false,
            "quant_method": "bitsandbytes",
        })
    }
}

/// What quantizing a model did.
#[derive(Clone, Debug, Default)]
pub struct QuantizeReport {
    /// Paths of the Linears now packed.
    pub quantized: Vec<String>,
    /// Paths of the Linears left in f32.
    pub skipped: Vec<String>,
    /// Parameters of the packed weights and the bytes they take.
    pub packed_params: usize,
    pub packed_bytes: usize,
}

impl QuantizeReport {
    /// Bits per quantized parameter: (codes + scales + their quantization state) · 8 / parameters.
    pub fn bits_per_param(&self) -> f64 {
        if self.packed_params == 0 {
            return 0.0;
        }
        self.packed_bytes as f64 * 8.0 / self.packed_params as f64
    }
}

/// Whether transformers would leave the Linear at `path` unquantized.
pub fn is_skipped(path: &str, skip: &[String]) -> bool {
    skip.iter().any(|s| path.contains(s.as_str()))
}

/// What transformers keeps in full precision when `llm_int8_skip_modules` is not given
/// (`get_keys_to_not_convert`): the output head, or for a model without one (a bare encoder) the
/// module of its last parameter (BERT's pooler).
fn default_skip(model: &mut dyn Model) -> Vec<String> {
    let heads = model.head_paths();
    if !heads.is_empty() {
        return heads;
    }
    let last =
        model.named_parameters().last().map(|(n, _)| n.rsplit_once('.').map_or(n.clone(), |(m, _)| m.to_string()));
    match last {
        Some(module) if model.linear_paths().contains(&module) => vec![module],
        _ => Vec::new(),
    }
}

/// Packs every Linear of `model` (weights already packed are kept and counted). Call before
/// adding adapters: the Linear's base weight is replaced.
pub fn quantize_model(model: &mut dyn Model, config: &Bnb4bitConfig) -> Result<QuantizeReport> {
    config.validate()?;
    let skip = match &config.skip_modules {
        Some(s) => s.clone(),
        None => default_skip(model),
    };
    let mut report = QuantizeReport::default();
    model.visit_linears(&mut |path, hooked| {
        if let Some(p) = &hooked.base.packed {
            report.packed_params += p.shape()[0] * p.shape()[1];
            report.packed_bytes += p.stored_bytes();
            report.quantized.push(path.to_string());
            return Ok(());
        }
        if is_skipped(path, &skip) {
            report.skipped.push(path.to_string());
            return Ok(());
        }
        let w = hooked.base.weight.detach();
        let shape = [w.shape()[0], w.shape()[1]];
        let values = w.contiguous()?.to_vec_f32()?;
        let q = Bnb4bit::quantize(&values, shape, config.quant_type, config.blocksize, config.double_quant)
            .map_err(|e| Error::invalid("quantize_model", format!("{path}: {e}")))?;
        report.packed_params += q.numel();
        report.packed_bytes += q.stored_bytes();
        let bias = hooked.base.bias.as_ref().map(|b| b.detach());
        hooked.base = Linear::from_packed(Arc::new(q), bias)?;
        report.quantized.push(path.to_string());
        Ok(())
    })?;
    Ok(report)
}

/// Replaces every packed Linear of `model` by an f32 Linear holding its dequantized weight (for
/// export as a float model). Returns how many layers changed.
pub fn dequantize_model(model: &mut dyn Model) -> Result<usize> {
    let mut changed = 0;
    model.visit_linears(&mut |_, hooked| {
        if hooked.base.is_packed() {
            let bias = hooked.base.bias.clone();
            hooked.base = Linear::from_tensors(hooked.base.dense_weight()?, bias)?;
            changed += 1;
        }
        Ok(())
    })?;
    Ok(changed)
}
