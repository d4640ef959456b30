//! Matmul on the GPU: the operands' layouts (views, transposes, broadcast batch dims) become the
//! strided, batched GEMM's arguments, so no operand is copied. The GEMM takes one batch stride per
//! operand: batch dims whose strides merge run as one launch, the others are looped over here.
use crate::error::{Error, Result};
use crate::gpu::{with_device, GpuBuf};
use crate::layout::Layout;
use crate::tensor::Tensor;
use cuda::{Buffer, GemmShape};
use std::sync::Arc;

/// Most matrices one launch takes (the grid's z extent).
const MAX_BATCH: usize = 65_535;

/// The two operands' buffers: f32, or bf16 (`true`) / f16 bits for the tensor-core GEMM.
enum Operands {
    F32(Arc<Buffer<f32>>, Arc<Buffer<f32>>),
    Half(Arc<Buffer<u16>>, Arc<Buffer<u16>>, bool),
}

/// `a [batch..., m, k] · b [batch..., k, n]` with `la`/`lb` already broadcast to the same batch dims
/// (stride 0 where broadcast); the result is a contiguous f32 tensor of `out_shape` (m·n per batch).
/// Both f32, or both bf16 / f16 (tensor cores, f32 accumulation).
pub(crate) fn matmul(
    ordinal: u32,
    (a, la): (&Tensor, &Layout),
    (b, lb): (&Tensor, &Layout),
    out_shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "matmul";
    let r = la.rank();
    let (m, k, n) = (la.shape()[r - 2], la.shape()[r - 1], lb.shape()[r - 1]);
    let total: usize = out_shape.iter().product();
    let operands = match (a.gpu_buf(OP)?, b.gpu_buf(OP)?) {
        (GpuBuf::F32(x), GpuBuf::F32(y)) => Operands::F32(x, y),
        (GpuBuf::BF16(x), GpuBuf::BF16(y)) => Operands::Half(x, y, true),
        (GpuBuf::F16(x), GpuBuf::F16(y)) => Operands::Half(x, y, false),
        (x, y) => {
            return Err(Error::invalid(
                OP,
                format!(
                    "GPU operands of dtypes {:?} and {:?}: need both f32, both bf16 or both f16",
                    x.dtype(),
                    y.dtype()
                ),
            ))
        }
    };
    let batch = &la.shape()[..r - 2];
    let mut c_strides = vec![m * n; batch.len()];
    for i in (0..batch.len().saturating_sub(1)).rev() {
        c_strides[i] = c_strides[i + 1] * batch[i + 1];
    }
    let (outer, inner) = batch_runs(batch, [&la.strides()[..r - 2], &lb.strides()[..r - 2], &c_strides]);
    let out = with_device(OP, ordinal, |d| {
        if k == 0 || total == 0 {
            return d.zeros::<f32>(total); // an empty sum: zeros
        }
        let mut out = d.alloc::<f32>(total)?;
        let g = GemmShape {
            m,
            n,
            k,
            batch: inner.size,
            a_m: la.strides()[r - 2],
            a_k: la.strides()[r - 1],
            b_k: lb.strides()[r - 2],
            b_n: lb.strides()[r - 1],
            c_m: n,
            a_batch: inner.strides[0],
            b_batch: inner.strides[1],
            c_batch: inner.strides[2],
            alpha: 1.0,
            beta: 0.0,
        };
        for offs in outer_offsets(&outer, [la.offset(), lb.offset(), 0]) {
            in_chunks(&g, offs, |[oa, ob, oc], part| match &operands {
                Operands::F32(x, y) => cuda::ops::gemm_f32_at(d, x, oa, y, ob, &mut out, oc, part),
                Operands::Half(x, y, bf16) => cuda::ops::gemm_half_at(d, x, oa, y, ob, &mut out, oc, part, *bf16),
            })?;
        }
        Ok(out)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, out_shape, None))
}

/// `g.batch` GEMMs from the given element offsets, in launches of at most `MAX_BATCH` matrices.
pub(crate) fn gemm_batches(
    d: &cuda::Device,
    (a, a_off): (&Buffer<f32>, usize),
    (b, b_off): (&Buffer<f32>, usize),
    (c, c_off): (&mut Buffer<f32>, usize),
    g: &GemmShape,
) -> cuda::Result<()> {
    in_chunks(g, [a_off, b_off, c_off], |[oa, ob, oc], part| cuda::ops::gemm_f32_at(d, a, oa, b, ob, c, oc, part))
}

/// A GEMM operand's device buffer: f32, or bf16 bits (autocast rounds f32 operands to these).
#[derive(Clone, Copy)]
pub(crate) enum Operand<'a> {
    F32(&'a Buffer<f32>),
    BF16(&'a Buffer<u16>),
}

impl<'a> Operand<'a> {
    /// The operand view of a tensor's buffer, or an error naming the dtype (only f32 and bf16 are GEMM
    /// operands here).
    pub(crate) fn of(op: &'static str, buf: &'a GpuBuf) -> Result<Self> {
        match buf {
            GpuBuf::F32(b) => Ok(Operand::F32(b)),
            GpuBuf::BF16(b) => Ok(Operand::BF16(b)),
            other => Err(Error::invalid(op, format!("a GEMM operand of dtype {:?}: need f32 or bf16", other.dtype()))),
        }
    }
}

/// One GEMM `c[c_off..] = α·a[a_off..]·b[b_off..] + β·c`: the f32 GEMM for two f32 operands, the
/// tensor-core one (f32 accumulation and result) for two bf16 operands.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_at(
    d: &cuda::Device,
    a: Operand,
    a_off: usize,
    b: Operand,
    b_off: usize,
    c: &mut Buffer<f32>,
    c_off: usize,
    g: &GemmShape,
) -> cuda::Result<()> {
    match (a, b) {
        (Operand::F32(x), Operand::F32(y)) => cuda::ops::gemm_f32_at(d, x, a_off, y, b_off, c, c_off, g),
        (Operand::BF16(x), Operand::BF16(y)) => cuda::ops::gemm_half_at(d, x, a_off, y, b_off, c, c_off, g, true),
        _ => Err(cuda::Error::invalid("gemm", "one f32 and one bf16 operand: both must be the same type")),
    }
}

/// Splits `g.batch` GEMMs from element offsets `offs` (A, B, C) into launches of at most `MAX_BATCH`.
fn in_chunks(
    g: &GemmShape,
    offs: [usize; 3],
    mut launch: impl FnMut([usize; 3], &GemmShape) -> cuda::Result<()>,
) -> cuda::Result<()> {
    for start in (0..g.batch).step_by(MAX_BATCH) {
        let part = GemmShape { batch: MAX_BATCH.min(g.batch - start), ..*g };
        launch([offs[0] + start * g.a_batch, offs[1] + start * g.b_batch, offs[2] + start * g.c_batch], &part)?;
    }
    Ok(())
}

/// A run of batch dims: how many matrices, and the step between them in each of A, B and C.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Run {
    pub(crate) size: usize,
    pub(crate) strides: [usize; 3],
}

/// Splits batch dims (with their strides in A, B and C) into the innermost run that one strided
/// launch covers and the outer dims looped over. Size-1 dims are dropped: they move nothing.
pub(crate) fn batch_runs(shape: &[usize], strides: [&[usize]; 3]) -> (Vec<Run>, Run) {
    let mut dims: Vec<Run> = (0..shape.len())
        .filter(|&i| shape[i] != 1)
        .map(|i| Run { size: shape[i], strides: [strides[0][i], strides[1][i], strides[2][i]] })
        .collect();
    let Some(mut inner) = dims.pop() else {
        return (Vec::new(), Run { size: 1, strides: [0; 3] });
    };
    while let Some(&d) = dims.last() {
        if (0..3).all(|o| d.strides[o] == inner.strides[o] * inner.size) {
            inner.size *= d.size;
            dims.pop();
        } else {
            break;
        }
    }
    (dims, inner)
}

/// The (A, B, C) element offsets of every index of the `outer` dims, row-major, from `base`.
pub(crate) fn outer_offsets(outer: &[Run], base: [usize; 3]) -> Vec<[usize; 3]> {
    let mut all = vec![base];
    for d in outer {
        all = all.iter().flat_map(|o| (0..d.size).map(move |i| [0, 1, 2].map(|x| o[x] + i * d.strides[x]))).collect();
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_dims_merge_while_all_three_strides_chain() {
        // A [2, 3] batch contiguous, B broadcast over both dims, C contiguous: one run of 6.
        let (outer, inner) = batch_runs(&[2, 3], [&[30, 10], &[0, 0], &[12, 4]]);
        assert!(outer.is_empty());
        assert_eq!(inner, Run { size: 6, strides: [10, 0, 4] });
        // B broadcast over the first dim only: the first dim is looped over.
        let (outer, inner) = batch_runs(&[2, 3], [&[30, 10], &[0, 7], &[12, 4]]);
        assert_eq!(outer, vec![Run { size: 2, strides: [30, 0, 12] }]);
        assert_eq!(inner, Run { size: 3, strides: [10, 7, 4] });
        assert_eq!(outer_offsets(&outer, [5, 1, 0]), vec![[5, 1, 0], [35, 1, 12]]);
        // Size-1 dims vanish; no batch at all is one matrix.
        assert_eq!(batch_runs(&[1, 4, 1], [&[9, 5, 9], &[9, 2, 9], &[9, 3, 9]]).1.size, 4);
        assert_eq!(batch_runs(&[], [&[], &[], &[]]), (Vec::new(), Run { size: 1, strides: [0; 3] }));
    }
}
