//! `nn.Linear`: `y = x·Wᵀ + b`.
use super::{param, sub_seed, Module};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A trainable layer with PyTorch's initialisation: weight by `kaiming_uniform(a = √5)` (i.e.
    /// U(±1/√in)), bias U(±1/√in).
    pub fn new(in_features: usize, out_features: usize, bias: bool, seed: u64) -> Result<Linear> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid(
                "Linear::new",
                format!("features must be positive, got in {in_features}, out {out_features}"),
            ));
        }
        let weight = Tensor::kaiming_uniform(&[out_features, in_features], 5f32.sqrt(), sub_seed(seed, 0))?;
        let bias = if bias {
            let bound = 1.0 / (in_features as f32).sqrt();
            Some(Tensor::rand_uniform(&[out_features], -bound, bound, sub_seed(seed, 1))?.requires_grad()?)
        } else {
            None
        };
        Ok(Linear { weight: weight.requires_grad()?, bias })
    }

    /// A layer over given tensors, used as they are: pass `t.requires_grad()?` for trainable
    /// parameters, plain tensors for frozen ones.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.rank() != 2 {
            return Err(Error::shape("Linear", format!("weight must be [out, in], got {:?}", weight.shape())));
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return Err(Error::shape(
                    "Linear",
                    format!("bias of shape {:?} does not fit weight {:?}", b.shape(), weight.shape()),
                ));
            }
        }
        Ok(Linear { weight, bias })
    }

    /// Like `from_tensors`, making the tensors trainable (or frozen copies of the handles) as asked.
    pub fn from_values(weight: &Tensor, bias: Option<&Tensor>, trainable: bool) -> Result<Linear> {
        let bias = bias.map(|b| param(b.clone(), trainable)).transpose()?;
        Linear::from_tensors(param(weight.clone(), trainable)?, bias)
    }

    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// `x [..., in] → [..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.in_features();
        if x.rank() == 0 || x.shape()[x.rank() - 1] != k {
            return Err(Error::shape(
                "Linear",
                format!("input of shape {:?} does not end in in_features = {k}", x.shape()),
            ));
        }
        let y = if x.rank() == 1 {
            x.unsqueeze(0)?.matmul(&self.weight.t()?)?.squeeze(0)?
        } else {
            x.matmul(&self.weight.t()?)?
        };
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}

impl Module for Linear {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
    fn parameters_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = vec![&mut self.weight];
        if let Some(b) = &mut self.bias {
            v.push(b);
        }
        v
    }
}
