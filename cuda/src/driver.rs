//! The only module that uses `cust` (the CUDA driver API binding): device/context, buffers, module
//! loading and launches. Swapping the binding means rewriting this file only.

use crate::args::{pack, Arg};
use crate::{Error, Result};
use cust::context::Context;
use cust::device::DeviceAttribute;
use cust::memory::{AsyncCopyDestination, CopyDestination, DeviceBuffer, DeviceCopy};
use cust::stream::{Stream, StreamFlags};
use kernels::{Kernel, Module};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// `CudaError`'s `Display` asks the driver for a message (which fails without one), so errors are
/// reported by their variant name.
fn driver_err(what: impl Into<String>) -> impl FnOnce(cust::error::CudaError) -> Error {
    let what = what.into();
    move |e| Error::Driver { what, code: format!("{e:?}") }
}

/// Element types a [`Buffer`] holds (bf16/f16 are stored as their `u16` bits).
pub trait Element: DeviceCopy + bytemuck::Pod + Default + 'static {}
impl Element for f32 {}
impl Element for u16 {}
impl Element for u32 {}
impl Element for i32 {}
impl Element for u8 {}
impl Element for i64 {}

/// A GPU with its own stream in the device's primary context. Kernels are launched in order on the one
/// stream, from any thread (a thread calls [`Device::make_current`] once before using it); modules are
/// loaded (JIT-compiled by the driver) on first use. Freed buffers go back to the device's cache
/// ([`Device::cached_bytes`]), as PyTorch's caching allocator does, because `cuMemFree` synchronizes
/// the whole device and `cuMemAlloc` is slow: a training step allocates every op's output. Reuse is safe
/// without events because every launch and copy of a device is ordered on its one stream.
pub struct Device {
    ordinal: u32,
    modules: Mutex<HashMap<Module, cust::module::Module>>,
    stream: Stream,
    cache: Arc<Cache>,
    context: Context,
}

/// Freed allocations by byte size, kept for reuse.
struct Cache {
    free: Mutex<HashMap<usize, Vec<u64>>>,
    device: cust::device::Device,
}

impl Cache {
    fn take(&self, bytes: usize) -> Option<u64> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&bytes).and_then(Vec::pop)
    }

    fn give_back(&self, bytes: usize, ptr: u64) {
        self.free.lock().unwrap_or_else(PoisonError::into_inner).entry(bytes).or_default().push(ptr);
    }

    /// Frees every cached allocation (the caller has the device's context current).
    fn release(&self) {
        let all: Vec<u64> =
            self.free.lock().unwrap_or_else(PoisonError::into_inner).drain().flat_map(|(_, v)| v).collect();
        for ptr in all {
            // SAFETY: every cached pointer came from cuMemAlloc of this device and is owned by the cache
            // alone; nothing queued uses it (a caller synchronizes before releasing).
            let _ = unsafe { cust::memory::cuda_free(cust::memory::DevicePointer::<u8>::from_raw(ptr)) };
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // The last buffer may go on a thread that never opened the device: retaining the primary context
        // makes it current here.
        let context = Context::new(self.device).ok();
        self.release();
        drop(context);
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device(cuda:{})", self.ordinal)
    }
}

impl Device {
    /// Opens GPU `ordinal`. Without a driver, or without that GPU, this is an `Error::Driver`
    /// (e.g. `cuInit failed: NoDevice`), never a panic.
    pub fn new(ordinal: u32) -> Result<Device> {
        cust::init(cust::CudaFlags::empty()).map_err(driver_err("cuInit"))?;
        let dev = cust::device::Device::get_device(ordinal).map_err(driver_err(format!("open device {ordinal}")))?;
        let context = Context::new(dev).map_err(driver_err("create context"))?;
        let stream = Stream::new(StreamFlags::DEFAULT, None).map_err(driver_err("create stream"))?;
        let cache = Arc::new(Cache { free: Mutex::new(HashMap::new()), device: dev });
        Ok(Device { ordinal, modules: Mutex::new(HashMap::new()), stream, cache, context })
    }

    /// Makes the device's context current on the calling thread (once per thread, before other calls
    /// from it; the thread that opened the device already has it).
    pub fn make_current(&self) -> Result<()> {
        cust::context::CurrentContext::set_current(&self.context).map_err(driver_err("make the context current"))
    }

    /// Bytes held by the cache of freed buffers.
    pub fn cached_bytes(&self) -> usize {
        let free = self.cache.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.iter().map(|(bytes, v)| bytes * v.len()).sum()
    }

    /// Frees the cached buffers (PyTorch's `empty_cache`), after the queued work has finished.
    pub fn empty_cache(&self) -> Result<()> {
        self.synchronize()?;
        self.cache.release();
        Ok(())
    }

    /// The driver's CUDA version, e.g. (12, 4).
    pub fn driver_version() -> Result<(i32, i32)> {
        let v = cust::CudaApiVersion::get().map_err(driver_err("cuDriverGetVersion"))?;
        Ok((v.major(), v.minor()))
    }

    fn raw_device(&self) -> Result<cust::device::Device> {
        cust::device::Device::get_device(self.ordinal).map_err(driver_err("get device"))
    }

    /// The GPU's index, as given to [`Device::new`].
    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    fn attribute(&self, a: DeviceAttribute) -> Result<i32> {
        let dev = self.raw_device()?;
        dev.get_attribute(a).map_err(driver_err(format!("device attribute {a:?}")))
    }

    /// Compute capability (major, minor), e.g. (9, 0) for H100/H200.
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        Ok((
            self.attribute(DeviceAttribute::ComputeCapabilityMajor)?,
            self.attribute(DeviceAttribute::ComputeCapabilityMinor)?,
        ))
    }

    pub fn name(&self) -> Result<String> {
        let dev = cust::device::Device::get_device(self.ordinal).map_err(driver_err("get device"))?;
        dev.name().map_err(driver_err("device name"))
    }

    /// A zero-filled buffer of `len` elements (zeroed in stream order).
    pub fn zeros<T: Element>(&self, len: usize) -> Result<Buffer<T>> {
        let mut buf = self.alloc::<T>(len)?;
        // SAFETY: the memset is queued on the stream every use of this buffer is queued on.
        unsafe { buf.inner.set_8_async(0, &self.stream) }.map_err(driver_err("zero a buffer"))?;
        Ok(buf)
    }

    /// A buffer of `len` elements whose contents are unspecified: for outputs a kernel overwrites whole.
    /// From the cache when a freed buffer of the same byte size is there.
    pub fn alloc<T: Element>(&self, len: usize) -> Result<Buffer<T>> {
        // One element at least: a zero-size allocation is an error for the driver.
        let elems = len.max(1);
        let bytes = elems * std::mem::size_of::<T>();
        let inner = match self.cache.take(bytes) {
            // SAFETY: a cached pointer is a live cuMemAlloc allocation of exactly `bytes` bytes (aligned to
            // 256, so for any `T`) that no buffer owns; `Element` types are valid for any bit pattern.
            Some(ptr) => unsafe { DeviceBuffer::from_raw_parts(cust::memory::DevicePointer::from_raw(ptr), elems) },
            None => {
                // SAFETY: as above; callers write every element before reading.
                let fresh = unsafe { DeviceBuffer::uninitialized(elems) };
                match fresh {
                    Ok(b) => b,
                    // Out of memory with buffers cached: free them and try once more.
                    Err(_) => {
                        self.empty_cache()?;
                        unsafe { DeviceBuffer::uninitialized(elems) }
                            .map_err(driver_err(format!("allocate {len} elements")))?
                    }
                }
            }
        };
        Ok(Buffer { inner, len, cache: self.cache.clone() })
    }

    /// A new buffer holding a copy of `src` (device to device).
    pub fn duplicate<T: Element>(&self, src: &Buffer<T>) -> Result<Buffer<T>> {
        let mut out = self.alloc::<T>(src.len)?;
        // SAFETY: queued on the stream every use of both buffers is queued on, so it runs after the
        // work that writes `src` and before any that reads `out`; both hold `src.len.max(1)` elements.
        unsafe { out.inner.async_copy_from(&*src.inner, &self.stream) }.map_err(driver_err("copy device to device"))?;
        Ok(out)
    }

    /// A buffer holding a copy of `data`.
    pub fn upload<T: Element>(&self, data: &[T]) -> Result<Buffer<T>> {
        if data.is_empty() {
            return self.zeros(0);
        }
        let mut buf = self.alloc::<T>(data.len())?;
        // Queued on the device's stream, so it lands after the work that may still read a cached
        // buffer's old contents and before any that reads the new ones, without the device-wide wait
        // a synchronous copy makes (an upload per op, e.g. ids or masks, would drain the GPU each time).
        // SAFETY: `data` is pageable memory (this crate never pins host memory), which the driver
        // stages before the call returns, so it may be dropped after; `buf` holds `data.len()` elements.
        unsafe { buf.inner.async_copy_from(data, &self.stream) }.map_err(driver_err("copy to device"))?;
        Ok(buf)
    }

    /// The buffer's contents, after every launch queued so far has finished.
    pub fn download<T: Element>(&self, buf: &Buffer<T>) -> Result<Vec<T>> {
        self.synchronize()?;
        let mut out = vec![T::default(); buf.len];
        if buf.len > 0 {
            buf.inner.copy_to(&mut out[..]).map_err(driver_err("copy to host"))?;
        }
        Ok(out)
    }

    /// Waits for every queued launch; a kernel fault surfaces here.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err("synchronize (a kernel failed)"))
    }

    /// Queues `kernel` with `args` (checked against its parameter list) on `grid` x `block` threads.
    pub fn launch(&self, kernel: &Kernel, grid: [u32; 3], block: u32, args: &[Arg]) -> Result<()> {
        let mut packed = pack(kernel, args)?;
        let mut modules = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        let module = match modules.entry(kernel.module) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                cust::module::Module::from_ptx(kernel.module.ptx(), &[])
                    .map_err(driver_err(format!("load PTX module {}", kernel.module.name())))?,
            ),
        };
        let function = module.get_function(kernel.name).map_err(driver_err(format!("find kernel {}", kernel.name)))?;
        let pointers = packed.pointers();
        // SAFETY: `pack` checked the arguments against the kernel's parameter list (which a test checks
        // against the PTX), and the op launchers check every buffer against the extents the kernel touches.
        unsafe {
            self.stream
                .launch(&function, (grid[0], grid[1], grid[2]), block, 0, &pointers)
                .map_err(driver_err(format!("launch {}", kernel.name)))
        }
    }
}

/// A device buffer of `len` elements of `T`, in its device's primary context. Dropping it returns the
/// allocation to its device's cache.
pub struct Buffer<T: Element> {
    inner: DeviceBuffer<T>,
    len: usize,
    cache: Arc<Cache>,
}

// SAFETY: a buffer is a device address in the device's primary context, which is one per process and
// usable from any thread that makes it current: every copy goes through a `Device`, and `drop` only
// hands the address to the cache. Nothing in the buffer is thread-affine.
unsafe impl<T: Element> Send for Buffer<T> {}
unsafe impl<T: Element> Sync for Buffer<T> {}

impl<T: Element> Drop for Buffer<T> {
    fn drop(&mut self) {
        // SAFETY: a null, empty DeviceBuffer owns nothing; its drop is a no-op.
        let empty = unsafe { DeviceBuffer::from_raw_parts(cust::memory::DevicePointer::null(), 0) };
        let inner = std::mem::replace(&mut self.inner, empty);
        let bytes = inner.len() * std::mem::size_of::<T>();
        let ptr = inner.as_device_ptr().as_raw();
        // The allocation now belongs to the cache: it must not be freed here.
        std::mem::forget(inner);
        if ptr != 0 {
            self.cache.give_back(bytes, ptr);
        }
    }
}

impl<T: Element> std::fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer<{}>[{}]", std::any::type_name::<T>(), self.len)
    }
}

impl<T: Element> Buffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address, as a launch argument.
    pub fn arg(&self) -> Arg {
        Arg::Ptr(self.inner.as_device_ptr().as_raw())
    }

    /// The address of element `offset` (callers check it is in bounds), as a launch argument.
    pub fn arg_at(&self, offset: usize) -> Arg {
        Arg::Ptr(self.inner.as_device_ptr().as_raw() + (offset * std::mem::size_of::<T>()) as u64)
    }
}
