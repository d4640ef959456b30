//! Tensors on a CUDA GPU (feature `cuda`): their storage, and `Tensor::to_device` to move them between
//! host and device. The ops still run on the host: a CPU op on a GPU tensor is an error that names the
//! device (the per-op CUDA launchers live in the `cuda` crate, not yet dispatched from `Tensor`).

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::storage::{CpuStorage, Device, Storage};
use crate::tensor::{Tensor, Track};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, RwLock};

/// A tensor's elements on GPU `ordinal`, as raw bytes (the tensor records the dtype), row-major.
#[derive(Clone, Debug)]
pub struct CudaStorage {
    bytes: Arc<cuda::Buffer<u8>>,
    ordinal: u32,
}

impl CudaStorage {
    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    pub(crate) fn not_on_host(&self, op: &'static str) -> Error {
        Error::invalid(
            op,
            format!("the tensor is on cuda:{}; move it with .to_device(Device::Cpu) first", self.ordinal),
        )
    }
}

thread_local! {
    /// Each thread opens a device once (a `cuda::Device` makes the device's context current on its
    /// thread); buffers live in the device's one primary context, so any thread can use them.
    static DEVICES: RefCell<HashMap<u32, Rc<cuda::Device>>> = RefCell::new(HashMap::new());
}

fn with_device<R>(op: &'static str, ordinal: u32, f: impl FnOnce(&cuda::Device) -> cuda::Result<R>) -> Result<R> {
    let device = DEVICES.with(|d| -> cuda::Result<Rc<cuda::Device>> {
        if let Some(dev) = d.borrow().get(&ordinal) {
            return Ok(dev.clone());
        }
        let dev = Rc::new(cuda::Device::new(ordinal)?);
        d.borrow_mut().insert(ordinal, dev.clone());
        Ok(dev)
    });
    device.and_then(|d| f(&d)).map_err(|e| Error::invalid(op, format!("cuda:{ordinal}: {e}")))
}

/// The bytes of `numel` elements of `cpu` from element `offset`.
fn host_bytes(cpu: &CpuStorage, offset: usize, numel: usize) -> &[u8] {
    let range = |size: usize| offset * size..(offset + numel) * size;
    match cpu {
        CpuStorage::F32(v) => &bytemuck::cast_slice(v)[range(4)],
        CpuStorage::BF16(v) => &bytemuck::cast_slice(v)[range(2)],
        CpuStorage::F16(v) => &bytemuck::cast_slice(v)[range(2)],
        CpuStorage::U8(v) => &v[range(1)],
        CpuStorage::I64(v) => &bytemuck::cast_slice(v)[range(8)],
        CpuStorage::Mapped(m) => &m.bytes()[range(cpu.dtype().size_in_bytes())],
    }
}

fn from_bytes(dtype: DType, bytes: &[u8]) -> CpuStorage {
    match dtype {
        DType::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(bytes)),
        DType::BF16 => CpuStorage::BF16(bytemuck::pod_collect_to_vec(bytes)),
        DType::F16 => CpuStorage::F16(bytemuck::pod_collect_to_vec(bytes)),
        DType::U8 => CpuStorage::U8(bytes.to_vec()),
        DType::I64 => CpuStorage::I64(bytemuck::pod_collect_to_vec(bytes)),
    }
}

impl Tensor {
    /// The same values on `device` (a copy; row-major there). Gradients do not flow through a move:
    /// the result is a new leaf. Moving to the device a tensor is already on returns it as is.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        const OP: &str = "to_device";
        let here = self.device();
        if here == device {
            return Ok(self.clone());
        }
        let bytes: Vec<u8> = match here {
            Device::Cpu => {
                let src = self.contiguous()?;
                let guard = src.storage_read();
                host_bytes(guard.cpu(OP)?, src.layout().offset(), src.numel()).to_vec()
            }
            Device::Cuda(from) => {
                let guard = self.storage_read();
                let Storage::Cuda(s) = &*guard else { return Err(Error::invalid(OP, "storage/device mismatch")) };
                with_device(OP, from, |d| d.download(&s.bytes))?
            }
        };
        let storage = match device {
            Device::Cpu => Storage::Cpu(from_bytes(self.dtype(), &bytes)),
            Device::Cuda(to) => {
                let buf = with_device(OP, to, |d| d.upload(&bytes))?;
                Storage::Cuda(CudaStorage { bytes: Arc::new(buf), ordinal: to })
            }
        };
        Ok(Tensor::from_parts(
            Arc::new(RwLock::new(storage)),
            Layout::contiguous(self.shape()),
            self.dtype(),
            Track::None,
        ))
    }
}
