//! `nn.Embedding`: a lookup table of vectors.
use super::{param, Module};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
}

impl Embedding {
    /// A trainable table initialised N(0, 1), like PyTorch.
    pub fn new(num_embeddings: usize, embedding_dim: usize, seed: u64) -> Result<Embedding> {
        if num_embeddings == 0 || embedding_dim == 0 {
            return Err(Error::invalid(
                "Embedding::new",
                format!("sizes must be positive, got {num_embeddings} × {embedding_dim}"),
            ));
        }
        let w = Tensor::randn(&[num_embeddings, embedding_dim], 0.0, 1.0, seed)?;
        Ok(Embedding { weight: w.requires_grad()? })
    }

    /// A table over a given `[num, dim]` tensor, used as it is (trainable if it is a variable).
    pub fn from_tensor(weight: Tensor) -> Result<Embedding> {
        if weight.rank() != 2 {
            return Err(Error::shape("Embedding", format!("weight must be [num, dim], got {:?}", weight.shape())));
        }
        Ok(Embedding { weight })
    }

    /// Like `from_tensor`, making the handle trainable or frozen as asked.
    pub fn from_values(weight: &Tensor, trainable: bool) -> Result<Embedding> {
        Embedding::from_tensor(param(weight.clone(), trainable)?)
    }

    pub fn num_embeddings(&self) -> usize {
        self.weight.shape()[0]
    }
    pub fn embedding_dim(&self) -> usize {
        self.weight.shape()[1]
    }

    /// `ids` (i64, any shape) → `ids.shape + [dim]`. Out-of-range ids are errors.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if ids.dtype() != DType::I64 {
            return Err(Error::DType { op: "Embedding", expected: DType::I64, got: ids.dtype() });
        }
        self.weight.embedding(ids)
    }
}

impl Module for Embedding {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
    fn parameters_mut(&mut self) -> Vec<&mut Tensor> {
        vec![&mut self.weight]
    }
}
