//! Reductions over axes: sum, mean, max/argmax, and `sum_to` (the backward of broadcasting).
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::autograd::record;
use crate::error::{Error, Result};
use crate::storage::{CpuStorage, Device};
use crate::tensor::Tensor;

/// `[outer, r, inner]` sizes around `dim`.
fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product())
}

fn keepdim_shape(shape: &[usize], dim: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    s[dim] = 1;
    s
}

impl Tensor {
    /// Sum over the adjacent dims `a..b`, keeping them as size 1.
    fn sum_run_keepdim(&self, a: usize, b: usize) -> Result<Tensor> {
        let x = self.float_input("sum")?.contiguous()?;
        let shape = x.shape();
        let split = (shape[..a].iter().product(), shape[a..b].iter().product(), shape[b..].iter().product());
        let mut out_shape = shape.to_vec();
        out_shape[a..b].fill(1);
        let out = match x.device() {
            Device::Cpu => {
                let (outer, r, inner) = split;
                let out = cpu::sum_axis(&x.read::<f32>("sum")?, outer, r, inner);
                Tensor::from_op(CpuStorage::F32(out), &out_shape, None)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::sum(o, &x, split, &out_shape)?,
        };
        let in_shape = x.shape().to_vec();
        let node = record("sum", &[&x], move |_, g| Ok(vec![Some(g.broadcast_as(&in_shape)?)]));
        Ok(out.with_node_opt(node))
    }

    /// Sum over `dims` (any order, no repeats).
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let mut sorted = dims.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != dims.len() {
            return Err(Error::shape("sum", format!("repeated dims in {dims:?}")));
        }
        for &d in &sorted {
            self.layout().check_dim("sum", d)?;
        }
        // Runs of adjacent dims, each reduced at once; the host keeps one dim per pass (its rounding).
        let merge = self.device() != Device::Cpu;
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &d in &sorted {
            match runs.last_mut() {
                Some(run) if merge && run.1 == d => run.1 = d + 1,
                _ => runs.push((d, d + 1)),
            }
        }
        let mut t = self.clone();
        for &(a, b) in runs.iter().rev() {
            t = t.sum_run_keepdim(a, b)?;
        }
        if keepdim || sorted.is_empty() {
            return Ok(t);
        }
        let shape: Vec<usize> =
            self.shape().iter().enumerate().filter(|(i, _)| !sorted.contains(i)).map(|(_, &d)| d).collect();
        t.reshape(&shape)
    }

    /// Sum of every element, as a 0-dimensional tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let flat = self.contiguous()?.reshape(&[self.numel()])?;
        flat.sum(&[0], false)
    }

    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let count: usize = dims.iter().map(|&d| self.dim(d)).collect::<Result<Vec<_>>>()?.iter().product();
        self.sum(dims, keepdim)?.affine(1.0 / count.max(1) as f32, 0.0)
    }

    pub fn mean_all(&self) -> Result<Tensor> {
        self.sum_all()?.affine(1.0 / self.numel().max(1) as f32, 0.0)
    }

    /// Max over `dim`; the gradient goes to the first maximal element (like `torch.max(dim)`).
    pub fn max(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.layout().check_dim("max", dim)?;
        let x = self.float_input("max")?.contiguous()?;
        let (outer, r, inner) = split_at_dim(x.shape(), dim);
        if r == 0 {
            return Err(Error::shape("max", format!("dim {dim} of {:?} is empty", x.shape())));
        }
        let in_shape = x.shape().to_vec();
        let out_shape = keepdim_shape(x.shape(), dim);
        let t = match x.device() {
            Device::Cpu => {
                let (vals, idx) = cpu::max_axis(&x.read::<f32>("max")?, outer, r, inner);
                let node = record("max", &[&x], move |_, g| {
                    let g = g.contiguous()?.to_vec::<f32>()?;
                    let mut gx = vec![0.0f32; outer * r * inner];
                    for (k, (&gi, &j)) in g.iter().zip(&idx).enumerate() {
                        let (o, i) = (k / inner, k % inner);
                        gx[(o * r + j as usize) * inner + i] += gi;
                    }
                    Ok(vec![Some(Tensor::from_vec(gx, &in_shape)?)])
                });
                Tensor::from_op(CpuStorage::F32(vals), &out_shape, node)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(ord) => {
                let split = (outer, r, inner);
                let (vals, onehot) = cuda::max(ord, &x, split, &out_shape)?;
                let node = record("max", &[&x], move |_, g| {
                    Ok(vec![Some(cuda::max_backward(ord, &onehot, &g.contiguous()?, split)?)])
                });
                vals.with_node_opt(node)
            }
        };
        if keepdim {
            Ok(t)
        } else {
            t.squeeze(dim)
        }
    }

    /// Index of the first maximum along `dim`, as i64.
    pub fn argmax(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.layout().check_dim("argmax", dim)?;
        let x = self.float_input("argmax")?.contiguous()?;
        let (outer, r, inner) = split_at_dim(x.shape(), dim);
        if r == 0 {
            return Err(Error::shape("argmax", format!("dim {dim} of {:?} is empty", x.shape())));
        }
        let t = match x.device() {
            Device::Cpu => {
                let (_, idx) = cpu::max_axis(&x.read::<f32>("argmax")?, outer, r, inner);
                Tensor::from_vec(idx, &keepdim_shape(x.shape(), dim))?
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::argmax(o, &x, (outer, r, inner), &keepdim_shape(x.shape(), dim))?,
        };
        if keepdim {
            Ok(t)
        } else {
            t.squeeze(dim)
        }
    }

    /// Sums the broadcast dims away so the result has `shape` (the inverse of `broadcast_as`).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        if shape.len() > self.rank() {
            return Err(Error::shape("sum_to", format!("cannot sum {:?} to {shape:?}", self.shape())));
        }
        let lead = self.rank() - shape.len();
        let mut dims: Vec<usize> = (0..lead).collect();
        for (i, &d) in shape.iter().enumerate() {
            let have = self.shape()[lead + i];
            if d == 1 && have != 1 {
                dims.push(lead + i);
            } else if d != have {
                return Err(Error::shape("sum_to", format!("cannot sum {:?} to {shape:?}", self.shape())));
            }
        }
        self.sum(&dims, true)?.reshape(shape)
    }
}
