//! Comparisons on the GPU: one `compare_f32` launch over the broadcast shape, each operand read through
//! its own (broadcast) strides and offset, into a new u8 mask.
use crate::error::{Error, Result};
use crate::gpu::{map_pair, GpuBuf};
use crate::layout::Layout;
use crate::tensor::Tensor;
use cuda::kernels::ops::Compare;
use std::sync::Arc;

fn code(op: &'static str) -> Result<Compare> {
    Ok(match op {
        "ge" => Compare::Ge,
        "gt" => Compare::Gt,
        "eq" => Compare::Eq,
        _ => return Err(Error::invalid(op, "no GPU kernel for this comparison")),
    })
}

/// `op(a, b)` as 0 / 1 over `shape` (a and b f32, already broadcast to it by `la` / `lb`).
pub(crate) fn map(
    op: &'static str,
    ordinal: u32,
    (a, la): (&Tensor, &Layout),
    (b, lb): (&Tensor, &Layout),
    shape: &[usize],
) -> Result<Tensor> {
    let code = code(op)?;
    let out = map_pair::<u8>(op, ordinal, (a, la), (b, lb), shape, |d, av, bv, out| {
        cuda::ops::compare(d, av, bv, out, shape, code)
    })?;
    Ok(Tensor::from_gpu_buf(GpuBuf::U8(Arc::new(out)), ordinal, shape, None))
}
