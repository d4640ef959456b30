//! Index ops on the GPU, all through the embedding kernels: a source seen as a `[rows, width]` table
//! is read at row ids (`take_rows`: embedding, index_select, and gather with width 1 over flat
//! element indices) or has rows of a gradient added at row ids (`add_rows`: their backwards and
//! scatter_add). Ids are checked on the host, then uploaded as u32.
use crate::error::{Error, Result};
use crate::gpu::dense_f32;
use crate::gpu::with_device;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Row ids on the host (range-checked by the launchers) and on the device.
pub(crate) struct Ids {
    host: Vec<u32>,
    dev: Arc<cuda::Buffer<u32>>,
}

impl Ids {
    pub(crate) fn upload(op: &'static str, ordinal: u32, ids: &[usize]) -> Result<Ids> {
        let host = ids
            .iter()
            .map(|&i| {
                u32::try_from(i).map_err(|_| Error::invalid(op, format!("index {i} does not fit the GPU's u32 ids")))
            })
            .collect::<Result<Vec<u32>>>()?;
        let dev = with_device(op, ordinal, |d| d.upload(&host))?;
        Ok(Ids { host, dev: Arc::new(dev) })
    }
}

/// `out[j, :] = src[ids[j], :]` with `src` (any layout) seen row-major as `[rows, width]`; the
/// result has `shape` (`ids.len() · width` elements).
pub(crate) fn take_rows(
    op: &'static str,
    ordinal: u32,
    src: &Tensor,
    rows: usize,
    width: usize,
    ids: &Ids,
    shape: &[usize],
) -> Result<Tensor> {
    let table = dense_f32(op, ordinal, src)?;
    let n = ids.host.len() * width;
    let out = with_device(op, ordinal, |d| {
        let mut out = d.alloc::<f32>(n)?;
        if n > 0 {
            cuda::ops::embedding(d, &ids.dev, &ids.host, &table, &mut out, rows, width)?;
        }
        Ok(out)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, shape, None))
}

/// `base` (or zeros when `None`), seen as `[rows, width]`, with row `j` of `g` (`[ids.len(), width]`
/// row-major) added to row `ids[j]`; the result has `shape` (`rows · width` elements).
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_rows(
    op: &'static str,
    ordinal: u32,
    base: Option<&Tensor>,
    g: &Tensor,
    rows: usize,
    width: usize,
    ids: &Ids,
    shape: &[usize],
) -> Result<Tensor> {
    let gb = dense_f32(op, ordinal, g)?;
    let base = base.map(|b| dense_f32(op, ordinal, b)).transpose()?;
    let out = with_device(op, ordinal, |d| {
        let mut out = match &base {
            // A fresh copy: the kernel accumulates in place, and `base` may be shared.
            Some(b) if b.len() == rows * width => d.duplicate(b)?,
            Some(b) => {
                let strides = [1isize];
                let mut out = d.alloc::<f32>(rows * width)?;
                let view = cuda::ops::Strided { buf: b, offset: 0, strides: &strides };
                cuda::ops::unary(d, view, &mut out, &[rows * width], cuda::kernels::ops::Unary::Copy, 0.0)?;
                out
            }
            None => d.zeros::<f32>(rows * width)?,
        };
        if !ids.host.is_empty() && width > 0 {
            cuda::ops::embedding_bwd(d, &ids.dev, &ids.host, &gb, &mut out, rows, width)?;
        }
        Ok(out)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, shape, None))
}
