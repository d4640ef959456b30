//! Frozen low-bit weight matrices: bitsandbytes' 4-bit NF4/FP4 blocks (with double-quantized scales)
//! and, through the same trait, any other packed block format (llama.cpp's GGUF blocks).
//!
//! A packed matrix is never turned into a whole f32 model: the quantized Linear
//! (`ops::quant_matmul`) asks it for a few rows at a time and multiplies them straight away, so a
//! format only has to say how to dequantize a range of rows.
pub mod bnb4;
pub mod checkpoint;
pub mod codes;
pub mod load;

pub use bnb4::{Absmax, Bnb4bit, QuantType};
pub use checkpoint::{read_bnb4_weight, save_pretrained_4bit, write_bnb4_weight};
pub use load::{dequantize_model, quantize_model, Bnb4bitConfig, QuantizeReport};

use crate::error::Result;
use std::ops::Range;

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
