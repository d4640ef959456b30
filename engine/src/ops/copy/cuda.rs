//! Materializing copies on the GPU: a strided f32 gather (`unary_f32`'s copy op), strided writes into a
//! slice of a larger output (cat, stack, narrow's backward) and the bf16/f16/u8 casts.
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::{strides_of, with_device, GpuBuf, Strided};
use crate::tensor::Tensor;
use cuda::kernels::ops::Unary;
use std::sync::Arc;

/// The f32 elements of `buf` viewed through `t`'s layout, gathered row-major.
fn gather_f32(op: &'static str, ordinal: u32, buf: &cuda::Buffer<f32>, t: &Tensor) -> Result<cuda::Buffer<f32>> {
    let strides = strides_of(t.layout());
    with_device(op, ordinal, |d| {
        let mut out = d.alloc::<f32>(t.numel())?;
        let x = Strided { buf, offset: t.layout().offset(), strides: &strides };
        cuda::ops::unary(d, x, &mut out, t.shape(), Unary::Copy, 0.0)?;
        Ok(out)
    })
}

/// `t` (f32 on GPU `ordinal`, any layout) as a new contiguous tensor.
pub(crate) fn contiguous(ordinal: u32, t: &Tensor) -> Result<Tensor> {
    const OP: &str = "contiguous";
    if t.dtype() != DType::F32 {
        return Err(Error::invalid(
            OP,
            format!("{:?} views on the GPU have no copy kernel; convert to f32 first (to_dtype)", t.dtype()),
        ));
    }
    let buf = t.gpu_f32(OP)?;
    let out = gather_f32(OP, ordinal, &buf, t)?;
    Ok(Tensor::from_gpu(out, ordinal, t.shape(), None))
}

/// `t` converted to `dtype`: f32 <-> bf16/f16 (round to nearest even), any layout.
pub(crate) fn to_dtype(ordinal: u32, t: &Tensor, dtype: DType) -> Result<Tensor> {
    const OP: &str = "to_dtype";
    let unsupported = || {
        Error::invalid(OP, format!("{:?} -> {dtype:?} on the GPU: only f32 <-> bf16/f16/u8 have kernels", t.dtype()))
    };
    match (t.gpu_buf(OP)?, dtype) {
        (GpuBuf::F32(_), DType::BF16 | DType::F16) => {
            let src = t.contiguous()?;
            let (x, bf16) = (src.gpu_f32(OP)?, dtype == DType::BF16);
            let n = src.numel();
            let offset = src.layout().offset();
            let out = with_device(OP, ordinal, |d| {
                // The cast kernel converts a whole buffer: a view at an offset is gathered first.
                let gathered;
                let whole: &cuda::Buffer<f32> = if offset == 0 && x.len() == n {
                    &x
                } else {
                    gathered = {
                        let mut g = d.alloc::<f32>(n)?;
                        let strides = [1isize];
                        cuda::ops::unary(
                            d,
                            Strided { buf: &x, offset, strides: &strides },
                            &mut g,
                            &[n],
                            Unary::Copy,
                            0.0,
                        )?;
                        g
                    };
                    &gathered
                };
                let mut y = d.alloc::<u16>(n)?;
                cuda::ops::cast_to_half(d, whole, &mut y, bf16)?;
                Ok(y)
            })?;
            let buf = if bf16 { GpuBuf::BF16(Arc::new(out)) } else { GpuBuf::F16(Arc::new(out)) };
            Ok(Tensor::from_gpu_buf(buf, ordinal, t.shape(), None))
        }
        (GpuBuf::BF16(x) | GpuBuf::F16(x), DType::F32) => {
            let bf16 = t.dtype() == DType::BF16;
            // Widen the whole storage, then gather the view in f32.
            let wide = with_device(OP, ordinal, |d| {
                let mut y = d.alloc::<f32>(x.len())?;
                cuda::ops::cast_from_half(d, &x, &mut y, bf16)?;
                Ok(y)
            })?;
            let out = if t.is_contiguous() && t.layout().offset() == 0 && wide.len() == t.numel() {
                wide
            } else {
                gather_f32(OP, ordinal, &wide, t)?
            };
            Ok(Tensor::from_gpu(out, ordinal, t.shape(), None))
        }
        (GpuBuf::U8(x), DType::F32) => {
            let (n, offset) = (t.numel(), t.layout().offset());
            let out = if t.is_contiguous() {
                with_device(OP, ordinal, |d| {
                    let mut y = d.alloc::<f32>(n)?;
                    cuda::ops::cast_u8_to_f32(d, &x, offset, &mut y, n)?;
                    Ok(y)
                })?
            } else {
                // Widen the whole storage, then gather the view in f32.
                let wide = with_device(OP, ordinal, |d| {
                    let mut y = d.alloc::<f32>(x.len())?;
                    cuda::ops::cast_u8_to_f32(d, &x, 0, &mut y, x.len())?;
                    Ok(y)
                })?;
                gather_f32(OP, ordinal, &wide, t)?
            };
            Ok(Tensor::from_gpu(out, ordinal, t.shape(), None))
        }
        (GpuBuf::F32(_), DType::U8) => {
            let src = t.contiguous()?;
            let (x, n, offset) = (src.gpu_f32(OP)?, src.numel(), src.layout().offset());
            let out = with_device(OP, ordinal, |d| {
                let mut y = d.alloc::<u8>(n)?;
                cuda::ops::cast_f32_to_u8(d, &x, offset, &mut y, n)?;
                Ok(y)
            })?;
            Ok(Tensor::from_gpu_buf(GpuBuf::U8(Arc::new(out)), ordinal, t.shape(), None))
        }
        (GpuBuf::BF16(_) | GpuBuf::F16(_), DType::BF16 | DType::F16 | DType::U8)
        | (GpuBuf::U8(_), DType::BF16 | DType::F16) => t.to_dtype(DType::F32)?.to_dtype(dtype),
        _ => Err(unsupported()),
    }
}

/// A contiguous f32 tensor of `shape` on GPU `ordinal` with each `(part, start)` written at `start`
/// along `dim` (each part has `shape` outside `dim`; any layout, read in place). Elements no part
/// covers are zero when `zeroed`, else unwritten: callers whose parts tile the output pass false.
pub(crate) fn write_slices(
    op: &'static str,
    ordinal: u32,
    parts: &[(&Tensor, usize)],
    shape: &[usize],
    dim: usize,
    zeroed: bool,
) -> Result<Tensor> {
    let mut out_strides = vec![1isize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        out_strides[d] = out_strides[d + 1] * shape[d + 1] as isize;
    }
    let inputs: Vec<_> = parts.iter().map(|&(p, start)| Ok((p.gpu_f32(op)?, p, start))).collect::<Result<Vec<_>>>()?;
    let n = shape.iter().product();
    let out = with_device(op, ordinal, |d| {
        let mut out = if zeroed { d.zeros::<f32>(n)? } else { d.alloc::<f32>(n)? };
        for (buf, p, start) in &inputs {
            let strides = strides_of(p.layout());
            let x = Strided { buf, offset: p.layout().offset(), strides: &strides };
            let at = start * out_strides.get(dim).map_or(0, |&s| s as usize);
            cuda::ops::copy_strided(d, x, &mut out, at, &out_strides, p.shape())?;
        }
        Ok(out)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, shape, None))
}
