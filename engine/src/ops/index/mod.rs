//! Index ops: `index_select` (and `embedding`, a lookup in a table), `gather`, `scatter_add`.
//! Backwards scatter-add the gradient into zeros; indices out of range are errors naming the value.
//! Indices are read on the host wherever they are; on a GPU the data moves through `cuda.rs`
//! (`index_select` along a dim other than 0 transposes that dim to the front first).
#[cfg(feature = "cuda")]
mod cuda;

use crate::autograd::record;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::{CpuStorage, Device};
use crate::tensor::Tensor;
use rayon::prelude::*;

fn indices(op: &'static str, ids: &Tensor, size: usize) -> Result<Vec<usize>> {
    let ids = ids.to_device(Device::Cpu)?;
    let v: Vec<i64> = match ids.dtype() {
        DType::I64 => ids.to_vec::<i64>()?,
        DType::U8 => ids.to_vec::<u8>()?.into_iter().map(i64::from).collect(),
        other => return Err(Error::DType { op, expected: DType::I64, got: other }),
    };
    v.into_iter()
        .map(|i| if i >= 0 && (i as usize) < size { Ok(i as usize) } else { Err(Error::Index { op, index: i, size }) })
        .collect()
}

/// Row-major coordinates of flat index `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize], coord: &mut [usize]) {
    for d in (0..shape.len()).rev() {
        coord[d] = flat % shape[d];
        flat /= shape[d];
    }
}

fn ravel(coord: &[usize], shape: &[usize]) -> usize {
    coord.iter().zip(shape).fold(0, |acc, (&c, &n)| acc * n + c)
}

impl Tensor {
    /// Slices along `dim` at the positions in `ids` (1-D, i64): `out.shape[dim] = ids.len()`.
    pub fn index_select(&self, dim: usize, ids: &Tensor) -> Result<Tensor> {
        self.layout().check_dim("index_select", dim)?;
        if ids.rank() != 1 {
            return Err(Error::shape("index_select", format!("ids must be 1-D, got {:?}", ids.shape())));
        }
        #[cfg(feature = "cuda")]
        if let Device::Cuda(o) = self.device() {
            return self.index_select_gpu(o, dim, ids);
        }
        let x = self.float_input("index_select")?.contiguous()?;
        let n = x.shape()[dim];
        let idx = indices("index_select", ids, n)?;
        let outer: usize = x.shape()[..dim].iter().product();
        let inner: usize = x.shape()[dim + 1..].iter().product();
        let m = idx.len();
        let mut out = vec![0.0f32; outer * m * inner];
        {
            let src = x.read::<f32>("index_select")?;
            let copy_row = |(r, row): (usize, &mut [f32])| {
                let (o, j) = (r / m.max(1), r % m.max(1));
                let s = (o * n + idx[j]) * inner;
                row.copy_from_slice(&src[s..s + inner]);
            };
            if inner > 0 {
                if out.len() >= 1 << 16 {
                    out.par_chunks_mut(inner).enumerate().for_each(copy_row);
                } else {
                    out.chunks_mut(inner).enumerate().for_each(copy_row);
                }
            }
        }
        let mut shape = x.shape().to_vec();
        shape[dim] = m;
        let in_shape = x.shape().to_vec();
        let node = record("index_select", &[&x], move |_, g| {
            let g = g.contiguous()?;
            let gv = g.read::<f32>("index_select backward")?;
            let mut gx = vec![0.0f32; outer * n * inner];
            for o in 0..outer {
                for (j, &i) in idx.iter().enumerate() {
                    let (d, s) = ((o * n + i) * inner, (o * m + j) * inner);
                    for (a, b) in gx[d..d + inner].iter_mut().zip(&gv[s..s + inner]) {
                        *a += b;
                    }
                }
            }
            Ok(vec![Some(Tensor::from_vec(gx, &in_shape)?)])
        });
        Ok(Tensor::from_op(CpuStorage::F32(out), &shape, node))
    }

    /// `index_select` of a tensor on GPU `o`: along dim 0 one embedding launch over the tensor seen
    /// as `[n, inner]`, whose backward scatter-adds into zeros; along another dim, the same on the
    /// tensor with that dim moved to the front (the views' own backwards bring the gradient back).
    #[cfg(feature = "cuda")]
    fn index_select_gpu(&self, o: u32, dim: usize, ids: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_select";
        if dim != 0 {
            return self.transpose(0, dim)?.index_select(0, ids)?.transpose(0, dim)?.contiguous();
        }
        let x = self.float_input(OP)?;
        let n = x.shape()[0];
        let inner: usize = x.shape()[1..].iter().product();
        let idx = indices(OP, ids, n)?;
        let mut shape = x.shape().to_vec();
        shape[0] = idx.len();
        let ids = cuda::Ids::upload(OP, o, &idx)?;
        let out = cuda::take_rows(OP, o, &x, n, inner, &ids, &shape)?;
        let in_shape = x.shape().to_vec();
        let node = record(OP, &[&x], move |_, g| {
            Ok(vec![Some(cuda::add_rows("index_select backward", o, None, g, n, inner, &ids, &in_shape)?)])
        });
        Ok(out.with_node_opt(node))
    }

    /// Rows of this `[num, dim]` table at `ids` (i64, any shape, on any device: they are read on the
    /// host): result `ids.shape + [dim]`, on the table's device.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::shape("embedding", format!("table must be [num, dim], got {:?}", self.shape())));
        }
        let flat = ids.to_device(Device::Cpu)?.contiguous()?.reshape(&[ids.numel()])?;
        let rows = self.index_select(0, &flat)?;
        let mut shape = ids.shape().to_vec();
        shape.push(self.shape()[1]);
        rows.reshape(&shape)
    }

    /// `out[..i..] = self[.. index[..i..] ..]` along `dim` (PyTorch's `gather`): `index` has the
    /// rank of `self` and no dim larger than it, except along `dim`.
    pub fn gather(&self, dim: usize, index: &Tensor) -> Result<Tensor> {
        self.layout().check_dim("gather", dim)?;
        check_index_shape("gather", self.shape(), index.shape(), dim)?;
        let x = self.float_input("gather")?.contiguous()?;
        let idx = indices("gather", index, x.shape()[dim])?;
        let (xs, is) = (x.shape().to_vec(), index.shape().to_vec());
        let index = index.clone();
        let backward = move |_: &Tensor, g: &Tensor| {
            Ok(vec![Some(Tensor::zeros_on(&xs, DType::F32, g.device())?.scatter_add(dim, &index, g)?)])
        };
        #[cfg(feature = "cuda")]
        if let Device::Cuda(o) = x.device() {
            let flat = cuda::Ids::upload("gather", o, &flat_positions(&idx, x.shape(), &is, dim))?;
            let out = cuda::take_rows("gather", o, &x, x.numel(), 1, &flat, &is)?;
            return Ok(out.with_node_opt(record("gather", &[&x], backward)));
        }
        let xs = x.shape().to_vec();
        let mut out = vec![0.0f32; idx.len()];
        {
            let src = x.read::<f32>("gather")?;
            let mut c = vec![0; is.len()];
            for (k, o) in out.iter_mut().enumerate() {
                unravel(k, &is, &mut c);
                c[dim] = idx[k];
                *o = src[ravel(&c, &xs)];
            }
        }
        Ok(Tensor::from_op(CpuStorage::F32(out), &is, record("gather", &[&x], backward)))
    }

    /// `self` with `src` added at the positions `index` names along `dim` (PyTorch's `scatter_add`).
    pub fn scatter_add(&self, dim: usize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        self.layout().check_dim("scatter_add", dim)?;
        if index.shape() != src.shape() {
            return Err(Error::shape(
                "scatter_add",
                format!("index {:?} and src {:?} must have the same shape", index.shape(), src.shape()),
            ));
        }
        check_index_shape("scatter_add", self.shape(), index.shape(), dim)?;
        let base = self.float_input("scatter_add")?;
        let s = src.float_input("scatter_add")?.contiguous()?;
        let idx = indices("scatter_add", index, base.shape()[dim])?;
        let (xs, is) = (base.shape().to_vec(), index.shape().to_vec());
        let index = index.clone();
        let backward = move |_: &Tensor, g: &Tensor| Ok(vec![Some(g.clone()), Some(g.gather(dim, &index)?)]);
        #[cfg(feature = "cuda")]
        if let Device::Cuda(o) = crate::storage::common_device("scatter_add", &[&base, &s])? {
            let flat = cuda::Ids::upload("scatter_add", o, &flat_positions(&idx, &xs, &is, dim))?;
            let out = cuda::add_rows("scatter_add", o, Some(&base), &s, base.numel(), 1, &flat, &xs)?;
            return Ok(out.with_node_opt(record("scatter_add", &[&base, &s], backward)));
        }
        let mut out = base.to_vec::<f32>()?;
        {
            let sv = s.read::<f32>("scatter_add")?;
            let mut c = vec![0; is.len()];
            for (k, &v) in sv.iter().enumerate() {
                unravel(k, &is, &mut c);
                c[dim] = idx[k];
                out[ravel(&c, &xs)] += v;
            }
        }
        Ok(Tensor::from_op(CpuStorage::F32(out), &xs, record("scatter_add", &[&base, &s], backward)))
    }
}

/// Flat row-major positions in a tensor of shape `xs` of the elements `index` (shape `is`, values
/// `idx`) names along `dim`: where gather reads and scatter_add writes.
#[cfg(feature = "cuda")]
fn flat_positions(idx: &[usize], xs: &[usize], is: &[usize], dim: usize) -> Vec<usize> {
    let mut c = vec![0; is.len()];
    idx.iter()
        .enumerate()
        .map(|(k, &i)| {
            unravel(k, is, &mut c);
            c[dim] = i;
            ravel(&c, xs)
        })
        .collect()
}

fn check_index_shape(op: &'static str, x: &[usize], index: &[usize], dim: usize) -> Result<()> {
    let ok = x.len() == index.len() && (0..x.len()).all(|d| d == dim || index[d] <= x[d]);
    if !ok {
        return Err(Error::shape(op, format!("index shape {index:?} does not fit input shape {x:?} along dim {dim}")));
    }
    Ok(())
}
