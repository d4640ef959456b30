//! Concatenation and stacking along a dim; the backward narrows the gradient back into pieces. On the
//! GPU each part is written into its slice of the output in place (copy's `write_slices`).
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;

impl Tensor {
    /// Joins tensors along `dim`; all other dims must agree.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("cat", "no tensors given"))?;
        first.layout().check_dim("cat", dim)?;
        for t in tensors {
            let same_rank = t.rank() == first.rank();
            let same_dims = same_rank && (0..t.rank()).all(|d| d == dim || t.shape()[d] == first.shape()[d]);
            if !same_dims {
                let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
                return Err(Error::shape("cat", format!("shapes {shapes:?} differ outside dim {dim}")));
            }
        }
        let parts: Vec<Tensor> = tensors.iter().map(|t| t.float_input("cat")).collect::<Result<_>>()?;
        let sizes: Vec<usize> = parts.iter().map(|t| t.shape()[dim]).collect();
        let total: usize = sizes.iter().sum();
        let mut shape = first.shape().to_vec();
        shape[dim] = total;
        let refs: Vec<&Tensor> = parts.iter().collect();
        let out = match common_device("cat", &refs)? {
            Device::Cpu => {
                let outer: usize = first.shape()[..dim].iter().product();
                let inner: usize = first.shape()[dim + 1..].iter().product();
                let mut out = vec![0.0f32; outer * total * inner];
                let mut at = 0;
                for (p, &size) in parts.iter().zip(&sizes) {
                    let p = p.contiguous()?;
                    let src = p.read::<f32>("cat")?;
                    let block = size * inner;
                    for o in 0..outer {
                        let dst = o * total * inner + at * inner;
                        out[dst..dst + block].copy_from_slice(&src[o * block..(o + 1) * block]);
                    }
                    at += size;
                }
                Tensor::from_op(CpuStorage::F32(out), &shape, None)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => {
                let starts = sizes.iter().scan(0, |at, &s| Some(std::mem::replace(at, *at + s)));
                let placed: Vec<(&Tensor, usize)> = parts.iter().zip(starts).collect();
                // The parts tile the output, so it needs no zeroing.
                crate::ops::copy::cuda::write_slices("cat", o, &placed, &shape, dim, false)?
            }
        };
        let node = record("cat", &refs, move |_, g| {
            let mut start = 0;
            let mut grads = Vec::with_capacity(sizes.len());
            for &size in &sizes {
                grads.push(Some(g.narrow(dim, start, size)?.contiguous()?));
                start += size;
            }
            Ok(grads)
        });
        Ok(out.with_node_opt(node))
    }

    /// Stacks same-shaped tensors along a new dim.
    pub fn stack(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let expanded: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(dim)).collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = expanded.iter().collect();
        Tensor::cat(&refs, dim)
    }
}
