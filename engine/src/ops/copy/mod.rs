//! Materializing copies: `contiguous`, dtype casts, and writing a gradient into a zero-padded
//! tensor (the backward of `narrow`).
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::autograd::{needs_grad, record};
use crate::cpu::strided::map_rows;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::storage::{CpuElement, CpuStorage};
use crate::tensor::Tensor;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

fn gather_strided<T: CpuElement>(cpu: &CpuStorage, layout: &Layout) -> CpuStorage {
    let data = T::slice(cpu).unwrap_or(&[]);
    if layout.is_contiguous() {
        return T::wrap(data[layout.offset()..layout.offset() + layout.numel()].to_vec());
    }
    T::wrap(layout.storage_indices().map(|i| data[i]).collect())
}

/// Narrowing conversion, split across threads (it is compute-bound: rounding per element).
fn convert_par<T: Copy + Default + Send>(src: &[f32], f: impl Fn(f32) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::default(); src.len()];
    out.par_chunks_mut(1 << 15).zip(src.par_chunks(1 << 15)).for_each(|(o, s)| {
        for (d, &x) in o.iter_mut().zip(s) {
            *d = f(x);
        }
    });
    out
}

/// bf16/f16 → f32, split across threads.
fn widen_par<T: Sync>(src: &[T]) -> Vec<f32>
where
    [T]: HalfFloatSliceExt,
{
    let n = src.len();
    let mut out = crate::cpu::pool::alloc_f32(n);
    out.par_chunks_mut(1 << 15).enumerate().for_each(|(i, o)| {
        let s = i << 15;
        src[s..s + o.len()].convert_to_f32_slice(o);
    });
    out
}

impl Tensor {
    /// The same values in a fresh row-major buffer, or `self` when already contiguous.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        #[cfg(feature = "cuda")]
        if let crate::Device::Cuda(o) = self.device() {
            let node = record("contiguous", &[self], |_, g| Ok(vec![Some(g.clone())]));
            return Ok(cuda::contiguous(o, self)?.with_node_opt(node));
        }
        let storage = {
            let guard = self.storage_read();
            let cpu = guard.cpu("contiguous")?;
            match self.dtype() {
                DType::F32 => {
                    let d = f32::slice(cpu).unwrap_or(&[]);
                    CpuStorage::F32(map_rows(self.shape(), [self.layout()], |out, [off], [s]| {
                        if s == 1 {
                            out.copy_from_slice(&d[off..off + out.len()]);
                        } else {
                            for (j, o) in out.iter_mut().enumerate() {
                                *o = d[off + j * s];
                            }
                        }
                    }))
                }
                DType::BF16 => gather_strided::<bf16>(cpu, self.layout()),
                DType::F16 => gather_strided::<f16>(cpu, self.layout()),
                DType::U8 => gather_strided::<u8>(cpu, self.layout()),
                DType::I64 => gather_strided::<i64>(cpu, self.layout()),
            }
        };
        let node = record("contiguous", &[self], |_, g| Ok(vec![Some(g.clone())]));
        Ok(Tensor::from_op(storage, self.shape(), node))
    }

    /// Converts the elements. Gradients flow only through f32 → f32 (a no-op).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if needs_grad(&[self]) {
            return Err(Error::invalid(
                "to_dtype",
                format!("cannot record a cast {:?} -> {dtype:?}: gradients only flow through f32", self.dtype()),
            ));
        }
        #[cfg(feature = "cuda")]
        if let crate::Device::Cuda(o) = self.device() {
            return cuda::to_dtype(o, self, dtype);
        }
        let src = self.contiguous()?;
        let guard = src.storage_read();
        let cpu = guard.cpu("to_dtype")?;
        let (o, n) = (src.layout().offset(), src.numel());
        if let Some(d) = f32::slice(cpu) {
            // Narrowing straight from the source: no intermediate f32 copy.
            let d = &d[o..o + n];
            let narrowed = match dtype {
                DType::BF16 => Some(CpuStorage::BF16(convert_par(d, bf16::from_f32))),
                DType::F16 => Some(CpuStorage::F16(convert_par(d, f16::from_f32))),
                _ => None,
            };
            if let Some(storage) = narrowed {
                return Ok(Tensor::from_storage(storage, self.shape()));
            }
        }
        let as_f32: Vec<f32> = match src.dtype() {
            DType::F32 => f32::slice(cpu).unwrap_or(&[])[o..o + n].to_vec(),
            DType::BF16 => widen_par(&bf16::slice(cpu).unwrap_or(&[])[o..o + n]),
            DType::F16 => widen_par(&f16::slice(cpu).unwrap_or(&[])[o..o + n]),
            DType::U8 => u8::slice(cpu).unwrap_or(&[])[o..o + n].iter().map(|&x| x as f32).collect(),
            DType::I64 => {
                let d = &i64::slice(cpu).unwrap_or(&[])[o..o + n];
                if dtype == DType::U8 {
                    return Tensor::from_vec(d.iter().map(|&x| x as u8).collect::<Vec<u8>>(), self.shape());
                }
                d.iter().map(|&x| x as f32).collect()
            }
        };
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(as_f32),
            DType::BF16 => CpuStorage::BF16(convert_par(&as_f32, bf16::from_f32)),
            DType::F16 => CpuStorage::F16(convert_par(&as_f32, f16::from_f32)),
            DType::U8 => CpuStorage::U8(as_f32.iter().map(|&x| x as u8).collect()),
            DType::I64 => CpuStorage::I64(as_f32.iter().map(|&x| x as i64).collect()),
        };
        Ok(Tensor::from_storage(storage, self.shape()))
    }

    /// Floating inputs of compute ops: f32 as is, bf16/f16 converted; anything else an error.
    pub(crate) fn float_input(&self, op: &'static str) -> Result<Tensor> {
        match self.dtype() {
            DType::F32 => Ok(self.clone()),
            DType::BF16 | DType::F16 => self.to_dtype(DType::F32),
            other => Err(Error::DType { op, expected: DType::F32, got: other }),
        }
    }

    /// A zero tensor of `shape` with `self` written at `start..` along `dim` (narrow's backward).
    pub(crate) fn pad_into(&self, shape: &[usize], dim: usize, start: usize) -> Result<Tensor> {
        let len = self.dim(dim)?;
        if shape.len() != self.rank() || start + len > shape[dim] {
            return Err(Error::shape(
                "pad_into",
                format!("{:?} at {start} along dim {dim} into {shape:?}", self.shape()),
            ));
        }
        let src = self.float_input("pad_into")?;
        let out = match src.device() {
            crate::Device::Cpu => {
                let src = src.contiguous()?;
                let (outer, n) = (shape[..dim].iter().product::<usize>(), shape[dim]);
                let inner: usize = shape[dim + 1..].iter().product();
                let mut out = crate::cpu::pool::alloc_f32_zeroed(outer * n * inner);
                let sv = src.read::<f32>("pad_into")?;
                let block = len * inner;
                if block > 0 {
                    // Each outer row of the output receives one contiguous block of the source.
                    for (o, row) in out.chunks_mut(n * inner).enumerate() {
                        row[start * inner..start * inner + block].copy_from_slice(&sv[o * block..(o + 1) * block]);
                    }
                }
                Tensor::from_op(CpuStorage::F32(out), shape, None)
            }
            #[cfg(feature = "cuda")]
            crate::Device::Cuda(o) => cuda::write_slices("pad_into", o, &[(&src, start)], shape, dim, true)?,
        };
        let node = record("pad_into", &[&src], move |_, g| Ok(vec![Some(g.narrow(dim, start, len)?)]));
        Ok(out.with_node_opt(node))
    }
}
