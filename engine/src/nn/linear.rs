//! `nn.Linear`: `y = x·Wᵀ + b`.
//!
//! A Linear can hold its weight packed (4-bit NF4/FP4, GGUF blocks): `packed` is then the weight
//! and `weight` a placeholder of the same `[out, in]` shape (one u8 broadcast, no memory), so code
//! that reads shapes keeps working and code that reads f32 values fails with a dtype error instead
//! of computing with zeros. Use [`Linear::dense_weight`] where f32 values are really needed.
use super::{param, sub_seed, Module};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant::PackedMatrix;
use crate::tensor::Tensor;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out_features, in_features]` (a u8 placeholder of that shape when `packed` is set).
    pub weight: Tensor,
    /// `[out_features]`.
    pub bias: Option<Tensor>,
    /// The frozen packed weight, when the layer is quantized.
    pub packed: Option<Arc<dyn PackedMatrix>>,
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
        Ok(Linear { weight: weight.requires_grad()?, bias, packed: None })
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
        Ok(Linear { weight, bias, packed: None })
    }

    /// Like `from_tensors`, making the tensors trainable (or frozen copies of the handles) as asked.
    pub fn from_values(weight: &Tensor, bias: Option<&Tensor>, trainable: bool) -> Result<Linear> {
        let bias = bias.map(|b| param(b.clone(), trainable)).transpose()?;
        Linear::from_tensors(param(weight.clone(), trainable)?, bias)
    }

    /// A frozen layer over a packed `[out, in]` weight; `bias` is used as given (trainable or not).
    pub fn from_packed(packed: Arc<dyn PackedMatrix>, bias: Option<Tensor>) -> Result<Linear> {
        let [out_f, in_f] = packed.shape();
        if out_f == 0 || in_f == 0 {
            return Err(Error::shape("Linear::from_packed", format!("empty packed weight {out_f}x{in_f}")));
        }
        let weight = Tensor::zeros(&[1, 1], DType::U8).broadcast_as(&[out_f, in_f])?;
        let mut l = Linear::from_tensors(weight, bias)?;
        l.packed = Some(packed);
        Ok(l)
    }

    /// Whether the weight is stored packed (see [`Linear::dense_weight`]).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// The weight as f32 `[out, in]`: the tensor itself, or the packed weight dequantized (a new
    /// frozen tensor: for merging and export, not for the forward pass).
    pub fn dense_weight(&self) -> Result<Tensor> {
        match &self.packed {
            Some(p) => crate::quant::dequantize_all(p.as_ref()),
            None => Ok(self.weight.clone()),
        }
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
        if let Some(p) = &self.packed {
            return crate::ops::quant_matmul::packed_linear(x, p, self.bias.as_ref());
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
