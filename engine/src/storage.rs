//! Where elements live. `Storage` has one variant per device (`Cuda` with the `cuda` feature).
use crate::dtype::{DType, WithDType};
use half::{bf16, f16};
use std::sync::Arc;

/// Host memory, typed. `Mapped` borrows a read-only file mapping (safetensors weights used in place);
/// writing to it first copies it into an owned buffer.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    U8(Vec<u8>),
    I64(Vec<i64>),
    Mapped(MappedBuffer),
}

/// Elements of one dtype inside a memory-mapped file. The byte offset is aligned for the dtype
/// (checked when made), so the bytes can be viewed as `&[T]` without copying.
#[derive(Clone)]
pub struct MappedBuffer {
    map: Arc<memmap2::Mmap>,
    byte_offset: usize,
    len: usize,
    dtype: DType,
}

impl std::fmt::Debug for MappedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedBuffer({:?} x {} at byte {})", self.dtype, self.len, self.byte_offset)
    }
}

impl MappedBuffer {
    /// `None` when the range is outside the map or misaligned for `dtype` (the caller copies then).
    pub fn new(map: Arc<memmap2::Mmap>, byte_offset: usize, len: usize, dtype: DType) -> Option<Self> {
        let end = byte_offset.checked_add(len.checked_mul(dtype.size_in_bytes())?)?;
        let aligned = (map.as_ptr() as usize + byte_offset).is_multiple_of(dtype.size_in_bytes());
        (end <= map.len() && aligned).then_some(MappedBuffer { map, byte_offset, len, dtype })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map[self.byte_offset..self.byte_offset + self.len * self.dtype.size_in_bytes()]
    }

    fn typed<T: CpuElement>(&self) -> Option<&[T]> {
        if self.dtype != T::DTYPE {
            return None;
        }
        bytemuck::try_cast_slice(self.bytes()).ok()
    }
}

#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    #[cfg(feature = "cuda")]
    Cuda(crate::gpu::CudaStorage),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// GPU `n` (feature `cuda`); tensors get there with `Tensor::to_device`.
    #[cfg(feature = "cuda")]
    Cuda(u32),
}

/// The one device all `inputs` are on; tensors on different devices are an error naming both.
pub(crate) fn common_device(op: &'static str, inputs: &[&crate::Tensor]) -> crate::Result<Device> {
    let mut it = inputs.iter().map(|t| t.device());
    let first = it.next().unwrap_or(Device::Cpu);
    for d in it {
        if d != first {
            return Err(crate::Error::invalid(
                op,
                format!("inputs are on {first:?} and {d:?}; move them to one device"),
            ));
        }
    }
    Ok(first)
}

impl Device {
    /// `cpu`, `cuda` (GPU 0) or `cuda:N`, as PyTorch spells devices. CUDA needs the `cuda` feature.
    pub fn parse(s: &str) -> crate::Result<Device> {
        let bad = |why: &str| crate::Error::invalid("device", format!("`{s}`: {why}"));
        match s {
            "cpu" => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                #[cfg(feature = "cuda")]
                Some(n) => n.parse().map(Device::Cuda).map_err(|_| bad("the GPU index must be a number")),
                #[cfg(not(feature = "cuda"))]
                Some(_) => Err(bad("this build has no CUDA backend (build with `--features cuda`)")),
                None if s == "cuda" => Err(bad("this build has no CUDA backend (build with `--features cuda`)")),
                None => Err(bad("expected cpu, cuda or cuda:N")),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Storage {
    /// The host storage; a tensor on another device is an error naming it (move it with `to_device`).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn cpu(&self, op: &'static str) -> crate::Result<&CpuStorage> {
        match self {
            Storage::Cpu(c) => Ok(c),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => Err(s.not_on_host(op)),
        }
    }

    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn cpu_mut(&mut self, op: &'static str) -> crate::Result<&mut CpuStorage> {
        match self {
            Storage::Cpu(c) => Ok(c),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => Err(s.not_on_host(op)),
        }
    }
}

impl Drop for CpuStorage {
    fn drop(&mut self) {
        if let CpuStorage::F32(v) = self {
            crate::cpu::pool::give_back(std::mem::take(v));
        }
    }
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::Mapped(m) => m.dtype,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::U8(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
            CpuStorage::Mapped(m) => m.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces a file-mapped buffer by an owned copy (before writing to it).
    pub fn make_owned(&mut self) {
        let CpuStorage::Mapped(m) = self else { return };
        let owned = match m.dtype {
            DType::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(m.bytes())),
            DType::BF16 => CpuStorage::BF16(bytemuck::pod_collect_to_vec(m.bytes())),
            DType::F16 => CpuStorage::F16(bytemuck::pod_collect_to_vec(m.bytes())),
            DType::U8 => CpuStorage::U8(m.bytes().to_vec()),
            DType::I64 => CpuStorage::I64(bytemuck::pod_collect_to_vec(m.bytes())),
        };
        *self = owned;
    }

    pub fn zeros(dtype: DType, n: usize) -> Self {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::U8 => CpuStorage::U8(vec![0; n]),
            DType::I64 => CpuStorage::I64(vec![0; n]),
        }
    }
}

/// Typed access to a `CpuStorage`, so kernels can be written once over `T`.
pub trait CpuElement: WithDType + bytemuck::Pod {
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
    fn wrap(v: Vec<Self>) -> CpuStorage;
}

macro_rules! cpu_element {
    ($t:ty, $v:ident) => {
        impl CpuElement for $t {
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$v(v) => Some(v),
                    CpuStorage::Mapped(m) => m.typed::<Self>(),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$v(v)
            }
        }
    };
}

cpu_element!(f32, F32);
cpu_element!(bf16, BF16);
cpu_element!(f16, F16);
cpu_element!(u8, U8);
cpu_element!(i64, I64);
