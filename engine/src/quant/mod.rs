//! Frozen low-bit weight matrices: bitsandbytes' 4-bit NF4/FP4 blocks (with double-quantized scales)
//! and, through the same trait, any other packed block format (llama.cpp's GGUF blocks).
//!
//! A packed matrix is never turned into a whole f32 model: the quantized Linear
//! (`ops::quant_matmul`) asks it for a few rows at a time and multiplies them straight away, so a
//! format only has to say how to dequantize a range of rows.
pub mod bnb4;
pub mod checkpoint;
pub mod codes;
#[cfg(feature = "cuda")]
mod device;
pub mod load;

pub use bnb4::{Absmax, Bnb4bit, QuantType};
pub use checkpoint::{read_bnb4_weight, save_pretrained_4bit, write_bnb4_weight};
#[cfg(feature = "cuda")]
pub use device::Bnb4bitGpu;
pub use load::{dequantize_model, quantize_model, Bnb4bitConfig, QuantizeReport};

use crate::error::Result;
use std::ops::Range;
use std::sync::Arc;

/// A frozen `[rows, cols]` (`[out_features, in_features]`) weight matrix stored in a packed format.
///
/// Implementations must be cheap to share (`Arc<dyn PackedMatrix>`) and thread-safe: forward passes
/// dequantize disjoint row ranges in parallel.
pub trait PackedMatrix: Send + Sync + std::fmt::Debug {
    /// `[rows, cols]` of the dequantized matrix.
    fn shape(&self) -> [usize; 2];

    /// Writes rows `rows` of the dequantized matrix, row-major, into `out`, whose length must be
    /// `rows.len() * cols`. Errors on a range outside the matrix or a buffer of the wrong size.
    fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) -> Result<()>;

    /// Bytes the packed form occupies in memory (codes, scales and their own quantization state).
    fn stored_bytes(&self) -> usize;

    /// A short name of the format, e.g. `nf4+dq/64`, `fp4/64`, `q4_k`.
    fn type_name(&self) -> &str;

    /// The concrete type, so that writers of a format's own checkpoint layout can recognise it.
    fn as_any(&self) -> &dyn std::any::Any;

    /// Where the packed data can be read from: the host, unless this is a copy made by
    /// [`to_device`] (whose host side stays readable through the methods above).
    fn device(&self) -> crate::Device {
        crate::Device::Cpu
    }

    /// For a copy on a GPU made by [`to_device`]: the host matrix it was made from.
    fn host_copy(&self) -> Option<Arc<dyn PackedMatrix>> {
        None
    }

    /// Writes rows `rows` of the dequantized matrix, row-major, into `out` on the GPU the matrix lives
    /// on (`dev` is that GPU's handle). Only matrices that [`to_device`] put on a GPU have this.
    #[cfg(feature = "cuda")]
    fn dequantize_rows_gpu(
        &self,
        dev: &cuda::Device,
        rows: Range<usize>,
        out: &mut cuda::Buffer<f32>,
    ) -> cuda::Result<()> {
        let _ = (dev, rows, out);
        Err(cuda::Error::invalid(
            "dequantize_rows_gpu",
            format!("a {} matrix has no GPU dequantization", self.type_name()),
        ))
    }
}

/// `m` where `device` can use it. To a GPU: a bitsandbytes 4-bit matrix gets its packed codes and
/// scales uploaded (the host matrix is kept alongside, so checkpoints, merging and `as_any` work as
/// before); other formats (GGUF blocks) have no GPU kernel and are an error naming the format. To
/// the host: the host matrix. A matrix already on `device` is returned as it is.
pub fn to_device(m: &Arc<dyn PackedMatrix>, device: crate::Device) -> Result<Arc<dyn PackedMatrix>> {
    if m.device() == device {
        return Ok(m.clone());
    }
    match device {
        crate::Device::Cpu => Ok(host_of(m)),
        #[cfg(feature = "cuda")]
        crate::Device::Cuda(ordinal) => Ok(Arc::new(device::Bnb4bitGpu::upload(host_of(m), ordinal)?)),
    }
}

/// The host matrix behind `m` (`m` itself when it is on the host).
fn host_of(m: &Arc<dyn PackedMatrix>) -> Arc<dyn PackedMatrix> {
    m.host_copy().unwrap_or_else(|| m.clone())
}

/// Checks the arguments of [`PackedMatrix::dequantize_rows`] for a `[rows, cols]` matrix.
pub fn check_rows(op: &'static str, shape: [usize; 2], rows: &Range<usize>, out_len: usize) -> Result<()> {
    if rows.start > rows.end || rows.end > shape[0] {
        return Err(crate::error::Error::invalid(
            op,
            format!("rows {}..{} out of range for a {}x{} matrix", rows.start, rows.end, shape[0], shape[1]),
        ));
    }
    if out_len != rows.len() * shape[1] {
        return Err(crate::error::Error::shape(
            op,
            format!(
                "output buffer holds {out_len} values, rows {rows:?} of width {} need {}",
                shape[1],
                rows.len() * shape[1]
            ),
        ));
    }
    Ok(())
}

/// The whole matrix in f32 (for merging and export; the forward pass never calls this).
pub fn dequantize_all(m: &dyn PackedMatrix) -> Result<crate::tensor::Tensor> {
    let [r, c] = m.shape();
    let mut out = vec![0f32; r * c];
    m.dequantize_rows(0..r, &mut out)?;
    crate::tensor::Tensor::from_vec(out, &[r, c])
}
