//! where_cond on the GPU: one `where_f32` launch over the broadcast shape, the u8 mask and both values
//! read through their own (broadcast) strides and offsets.
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::{strides_of, with_device, GpuBuf, Strided};
use crate::layout::Layout;
use crate::tensor::Tensor;
use cuda::kernels::ops::Compare;
use cuda::ops::Mask;
use std::sync::Arc;

const OP: &str = "where_cond";

/// The mask as the kernel reads it: u8 as is; any other dtype becomes `mask != 0` as u8 (NaN counts as
/// nonzero, as on the host), through f32.
pub(crate) fn u8_mask(ordinal: u32, mask: &Tensor) -> Result<Tensor> {
    if mask.dtype() == DType::U8 {
        return Ok(mask.clone());
    }
    let m = mask.to_dtype(DType::F32)?;
    let buf = m.gpu_f32(OP)?;
    let strides = strides_of(m.layout());
    let (n, zero_strides) = (m.numel(), vec![0isize; m.rank()]);
    let out = with_device(OP, ordinal, |d| {
        let zero = d.zeros::<f32>(1)?;
        let mut out = d.alloc::<u8>(n)?;
        let mv = Strided { buf: &buf, offset: m.layout().offset(), strides: &strides };
        let zv = Strided { buf: &zero, offset: 0, strides: &zero_strides };
        cuda::ops::compare(d, mv, zv, &mut out, m.shape(), Compare::Ne)?;
        Ok(out)
    })?;
    Ok(Tensor::from_gpu_buf(GpuBuf::U8(Arc::new(out)), ordinal, m.shape(), None))
}

/// `mask ? a : b` over `shape`; `mask` is u8 (see [`u8_mask`]), a and b f32, each broadcast by its layout.
pub(crate) fn select(
    ordinal: u32,
    (mask, lm): (&Tensor, &Layout),
    (a, la): (&Tensor, &Layout),
    (b, lb): (&Tensor, &Layout),
    shape: &[usize],
) -> Result<Tensor> {
    let mb = match mask.gpu_buf(OP)? {
        GpuBuf::U8(m) => m,
        other => return Err(Error::DType { op: OP, expected: DType::U8, got: other.dtype() }),
    };
    let (ab, bb) = (a.gpu_f32(OP)?, b.gpu_f32(OP)?);
    let (sm, sa, sb) = (strides_of(lm), strides_of(la), strides_of(lb));
    let n = shape.iter().product();
    let out = with_device(OP, ordinal, |d| {
        let mut out = d.alloc::<f32>(n)?;
        let mv = Mask { buf: &mb, offset: lm.offset(), strides: &sm };
        let av = Strided { buf: &ab, offset: la.offset(), strides: &sa };
        let bv = Strided { buf: &bb, offset: lb.offset(), strides: &sb };
        cuda::ops::where_select(d, mv, av, bv, &mut out, shape)?;
        Ok(out)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, shape, None))
}
