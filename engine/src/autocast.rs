//! Mixed precision for the matmuls (`bf16=True` in Hugging Face terms). While an [`autocast`] guard
//! lives on this thread, `Tensor::matmul`, `lora_linear` and the packed (QLoRA) products round every
//! GEMM operand to bf16 (round to nearest even, as `to_dtype(BF16)`) and multiply with f32
//! accumulation into an f32 result: the tensor cores' native mode. Their backward GEMMs round their
//! operands the same way. Activations, gradients and parameters stay f32, so unlike PyTorch's
//! autocast (whose matmul outputs are bf16) nothing but the GEMM inputs loses precision. Attention's
//! GEMMs stay f32. On the host the rounded operands go to the f32 GEMM: a product of two bf16 values
//! is exact in f32, so host and GPU differ only in the order of the sums.
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::cell::Cell;

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The precision the matmuls' operands are rounded to on this thread, or `None` (plain f32).
pub fn autocast_dtype() -> Option<DType> {
    AUTOCAST.with(|a| a.get())
}

/// Restores the previous autocast state when dropped (nesting restores).
#[must_use = "autocast is on only while the guard lives"]
pub struct AutocastGuard {
    prev: Option<DType>,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.prev));
    }
}

/// Rounds the matmuls' operands to `dtype` until the guard is dropped. Only bf16: f16's narrow
/// exponent underflows small gradients unless the loss is scaled, which this engine does not do.
pub fn autocast(dtype: DType) -> Result<AutocastGuard> {
    match dtype {
        DType::BF16 => Ok(set(Some(dtype))),
        DType::F16 => Err(Error::invalid(
            "autocast",
            "f16 mixed precision needs loss scaling (gradients underflow f16's range), which is not supported; use bf16",
        )),
        other => Err(Error::invalid("autocast", format!("{other:?} is no mixed-precision type; only bf16 is supported"))),
    }
}

/// Sets the state to `dtype` (also `None`): a backward replays the state its forward ran under.
pub(crate) fn set(dtype: Option<DType>) -> AutocastGuard {
    AutocastGuard { prev: AUTOCAST.with(|a| a.replace(dtype)) }
}

/// `t` (f32) rounded to `dtype` as a GEMM operand: on a GPU the `dtype` tensor itself (the
/// tensor-core GEMM reads it), on the host widened back to f32 (the f32 GEMM reads it). Not
/// recorded: the rounding passes gradients straight through, as the caller's node does.
pub(crate) fn round_operand(t: &Tensor, dtype: DType) -> Result<Tensor> {
    let _g = crate::autograd::no_grad();
    let r = t.to_dtype(dtype)?;
    if r.device() == crate::Device::Cpu {
        r.to_dtype(DType::F32)
    } else {
        Ok(r)
    }
}

/// Rounds host values to bf16 in place (the host's packed products round each dequantized tile).
pub(crate) fn round_bf16(v: &mut [f32]) {
    use rayon::prelude::*;
    v.par_chunks_mut(1 << 14).for_each(|c| c.iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32()));
}
