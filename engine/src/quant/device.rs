//! A bitsandbytes 4-bit matrix on a GPU: its packed codes and scales uploaded as they are (4 bits a
//! weight plus the block scales, double-quantized ones still 8-bit), dequantized by
//! kernels/cu/dequant.cu into f32 a range of rows at a time, bit for bit as the host does.
//!
//! Why a wrapper around the host matrix rather than a cache keyed by it: a Linear holds its packed
//! weight as an `Arc<dyn PackedMatrix>`, so moving a model replaces that handle with this one and the
//! device buffers live exactly as long as the layer (no cache to invalidate or leak). The host
//! matrix stays inside and answers every host-side question (`dequantize_rows` for merging and
//! export, `as_any` for the 4-bit checkpoint writer, sizes and names), so nothing that reads a
//! quantized model needs to know where it runs; moving back to the host returns it.
use super::{Absmax, Bnb4bit, PackedMatrix};
use crate::error::{Error, Result};
use crate::gpu::with_device;
use std::ops::Range;
use std::sync::Arc;

const OP: &str = "quant::to_device";

/// The absmax state on the device, as in [`Absmax`].
enum AbsmaxGpu {
    Plain(cuda::Buffer<f32>),
    Double {
        codes: cuda::Buffer<u8>,
        nested_absmax: cuda::Buffer<f32>,
        nested_code: cuda::Buffer<f32>,
        nested_blocksize: usize,
        offset: f32,
    },
}

/// A [`Bnb4bit`] whose data also sit on GPU `ordinal` (made by [`super::to_device`]).
pub struct Bnb4bitGpu {
    /// The host matrix (a `Bnb4bit`).
    host: Arc<dyn PackedMatrix>,
    ordinal: u32,
    packed: cuda::Buffer<u8>,
    levels: cuda::Buffer<f32>,
    absmax: AbsmaxGpu,
    blocksize: usize,
}

impl std::fmt::Debug for Bnb4bitGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bnb4bitGpu({} {:?} on cuda:{})", self.host.type_name(), self.host.shape(), self.ordinal)
    }
}

impl Bnb4bitGpu {
    /// Uploads `host`, which must be a [`Bnb4bit`]: other formats have no GPU kernel.
    pub(super) fn upload(host: Arc<dyn PackedMatrix>, ordinal: u32) -> Result<Bnb4bitGpu> {
        let Some(q) = host.as_any().downcast_ref::<Bnb4bit>() else {
            return Err(Error::invalid(
                OP,
                format!(
                    "a {} packed weight ({:?}) has no GPU kernel (only bitsandbytes NF4/FP4 4-bit weights run on the GPU); keep this model on the host",
                    host.type_name(),
                    host.shape()
                ),
            ));
        };
        let (packed, levels, absmax) = with_device(OP, ordinal, |d| {
            let absmax = match &q.absmax {
                Absmax::Plain(v) => AbsmaxGpu::Plain(d.upload(v)?),
                Absmax::Double { codes, nested_absmax, nested_code, nested_blocksize, offset } => AbsmaxGpu::Double {
                    codes: d.upload(codes)?,
                    nested_absmax: d.upload(nested_absmax)?,
                    nested_code: d.upload(nested_code)?,
                    nested_blocksize: *nested_blocksize,
                    offset: *offset,
                },
            };
            Ok((d.upload(&q.packed)?, d.upload(&q.levels())?, absmax))
        })?;
        let blocksize = q.blocksize;
        Ok(Bnb4bitGpu { host, ordinal, packed, levels, absmax, blocksize })
    }

    /// The launcher's view of the device data.
    fn view(&self) -> cuda::ops::Bnb4<'_> {
        let absmax = match &self.absmax {
            AbsmaxGpu::Plain(v) => cuda::ops::Bnb4Absmax::Plain(v),
            AbsmaxGpu::Double { codes, nested_absmax, nested_code, nested_blocksize, offset } => {
                cuda::ops::Bnb4Absmax::Double {
                    codes,
                    nested_code,
                    nested_absmax,
                    nested_blocksize: *nested_blocksize,
                    offset: *offset,
                }
            }
        };
        let [rows, cols] = self.host.shape();
        cuda::ops::Bnb4 {
            packed: &self.packed,
            levels: &self.levels,
            absmax,
            numel: rows * cols,
            blocksize: self.blocksize,
        }
    }
}

impl PackedMatrix for Bnb4bitGpu {
    fn shape(&self) -> [usize; 2] {
        self.host.shape()
    }

    fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
        self.host.dequantize_rows(rows, out)
    }

    fn stored_bytes(&self) -> usize {
        self.host.stored_bytes()
    }

    fn type_name(&self) -> &str {
        self.host.type_name()
    }

    /// The host matrix's: the checkpoint writer downcasts to [`Bnb4bit`] wherever the model runs.
    fn as_any(&self) -> &dyn std::any::Any {
        self.host.as_any()
    }

    fn device(&self) -> crate::Device {
        crate::Device::Cuda(self.ordinal)
    }

    fn host_copy(&self) -> Option<Arc<dyn PackedMatrix>> {
        Some(self.host.clone())
    }

    fn dequantize_rows_gpu(
        &self,
        dev: &cuda::Device,
        rows: Range<usize>,
        out: &mut cuda::Buffer<f32>,
    ) -> cuda::Result<()> {
        const OP: &str = "Bnb4bit::dequantize_rows_gpu";
        let [r, cols] = self.host.shape();
        if rows.start > rows.end || rows.end > r {
            return Err(cuda::Error::invalid(OP, format!("rows {rows:?} out of range for a {r}x{cols} matrix")));
        }
        if dev.ordinal() != self.ordinal {
            return Err(cuda::Error::invalid(
                OP,
                format!("the matrix is on cuda:{}, the handle is cuda:{}", self.ordinal, dev.ordinal()),
            ));
        }
        cuda::ops::dequant_bnb4(dev, &self.view(), rows.start * cols, rows.len() * cols, out)
    }
}
