//! GGUF weight blocks kept as they are in the memory-mapped file, as frozen [`PackedMatrix`]
//! weights: the quantized Linear (`ops::quant_matmul`) dequantizes a few rows at a time inside the
//! matmul, as for NF4, so a QLoRA model on a GGUF file holds its Linears at the file's size.
//!
//! A row of a `[out, in]` weight is `in / block` whole blocks, contiguous in the file, so rows
//! are read independently; Q and K rows are read in Hugging Face order through the inverse of
//! llama.cpp's permutation (see [`super::llama`]).
use super::{dequantize_into, GgmlType, GgufFile};
use crate::error::{Error, Result};
use crate::quant::{check_rows, PackedMatrix};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// A 2-D GGUF tensor of a block type, read in place.
pub struct GgufMatrix {
    map: Arc<memmap2::Mmap>,
    /// Byte offset of the tensor in the file.
    start: usize,
    ty: GgmlType,
    type_name: String,
    shape: [usize; 2],
    row_bytes: usize,
    /// For each row (Hugging Face order), the row of the file that holds it; `None`: the same.
    file_row: Option<Vec<u32>>,
    name: String,
}

impl std::fmt::Debug for GgufMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufMatrix({} {} {:?})", self.name, self.type_name, self.shape)
    }
}

impl GgufMatrix {
    /// The matrix `name` (a 2-D tensor of a supported type), with its rows unpermuted as
    /// llama.cpp's Q/K permutation over `unpermute_heads` heads requires (`None`: as stored).
    pub fn new(file: &GgufFile, name: &str, unpermute_heads: Option<usize>) -> Result<GgufMatrix> {
        let t = file.info(name).ok_or_else(|| file.err(format!("no tensor named `{name}`")))?;
        let (Some((per_block, block_bytes)), [cols, rows]) = (t.ggml_type.block(), t.dims.as_slice()) else {
            return Err(file.err(format!(
                "tensor `{name}` ({}, dims {:?}) is not a 2-D matrix of a supported type ({})",
                t.ggml_type.describe(),
                t.dims,
                GgmlType::SUPPORTED
            )));
        };
        let (rows, cols) = (*rows, *cols);
        let file_row = match unpermute_heads {
            None => None,
            Some(h) if h > 0 && rows.is_multiple_of(2 * h) && rows <= u32::MAX as usize => {
                let half = rows / h / 2;
                let mut order = vec![0u32; rows];
                for head in 0..h {
                    for j in 0..2 {
                        for i in 0..half {
                            order[head * 2 * half + j * half + i] = (head * 2 * half + 2 * i + j) as u32;
                        }
                    }
                }
                Some(order)
            }
            Some(h) => return Err(file.err(format!("tensor `{name}`: {rows} rows do not split into {h} heads"))),
        };
        Ok(GgufMatrix {
            map: file.map.clone(),
            start: file.data_start + t.offset,
            ty: t.ggml_type,
            type_name: t.ggml_type.describe().to_lowercase(),
            shape: [rows, cols],
            row_bytes: cols / per_block * block_bytes,
            file_row,
            name: name.to_string(),
        })
    }
}

impl PackedMatrix for GgufMatrix {
    fn shape(&self) -> [usize; 2] {
        self.shape
    }

    fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
        check_rows("GgufMatrix::dequantize_rows", self.shape, &rows, out.len())?;
        let cols = self.shape[1];
        // Rows in parallel, as the bitsandbytes matrices do: this runs inside every packed matmul.
        rows.into_par_iter().zip(out.par_chunks_exact_mut(cols)).try_for_each(|(r, y)| {
            let src = self.file_row.as_ref().map_or(r, |o| o[r] as usize);
            let at = self.start + src * self.row_bytes;
            let bytes = self.map.get(at..at + self.row_bytes).ok_or_else(|| {
                Error::invalid("GgufMatrix", format!("row {src} of `{}` is outside the mapped file", self.name))
            })?;
            dequantize_into(self.ty, bytes, y, &self.name)
        })
    }

    fn stored_bytes(&self) -> usize {
        self.shape[0] * self.row_bytes + self.file_row.as_ref().map_or(0, |o| o.len() * 4)
    }

    fn type_name(&self) -> &str {
        &self.type_name
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
