//! Views: new layouts over the same storage, never a copy. Each records a backward that maps the
//! gradient back to the input's shape.
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::tensor::Tensor;

impl Tensor {
    fn view_op(
        &self,
        op: &'static str,
        layout: Layout,
        backward: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Tensor {
        let node = record(op, &[self], move |_, g| Ok(vec![Some(backward(g)?)]));
        self.view_with(layout, node)
    }

    /// A view with a new shape (no copy). Fails when the strides make that impossible: call
    /// `.contiguous()` first in that case. One entry may be `usize::MAX` meaning "infer".
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let shape = infer_shape(shape, self.numel())?;
        let layout = self.layout().reshape(&shape)?;
        let in_shape = self.shape().to_vec();
        Ok(self.view_op("reshape", layout, move |g| g.contiguous()?.reshape(&in_shape)))
    }

    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        let layout = self.layout().transpose(d0, d1)?;
        Ok(self.view_op("transpose", layout, move |g| g.transpose(d0, d1)))
    }

    /// Swaps the last two dims (a matrix transpose, batched).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::shape("t", format!("needs rank >= 2, got shape {:?}", self.shape())));
        }
        self.transpose(self.rank() - 2, self.rank() - 1)
    }

    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute(dims)?;
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(self.view_op("permute", layout, move |g| g.permute(&inverse)))
    }

    /// Elements `start..start+len` along `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let layout = self.layout().narrow(dim, start, len)?;
        let in_shape = self.shape().to_vec();
        Ok(self.view_op("narrow", layout, move |g| g.pad_into(&in_shape, dim, start)))
    }

    /// Broadcast to `shape` (NumPy rules) without copying: stretched dims get stride 0.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        let layout = self.layout().broadcast_as(shape)?;
        let in_shape = self.shape().to_vec();
        Ok(self.view_op("broadcast_as", layout, move |g| g.sum_to(&in_shape)))
    }

    /// Alias of `broadcast_as`, as PyTorch calls it.
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        self.broadcast_as(shape)
    }

    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        let layout = self.layout().squeeze(dim)?;
        let in_shape = self.shape().to_vec();
        Ok(self.view_op("squeeze", layout, move |g| g.contiguous()?.reshape(&in_shape)))
    }

    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        let layout = self.layout().unsqueeze(dim)?;
        let in_shape = self.shape().to_vec();
        Ok(self.view_op("unsqueeze", layout, move |g| g.contiguous()?.reshape(&in_shape)))
    }

    /// Merges dims `start..=end` into one.
    pub fn flatten(&self, start: usize, end: usize) -> Result<Tensor> {
        if start > end || end >= self.rank().max(1) {
            return Err(Error::shape("flatten", format!("dims {start}..={end} of shape {:?}", self.shape())));
        }
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let s = self.shape();
        let mut shape: Vec<usize> = s[..start].to_vec();
        shape.push(s[start..=end].iter().product());
        shape.extend_from_slice(&s[end + 1..]);
        self.reshape(&shape)
    }
}

fn infer_shape(shape: &[usize], numel: usize) -> Result<Vec<usize>> {
    let unknown: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] == usize::MAX).collect();
    match unknown.len() {
        0 => Ok(shape.to_vec()),
        1 => {
            let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
            if known == 0 || !numel.is_multiple_of(known) {
                return Err(Error::shape("reshape", format!("cannot infer a dim of {shape:?} for {numel} elements")));
            }
            let mut s = shape.to_vec();
            s[unknown[0]] = numel / known;
            Ok(s)
        }
        _ => Err(Error::shape("reshape", format!("more than one inferred dim in {shape:?}"))),
    }
}
