//! `nn.LayerNorm` and `nn.RMSNorm` over the last dim.
use super::{param, Module};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn check_vec(op: &'static str, what: &str, t: &Tensor, dim: usize) -> Result<()> {
    if t.shape() != [dim] {
        return Err(Error::shape(op, format!("{what} must have shape [{dim}], got {:?}", t.shape())));
    }
    Ok(())
}

fn check_input(op: &'static str, x: &Tensor, dim: usize) -> Result<()> {
    if x.rank() == 0 || x.shape()[x.rank() - 1] != dim {
        return Err(Error::shape(
            op,
            format!("input of shape {:?} does not end in the normalized size {dim}", x.shape()),
        ));
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// `[dim]`, or `None` without elementwise affine.
    pub weight: Option<Tensor>,
    /// `[dim]`, or `None`.
    pub bias: Option<Tensor>,
    pub eps: f32,
    dim: usize,
}

impl LayerNorm {
    /// Trainable weight (ones) and bias (zeros), like `nn.LayerNorm(dim, eps)`.
    pub fn new(dim: usize, eps: f32) -> Result<LayerNorm> {
        if dim == 0 {
            return Err(Error::invalid("LayerNorm::new", "the normalized size must be positive"));
        }
        Ok(LayerNorm {
            weight: Some(Tensor::ones(&[dim], DType::F32)?.requires_grad()?),
            bias: Some(Tensor::zeros(&[dim], DType::F32).requires_grad()?),
            eps,
            dim,
        })
    }

    /// Without weight and bias (`elementwise_affine=False`).
    pub fn without_affine(dim: usize, eps: f32) -> Result<LayerNorm> {
        if dim == 0 {
            return Err(Error::invalid("LayerNorm::without_affine", "the normalized size must be positive"));
        }
        Ok(LayerNorm { weight: None, bias: None, eps, dim })
    }

    /// Over given tensors, used as they are (trainable if they are variables). At least one of
    /// `weight` and `bias` gives the normalized size.
    pub fn from_tensors(weight: Option<Tensor>, bias: Option<Tensor>, eps: f32) -> Result<LayerNorm> {
        let dim = match (&weight, &bias) {
            (Some(w), _) if w.rank() == 1 => w.shape()[0],
            (None, Some(b)) if b.rank() == 1 => b.shape()[0],
            (None, None) => {
                return Err(Error::invalid("LayerNorm", "from_tensors needs a weight or a bias; use without_affine"))
            }
            _ => return Err(Error::shape("LayerNorm", "weight and bias must be 1-D")),
        };
        if let Some(w) = &weight {
            check_vec("LayerNorm", "weight", w, dim)?;
        }
        if let Some(b) = &bias {
            check_vec("LayerNorm", "bias", b, dim)?;
        }
        Ok(LayerNorm { weight, bias, eps, dim })
    }

    /// Like `from_tensors`, making the handles trainable or frozen as asked.
    pub fn from_values(weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32, trainable: bool) -> Result<LayerNorm> {
        let w = weight.map(|t| param(t.clone(), trainable)).transpose()?;
        let b = bias.map(|t| param(t.clone(), trainable)).transpose()?;
        LayerNorm::from_tensors(w, b, eps)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_input("LayerNorm", x, self.dim)?;
        x.layer_norm(self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

impl Module for LayerNorm {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        if let Some(w) = &self.weight {
            v.push(("weight".to_string(), w.clone()));
        }
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
    fn parameters_mut(&mut self) -> Vec<&mut Tensor> {
        self.weight.iter_mut().chain(self.bias.iter_mut()).collect()
    }
}

#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// `[dim]`, or `None` without elementwise affine.
    pub weight: Option<Tensor>,
    pub eps: f32,
    dim: usize,
}

impl RmsNorm {
    /// Trainable weight (ones), like `nn.RMSNorm(dim, eps)`.
    pub fn new(dim: usize, eps: f32) -> Result<RmsNorm> {
        if dim == 0 {
            return Err(Error::invalid("RmsNorm::new", "the normalized size must be positive"));
        }
        Ok(RmsNorm { weight: Some(Tensor::ones(&[dim], DType::F32)?.requires_grad()?), eps, dim })
    }

    /// Without a weight (`elementwise_affine=False`).
    pub fn without_affine(dim: usize, eps: f32) -> Result<RmsNorm> {
        if dim == 0 {
            return Err(Error::invalid("RmsNorm::without_affine", "the normalized size must be positive"));
        }
        Ok(RmsNorm { weight: None, eps, dim })
    }

    /// Over a given `[dim]` weight, used as it is (trainable if it is a variable).
    pub fn from_tensor(weight: Tensor, eps: f32) -> Result<RmsNorm> {
        if weight.rank() != 1 {
            return Err(Error::shape("RmsNorm", format!("weight must be 1-D, got {:?}", weight.shape())));
        }
        let dim = weight.shape()[0];
        Ok(RmsNorm { weight: Some(weight), eps, dim })
    }

    /// Like `from_tensor`, making the handle trainable or frozen as asked.
    pub fn from_values(weight: &Tensor, eps: f32, trainable: bool) -> Result<RmsNorm> {
        RmsNorm::from_tensor(param(weight.clone(), trainable)?, eps)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_input("RmsNorm", x, self.dim)?;
        x.rms_norm(self.weight.as_ref(), self.eps)
    }
}

impl Module for RmsNorm {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.weight.iter().map(|w| ("weight".to_string(), w.clone())).collect()
    }
    fn parameters_mut(&mut self) -> Vec<&mut Tensor> {
        self.weight.iter_mut().collect()
    }
}
