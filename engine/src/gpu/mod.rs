//! Tensors on a CUDA GPU (feature `cuda`): their storage, the per-thread device handles, and what op
//! families need to dispatch to their launchers in `ops/<family>/cuda.rs`: typed input buffers, new
//! output buffers, and tensors made from them. `transfer.rs` moves tensors between host and device.
mod transfer;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::storage::Storage;
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

pub(crate) use cuda::ops::Strided;

/// A tensor's elements on one GPU, typed by the tensor's dtype (bf16/f16 as their `u16` bits). Each
/// buffer sits in an `Arc` so an op can hold its inputs without holding the storage lock.
#[derive(Clone, Debug)]
pub enum GpuBuf {
    F32(Arc<cuda::Buffer<f32>>),
    BF16(Arc<cuda::Buffer<u16>>),
    F16(Arc<cuda::Buffer<u16>>),
    U8(Arc<cuda::Buffer<u8>>),
    I64(Arc<cuda::Buffer<i64>>),
}

impl GpuBuf {
    pub fn dtype(&self) -> DType {
        match self {
            GpuBuf::F32(_) => DType::F32,
            GpuBuf::BF16(_) => DType::BF16,
            GpuBuf::F16(_) => DType::F16,
            GpuBuf::U8(_) => DType::U8,
            GpuBuf::I64(_) => DType::I64,
        }
    }
}

/// A tensor's storage on GPU `ordinal`.
#[derive(Clone, Debug)]
pub struct CudaStorage {
    pub(crate) buf: GpuBuf,
    ordinal: u32,
}

impl CudaStorage {
    pub(crate) fn new(buf: GpuBuf, ordinal: u32) -> Self {
        CudaStorage { buf, ordinal }
    }

    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    pub(crate) fn not_on_host(&self, op: &'static str) -> Error {
        Error::invalid(
            op,
            format!(
                "the tensor is on cuda:{} and `{op}` has no GPU path; move it with .to_device(Device::Cpu) first",
                self.ordinal
            ),
        )
    }
}

/// One `cuda::Device` (one stream, one cache of freed buffers) per GPU for the whole process, so every
/// thread's work on a GPU is ordered on one stream: a tensor made on one thread can be used on another.
static DEVICES: OnceLock<Mutex<HashMap<u32, Arc<cuda::Device>>>> = OnceLock::new();

thread_local! {
    /// The GPUs whose context this thread has made current.
    static CURRENT: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
}

fn device(ordinal: u32) -> cuda::Result<Arc<cuda::Device>> {
    let mut devices = DEVICES.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(PoisonError::into_inner);
    let dev = match devices.get(&ordinal) {
        Some(d) => d.clone(),
        None => {
            let d = Arc::new(cuda::Device::new(ordinal)?);
            devices.insert(ordinal, d.clone());
            d
        }
    };
    drop(devices);
    if !CURRENT.with(|c| c.borrow().contains(&ordinal)) {
        dev.make_current()?;
        CURRENT.with(|c| c.borrow_mut().insert(ordinal));
    }
    Ok(dev)
}

/// Runs `f` on GPU `ordinal`'s handle (opened on first use). Driver and launcher errors become engine
/// errors naming `op` and the device.
pub(crate) fn with_device<R>(
    op: &'static str,
    ordinal: u32,
    f: impl FnOnce(&cuda::Device) -> cuda::Result<R>,
) -> Result<R> {
    device(ordinal).and_then(|d| f(&d)).map_err(|e| Error::invalid(op, format!("cuda:{ordinal}: {e}")))
}

/// Bytes of freed GPU memory kept for reuse on GPU `ordinal` (PyTorch's reserved minus allocated).
pub fn cached_bytes(ordinal: u32) -> Result<usize> {
    with_device("cached_bytes", ordinal, |d| Ok(d.cached_bytes()))
}

/// Frees the cached GPU memory of GPU `ordinal` (PyTorch's `torch.cuda.empty_cache()`).
pub fn empty_cache(ordinal: u32) -> Result<()> {
    with_device("empty_cache", ordinal, |d| d.empty_cache())
}

/// Waits for every kernel queued on GPU `ordinal` (a kernel fault surfaces here).
pub fn synchronize(ordinal: u32) -> Result<()> {
    with_device("synchronize", ordinal, |d| d.synchronize())
}

/// Strides as the kernels take them.
pub(crate) fn strides_of(layout: &Layout) -> Vec<isize> {
    layout.strides().iter().map(|&s| s as isize).collect()
}

impl Tensor {
    /// This tensor's f32 buffer on the GPU (the whole storage; read it through `layout()`).
    pub(crate) fn gpu_f32(&self, op: &'static str) -> Result<Arc<cuda::Buffer<f32>>> {
        match &*self.storage_read() {
            Storage::Cuda(CudaStorage { buf: GpuBuf::F32(b), .. }) => Ok(b.clone()),
            Storage::Cuda(s) => Err(Error::DType { op, expected: DType::F32, got: s.buf.dtype() }),
            Storage::Cpu(_) => Err(Error::invalid(op, "expected a tensor on the GPU, got one on the host")),
        }
    }

    /// This tensor's GPU buffer, whatever its dtype.
    pub(crate) fn gpu_buf(&self, op: &'static str) -> Result<GpuBuf> {
        match &*self.storage_read() {
            Storage::Cuda(s) => Ok(s.buf.clone()),
            Storage::Cpu(_) => Err(Error::invalid(op, "expected a tensor on the GPU, got one on the host")),
        }
    }

    /// A contiguous f32 tensor of `shape` on GPU `ordinal` over `buf`, with `node` for autograd.
    pub(crate) fn from_gpu(
        buf: cuda::Buffer<f32>,
        ordinal: u32,
        shape: &[usize],
        node: Option<crate::autograd::Node>,
    ) -> Tensor {
        Tensor::from_gpu_buf(GpuBuf::F32(Arc::new(buf)), ordinal, shape, node)
    }

    pub(crate) fn from_gpu_buf(
        buf: GpuBuf,
        ordinal: u32,
        shape: &[usize],
        node: Option<crate::autograd::Node>,
    ) -> Tensor {
        let t = Tensor::from_any_storage(Storage::Cuda(CudaStorage::new(buf, ordinal)), shape);
        match node {
            Some(n) => t.with_node(n),
            None => t,
        }
    }
}

/// `f` applied to the f32 buffer of the storage behind `t`, mutably (optimizer updates, accumulation).
/// Fails if an op still holds the buffer (it cannot, between ops) or the tensor is not f32 on a GPU.
pub(crate) fn update_gpu_f32<R>(
    t: &Tensor,
    op: &'static str,
    f: impl FnOnce(u32, &mut cuda::Buffer<f32>) -> Result<R>,
) -> Result<R> {
    let mut guard = t.storage_write();
    match &mut *guard {
        Storage::Cuda(CudaStorage { buf: GpuBuf::F32(b), ordinal }) => {
            let ordinal = *ordinal;
            let buf = Arc::get_mut(b)
                .ok_or_else(|| Error::invalid(op, "the GPU buffer is shared by a running op; cannot update it"))?;
            f(ordinal, buf)
        }
        Storage::Cuda(s) => Err(Error::DType { op, expected: DType::F32, got: s.buf.dtype() }),
        Storage::Cpu(_) => Err(Error::invalid(op, "expected a tensor on the GPU, got one on the host")),
    }
}

/// `t`'s f32 elements on GPU `ordinal` in row-major order starting at element 0 of the returned
/// buffer: the storage itself when `t` is contiguous at offset 0, else a gathered copy (the
/// launchers other than unary/binary take neither strides nor offsets).
pub(crate) fn dense_f32(op: &'static str, ordinal: u32, t: &Tensor) -> Result<Arc<cuda::Buffer<f32>>> {
    let buf = t.gpu_f32(op)?;
    if t.is_contiguous() && t.layout().offset() == 0 {
        return Ok(buf);
    }
    let strides = strides_of(t.layout());
    let out = with_device(op, ordinal, |d| {
        let mut out = d.alloc::<f32>(t.numel())?;
        if t.numel() > 0 {
            let x = Strided { buf: &buf, offset: t.layout().offset(), strides: &strides };
            cuda::ops::unary(d, x, &mut out, t.shape(), cuda::kernels::ops::Unary::Copy, 0.0)?;
        }
        Ok(out)
    })?;
    Ok(Arc::new(out))
}

/// A new buffer of `T` over `shape` from a kernel that reads `a` and `b` (f32 on GPU `ordinal`) through
/// the layouts `la` / `lb` they were broadcast to (strides, offsets: nothing is materialized).
pub(crate) fn map_pair<T: cuda::Element>(
    op: &'static str,
    ordinal: u32,
    (a, la): (&Tensor, &Layout),
    (b, lb): (&Tensor, &Layout),
    shape: &[usize],
    launch: impl FnOnce(&cuda::Device, Strided, Strided, &mut cuda::Buffer<T>) -> cuda::Result<()>,
) -> Result<cuda::Buffer<T>> {
    let (ab, bb) = (a.gpu_f32(op)?, b.gpu_f32(op)?);
    let (sa, sb) = (strides_of(la), strides_of(lb));
    with_device(op, ordinal, |d| {
        let mut out = d.alloc::<T>(shape.iter().product())?;
        let av = Strided { buf: &ab, offset: la.offset(), strides: &sa };
        let bv = Strided { buf: &bb, offset: lb.offset(), strides: &sb };
        launch(d, av, bv, &mut out)?;
        Ok(out)
    })
}
