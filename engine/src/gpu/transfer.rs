//! `Tensor::to_device`: copies between host and GPU memory, of any dtype.
use super::{with_device, CudaStorage, GpuBuf};
use crate::autograd::record;
use crate::dtype::DType;
use crate::error::Result;
use crate::layout::Layout;
use crate::storage::{CpuElement, CpuStorage, Device, Storage};
use crate::tensor::{Tensor, Track};
use half::{bf16, f16};
use std::sync::{Arc, RwLock};

const OP: &str = "to_device";

fn upload(ordinal: u32, cpu: &CpuStorage, offset: usize, n: usize) -> Result<GpuBuf> {
    fn up<T: CpuElement, U: cuda::Element + bytemuck::Pod>(
        ordinal: u32,
        cpu: &CpuStorage,
        offset: usize,
        n: usize,
    ) -> Result<Arc<cuda::Buffer<U>>> {
        let data = T::slice(cpu).map(|s| &s[offset..offset + n]).unwrap_or(&[]);
        let bits: &[U] = bytemuck::cast_slice(data);
        Ok(Arc::new(with_device(OP, ordinal, |d| d.upload(bits))?))
    }
    Ok(match cpu.dtype() {
        DType::F32 => GpuBuf::F32(up::<f32, f32>(ordinal, cpu, offset, n)?),
        DType::BF16 => GpuBuf::BF16(up::<bf16, u16>(ordinal, cpu, offset, n)?),
        DType::F16 => GpuBuf::F16(up::<f16, u16>(ordinal, cpu, offset, n)?),
        DType::U8 => GpuBuf::U8(up::<u8, u8>(ordinal, cpu, offset, n)?),
        DType::I64 => GpuBuf::I64(up::<i64, i64>(ordinal, cpu, offset, n)?),
    })
}

/// Elements `offset..offset + n` of a host buffer, as a new one.
fn cut(cpu: &CpuStorage, offset: usize, n: usize) -> CpuStorage {
    fn part<T: CpuElement>(cpu: &CpuStorage, offset: usize, n: usize) -> CpuStorage {
        T::wrap(T::slice(cpu).map(|s| s[offset..offset + n].to_vec()).unwrap_or_default())
    }
    match cpu.dtype() {
        DType::F32 => part::<f32>(cpu, offset, n),
        DType::BF16 => part::<bf16>(cpu, offset, n),
        DType::F16 => part::<f16>(cpu, offset, n),
        DType::U8 => part::<u8>(cpu, offset, n),
        DType::I64 => part::<i64>(cpu, offset, n),
    }
}

/// The whole buffer's elements on the host.
pub(crate) fn download(ordinal: u32, buf: &GpuBuf) -> Result<CpuStorage> {
    Ok(match buf {
        GpuBuf::F32(b) => CpuStorage::F32(with_device(OP, ordinal, |d| d.download(b))?),
        GpuBuf::BF16(b) => CpuStorage::BF16(bytemuck::cast_vec(with_device(OP, ordinal, |d| d.download(b))?)),
        GpuBuf::F16(b) => CpuStorage::F16(bytemuck::cast_vec(with_device(OP, ordinal, |d| d.download(b))?)),
        GpuBuf::U8(b) => CpuStorage::U8(with_device(OP, ordinal, |d| d.download(b))?),
        GpuBuf::I64(b) => CpuStorage::I64(with_device(OP, ordinal, |d| d.download(b))?),
    })
}

impl Tensor {
    /// The same values on `device`, row-major there; a tensor already on `device` is returned as is.
    ///
    /// Autograd: a leaf that requires grad gives a leaf that requires grad on `device` (what moving a
    /// model's parameters needs: the optimizer then updates the moved copy); any other tracked tensor
    /// records the move, and its gradient moves back.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let here = self.device();
        if here == device {
            return Ok(self.clone());
        }
        let storage = match (here, device) {
            (Device::Cpu, Device::Cuda(to)) => {
                let src = self.contiguous()?;
                let guard = src.storage_read();
                Storage::Cuda(CudaStorage::new(upload(to, guard.cpu(OP)?, src.layout().offset(), src.numel())?, to))
            }
            (Device::Cuda(from), _) => {
                // The whole buffer comes back, then the view is gathered on the host.
                let all = download(from, &self.gpu_buf(OP)?)?;
                let view = Tensor::from_parts(
                    Arc::new(RwLock::new(Storage::Cpu(all))),
                    self.layout().clone(),
                    self.dtype(),
                    Track::None,
                );
                let host = view.contiguous()?.to_device(device)?;
                let (offset, n) = (host.layout().offset(), host.numel());
                let guard = host.storage_read();
                match &*guard {
                    // `contiguous` keeps a contiguous view as it is: one at an offset into a longer
                    // buffer (a narrow) is cut out, or the new tensor would start at element 0.
                    Storage::Cpu(cpu) if offset != 0 || cpu.len() != n => Storage::Cpu(cut(cpu, offset, n)),
                    other => other.clone(),
                }
            }
            (Device::Cpu, Device::Cpu) => return Ok(self.clone()),
        };
        let track = if self.is_variable() { Track::Variable } else { Track::None };
        let moved =
            Tensor::from_parts(Arc::new(RwLock::new(storage)), Layout::contiguous(self.shape()), self.dtype(), track);
        if self.is_variable() {
            return Ok(moved);
        }
        match record(OP, &[self], move |_, g| Ok(vec![Some(g.to_device(here)?)])) {
            Some(node) => Ok(moved.with_node(node)),
            None => Ok(moved),
        }
    }
}

impl Tensor {
    /// Moves the storage under `self` to `device` in place: every tensor sharing it (views, tied
    /// weights, GPT-2's transposed Conv1D weights) moves with it, keeping its layout, id and whether
    /// it requires grad. This is how a model's parameters move (`models::move_to_device`). Fails,
    /// changing nothing, if the copy fails.
    pub fn move_storage(&self, device: Device) -> Result<()> {
        if self.device() == device {
            return Ok(());
        }
        let mut guard = self.storage_write();
        let moved = match (&*guard, device) {
            (Storage::Cpu(cpu), Device::Cuda(to)) => {
                Storage::Cuda(CudaStorage::new(upload(to, cpu, 0, cpu.len())?, to))
            }
            (Storage::Cuda(g), Device::Cpu) => Storage::Cpu(download(g.ordinal(), &g.buf)?),
            (Storage::Cuda(g), Device::Cuda(to)) => {
                let host = download(g.ordinal(), &g.buf)?;
                Storage::Cuda(CudaStorage::new(upload(to, &host, 0, host.len())?, to))
            }
            (Storage::Cpu(_), Device::Cpu) => return Ok(()),
        };
        *guard = moved;
        Ok(())
    }
}
