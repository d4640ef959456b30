//! `Tensor`: a cheap handle (`Arc`) to storage + layout, plus what autograd needs to know about it.
use crate::autograd::{self, Node};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::random::Rng;
use crate::storage::{CpuElement, CpuStorage, Device, Storage};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Identity of a tensor handle: views and results of ops get new ids; clones share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

pub(crate) enum Track {
    /// A constant: no gradient flows to or through it.
    None,
    /// A leaf the user asked gradients for (a parameter).
    Variable,
    /// The result of a recorded op.
    Op(Node),
}

pub(crate) struct Inner {
    pub(crate) id: TensorId,
    pub(crate) storage: Arc<RwLock<Storage>>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) track: Track,
}

#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

/// Read access to the elements of a contiguous tensor, as a slice of exactly `numel` elements.
pub struct ReadGuard<'a, T: CpuElement> {
    guard: RwLockReadGuard<'a, Storage>,
    start: usize,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: CpuElement> std::ops::Deref for ReadGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // The dtype and the device (host) were checked when the guard was made; neither ever changes.
        match &*self.guard {
            Storage::Cpu(cpu) => T::slice(cpu).map(|s| &s[self.start..self.start + self.len]).unwrap_or(&[]),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => &[],
        }
    }
}

fn poisoned<T>(e: std::sync::PoisonError<T>) -> T {
    // A panic in another thread while it held the lock leaves the data as it was: still usable.
    e.into_inner()
}

impl Tensor {
    // ----- construction -------------------------------------------------------------------------

    pub(crate) fn from_parts(storage: Arc<RwLock<Storage>>, layout: Layout, dtype: DType, track: Track) -> Tensor {
        Tensor(Arc::new(Inner { id: TensorId::new(), storage, layout, dtype, track }))
    }

    pub(crate) fn from_storage(storage: CpuStorage, shape: &[usize]) -> Tensor {
        let dtype = storage.dtype();
        Tensor::from_parts(Arc::new(RwLock::new(Storage::Cpu(storage))), Layout::contiguous(shape), dtype, Track::None)
    }

    /// The result of an op: records `node` on the tape when grad mode is on and an input tracks.
    /// A contiguous tensor over `storage` (on any device), with no autograd history.
    #[cfg(feature = "cuda")]
    pub(crate) fn from_any_storage(storage: Storage, shape: &[usize]) -> Tensor {
        let dtype = match &storage {
            Storage::Cpu(c) => c.dtype(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(g) => g.buf.dtype(),
        };
        Tensor::from_parts(Arc::new(RwLock::new(storage)), Layout::contiguous(shape), dtype, Track::None)
    }

    pub(crate) fn from_op(storage: CpuStorage, shape: &[usize], node: Option<Node>) -> Tensor {
        let t = Tensor::from_storage(storage, shape);
        match node {
            Some(n) => t.with_node(n),
            None => t,
        }
    }

    /// The same tensor: without the `cuda` feature the host is the only device.
    #[cfg(not(feature = "cuda"))]
    pub fn to_device(&self, _device: Device) -> Result<Tensor> {
        Ok(self.clone())
    }

    /// Nothing to move: without the `cuda` feature the host is the only device.
    #[cfg(not(feature = "cuda"))]
    pub fn move_storage(&self, _device: Device) -> Result<()> {
        Ok(())
    }

    /// Moves `self` to the device of `other` (a no-op when they already share one).
    pub fn to_device_of(&self, other: &Tensor) -> Result<Tensor> {
        self.to_device(other.device())
    }

    /// `self` with `node` as its history when there is one.
    pub(crate) fn with_node_opt(self, node: Option<Node>) -> Tensor {
        match node {
            Some(n) => self.with_node(n),
            None => self,
        }
    }

    pub(crate) fn with_node(self, node: Node) -> Tensor {
        let inner = &self.0;
        Tensor::from_parts(inner.storage.clone(), inner.layout.clone(), inner.dtype, Track::Op(node))
    }

    /// A view: same storage, new layout.
    pub(crate) fn view_with(&self, layout: Layout, node: Option<Node>) -> Tensor {
        let track = match node {
            Some(n) => Track::Op(n),
            None => Track::None,
        };
        Tensor::from_parts(self.0.storage.clone(), layout, self.0.dtype, track)
    }

    pub fn from_vec<T: CpuElement>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::shape(
                "from_vec",
                format!("{} elements do not fill shape {shape:?} ({numel} elements)", data.len()),
            ));
        }
        Ok(Tensor::from_storage(T::wrap(data), shape))
    }

    pub fn from_slice<T: CpuElement>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A 0-dimensional f32 tensor.
    pub fn scalar(v: f32) -> Tensor {
        Tensor::from_storage(CpuStorage::F32(vec![v]), &[])
    }

    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_storage(CpuStorage::zeros(dtype, shape.iter().product()), shape)
    }

    pub fn ones(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype)
    }

    pub fn full(value: f64, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = shape.iter().product();
        let s = match dtype {
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::BF16 => CpuStorage::BF16(vec![half::bf16::from_f64(value); n]),
            DType::F16 => CpuStorage::F16(vec![half::f16::from_f64(value); n]),
            DType::U8 => CpuStorage::U8(vec![value as u8; n]),
            DType::I64 => CpuStorage::I64(vec![value as i64; n]),
        };
        Ok(Tensor::from_storage(s, shape))
    }

    /// Zeros of `self`'s shape and dtype, on `self`'s device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros_on(self.shape(), self.dtype(), self.device())
    }

    /// Zeros on `device`.
    pub fn zeros_on(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full_on(0.0, shape, dtype, device)
    }

    /// `value` everywhere, on `device` (f32 is filled there; other dtypes are made on the host and moved).
    pub fn full_on(value: f64, shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let (Device::Cuda(o), DType::F32) = (device, dtype) {
            let n: usize = shape.iter().product();
            let buf = crate::gpu::with_device("full", o, |d| {
                let mut b = d.alloc::<f32>(n)?;
                cuda::ops::fill(d, &mut b, n, value as f32)?;
                Ok(b)
            })?;
            return Ok(Tensor::from_gpu(buf, o, shape, None));
        }
        Tensor::full(value, shape, dtype)?.to_device(device)
    }

    pub fn arange(start: f32, end: f32, step: f32) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || (end - start) / step < 0.0 {
            return Err(Error::invalid("arange", format!("bad range {start}..{end} step {step}")));
        }
        let n = ((end - start) / step).ceil() as usize;
        let v: Vec<f32> = (0..n).map(|i| start + i as f32 * step).collect();
        Tensor::from_vec(v, &[n])
    }

    /// `start..end` as i64 (indices, positions).
    pub fn arange_i64(start: i64, end: i64) -> Result<Tensor> {
        if end < start {
            return Err(Error::invalid("arange_i64", format!("bad range {start}..{end}")));
        }
        let v: Vec<i64> = (start..end).collect();
        let n = v.len();
        Tensor::from_vec(v, &[n])
    }

    /// Uniform in [lo, hi), f32, from a seeded generator.
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Result<Tensor> {
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| lo + (hi - lo) * rng.next_f32()).collect();
        Tensor::from_vec(v, shape)
    }

    /// Normal(mean, std), f32, from a seeded generator.
    pub fn randn(shape: &[usize], mean: f32, std: f32, seed: u64) -> Result<Tensor> {
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| mean + std * rng.next_normal()).collect();
        Tensor::from_vec(v, shape)
    }

    /// PyTorch's `kaiming_uniform_(w, a)` for a weight whose dim 1 (and beyond) is the fan-in:
    /// bound = gain·√(3/fan_in), gain = √(2/(1+a²)). `nn.Linear` uses a = √5, i.e. bound = 1/√fan_in.
    pub fn kaiming_uniform(shape: &[usize], a: f32, seed: u64) -> Result<Tensor> {
        if shape.len() < 2 {
            return Err(Error::shape("kaiming_uniform", format!("needs a weight of rank >= 2, got {shape:?}")));
        }
        let fan_in: usize = shape[1..].iter().product();
        if fan_in == 0 {
            return Err(Error::shape("kaiming_uniform", format!("fan-in of {shape:?} is 0")));
        }
        let gain = (2.0 / (1.0 + a * a)).sqrt();
        let bound = gain * (3.0 / fan_in as f32).sqrt();
        Tensor::rand_uniform(shape, -bound, bound, seed)
    }

    // ----- autograd -----------------------------------------------------------------------------

    /// This tensor as a leaf that gradients are computed for (a trainable parameter).
    /// Shares the storage; the returned handle has a new id.
    pub fn requires_grad(&self) -> Result<Tensor> {
        if self.dtype() != DType::F32 {
            return Err(Error::DType { op: "requires_grad", expected: DType::F32, got: self.dtype() });
        }
        Ok(Tensor::from_parts(self.0.storage.clone(), self.0.layout.clone(), self.0.dtype, Track::Variable))
    }

    /// Same values, cut off from the tape.
    pub fn detach(&self) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), self.0.layout.clone(), self.0.dtype, Track::None)
    }

    /// Whether gradients flow to this tensor (a variable or the result of a recorded op).
    pub fn tracks_grad(&self) -> bool {
        !matches!(self.0.track, Track::None)
    }

    pub fn is_variable(&self) -> bool {
        matches!(self.0.track, Track::Variable)
    }

    /// Backpropagate from this scalar; returns the gradients of every variable it depends on.
    pub fn backward(&self) -> Result<autograd::Grads> {
        autograd::backward(self)
    }

    // ----- accessors ----------------------------------------------------------------------------

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> Device {
        #[cfg(feature = "cuda")]
        if let Storage::Cuda(s) = &*self.storage_read() {
            return Device::Cuda(s.ordinal());
        }
        Device::Cpu
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// Size of dim `d`, with a clear error when out of range.
    pub fn dim(&self, d: usize) -> Result<usize> {
        self.0.layout.check_dim("dim", d)?;
        Ok(self.shape()[d])
    }
    pub(crate) fn node(&self) -> Option<&Node> {
        match &self.0.track {
            Track::Op(n) => Some(n),
            _ => None,
        }
    }
    /// Whether two handles view the same storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// Whether the elements live in a memory-mapped file (zero-copy weights).
    pub fn is_memory_mapped(&self) -> bool {
        matches!(&*self.storage_read(), Storage::Cpu(CpuStorage::Mapped(_)))
    }

    pub(crate) fn storage_read(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap_or_else(poisoned)
    }

    pub(crate) fn storage_write(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap_or_else(poisoned)
    }

    /// The elements of a contiguous tensor of dtype `T`, borrowed.
    pub fn read<T: CpuElement>(&self, op: &'static str) -> Result<ReadGuard<'_, T>> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DType { op, expected: T::DTYPE, got: self.dtype() });
        }
        if !self.is_contiguous() {
            return Err(Error::NotContiguous {
                op,
                shape: self.shape().to_vec(),
                strides: self.layout().strides().to_vec(),
            });
        }
        let guard = self.storage_read();
        guard.cpu(op)?;
        Ok(ReadGuard { guard, start: self.layout().offset(), len: self.numel(), _t: std::marker::PhantomData })
    }

    /// The whole storage of dtype `T`, borrowed; index it through `self.layout()` (strided kernels).
    pub(crate) fn read_all<T: CpuElement>(&self, op: &'static str) -> Result<ReadGuard<'_, T>> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DType { op, expected: T::DTYPE, got: self.dtype() });
        }
        let guard = self.storage_read();
        let len = guard.cpu(op)?.len();
        Ok(ReadGuard { guard, start: 0, len, _t: std::marker::PhantomData })
    }

    /// Mutates the elements in place (optimizers). The tensor must be contiguous and own its view of
    /// the storage; every other handle on the same storage sees the change, as in PyTorch.
    pub fn update_in_place<T: CpuElement>(&self, f: impl FnOnce(&mut [T])) -> Result<()> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DType { op: "update_in_place", expected: T::DTYPE, got: self.dtype() });
        }
        if !self.is_contiguous() {
            return Err(Error::NotContiguous {
                op: "update_in_place",
                shape: self.shape().to_vec(),
                strides: self.layout().strides().to_vec(),
            });
        }
        let (start, len) = (self.layout().offset(), self.numel());
        let mut guard = self.storage_write();
        let cpu = guard.cpu_mut("update_in_place")?;
        cpu.make_owned();
        if let Some(s) = T::slice_mut(cpu) {
            f(&mut s[start..start + len]);
        }
        Ok(())
    }

    /// Copies `src` (same shape, f32) into this tensor's storage in place.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::shape("assign", format!("{:?} into {:?}", src.shape(), self.shape())));
        }
        let v = src.to_vec::<f32>()?;
        self.update_in_place::<f32>(|d| d.copy_from_slice(&v))
    }

    /// The elements in row-major order, for any layout.
    pub fn to_vec<T: CpuElement>(&self) -> Result<Vec<T>> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DType { op: "to_vec", expected: T::DTYPE, got: self.dtype() });
        }
        // Reading values out is an explicit host read on any device (PyTorch's `tolist()`).
        if self.device() != Device::Cpu {
            return self.to_device(Device::Cpu)?.to_vec();
        }
        let guard = self.storage_read();
        let data = T::slice(guard.cpu("to_vec")?).unwrap_or(&[]);
        let l = self.layout();
        if l.is_contiguous() {
            return Ok(data[l.offset()..l.offset() + l.numel()].to_vec());
        }
        Ok(l.storage_indices().map(|i| data[i]).collect())
    }

    /// Elements converted to f32, for any dtype and layout (tests, printing).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.to_dtype(DType::F32)?.to_vec::<f32>()
    }

    /// The single value of a one-element tensor, as f32.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape("to_scalar", format!("tensor of shape {:?} is not a scalar", self.shape())));
        }
        Ok(self.to_vec_f32()?[0])
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {:?}, id {}]", self.shape(), self.dtype(), self.id().0)
    }
}

impl std::fmt::Display for Tensor {
    /// Nested brackets like PyTorch, eliding the middle of long dims.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const EDGE: usize = 3;
        let values = match self.to_dtype(DType::F32).and_then(|t| t.to_vec::<f32>()) {
            Ok(v) => v,
            Err(_) => match self.to_vec::<i64>() {
                Ok(v) => v.into_iter().map(|x| x as f32).collect(),
                Err(e) => return write!(f, "<{e}>"),
            },
        };
        fn rec(
            f: &mut std::fmt::Formatter<'_>,
            v: &[f32],
            shape: &[usize],
            depth: usize,
            integer: bool,
        ) -> std::fmt::Result {
            if shape.is_empty() {
                return if integer { write!(f, "{}", v[0] as i64) } else { write!(f, "{:.4}", v[0]) };
            }
            let n = shape[0];
            let inner: usize = shape[1..].iter().product();
            write!(f, "[")?;
            for i in 0..n {
                if n > 2 * EDGE && i == EDGE {
                    write!(f, "...")?;
                    if shape.len() > 1 {
                        write!(f, ",\n{}", " ".repeat(depth + 1))?;
                    } else {
                        write!(f, ", ")?;
                    }
                    continue;
                }
                if n > 2 * EDGE && i > EDGE && i < n - EDGE {
                    continue;
                }
                rec(f, &v[i * inner..(i + 1) * inner], &shape[1..], depth + 1, integer)?;
                if i + 1 < n {
                    if shape.len() > 1 {
                        write!(f, ",\n{}", " ".repeat(depth + 1))?;
                    } else {
                        write!(f, ", ")?;
                    }
                }
            }
            write!(f, "]")
        }
        let integer = matches!(self.dtype(), DType::I64 | DType::U8);
        if values.is_empty() {
            write!(f, "[]")?;
        } else {
            rec(f, &values, self.shape(), 0, integer)?;
        }
        write!(f, "\nTensor[{:?}, {:?}]", self.shape(), self.dtype())
    }
}
