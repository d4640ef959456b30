//! The engine's error type. Every message names the op and the shapes/dtypes involved, because a
//! user debugging a model reads these first.
use crate::dtype::DType;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("{op}: expected dtype {expected:?}, got {got:?}")]
    DType { op: &'static str, expected: DType, got: DType },

    #[error("{op}: dimension {dim} out of range for a tensor of rank {rank}")]
    Dim { op: &'static str, dim: usize, rank: usize },

    #[error("{op}: index {index} out of range for size {size}")]
    Index { op: &'static str, index: i64, size: usize },

    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },

    #[error("{op}: the tensor is not contiguous (shape {shape:?}, strides {strides:?}); call .contiguous() first")]
    NotContiguous { op: &'static str, shape: Vec<usize>, strides: Vec<usize> },

    #[error("{path}: {detail}")]
    File { path: String, detail: String },

    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl Error {
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape { op, detail: detail.into() }
    }
    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid { op, detail: detail.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
