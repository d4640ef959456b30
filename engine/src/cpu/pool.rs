//! A cache of large f32 buffers, reused by exact length. Training loops allocate the same shapes
//! every step; without reuse each fresh multi-megabyte buffer comes from `mmap` and pays one page
//! fault per 4 KiB on first touch, which on these machines costs more than the op itself.
//! Buffers come back when a tensor's storage is dropped (see `Drop for CpuStorage`).
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers smaller than this are left to the system allocator, which already reuses them well.
const MIN_POOLED: usize = 1 << 18;

/// Default cap on cached bytes; `ENGINE_BUFFER_CACHE_MIB` overrides it at start-up. 384 MiB was
/// the knee on the training-step benchmark: most of the page-fault savings, a third of the memory
/// of a 1 GiB cache.
const DEFAULT_LIMIT_MIB: usize = 384;
const UNSET: usize = usize::MAX;
static LIMIT_BYTES: AtomicUsize = AtomicUsize::new(UNSET);

fn limit_bytes() -> usize {
    let v = LIMIT_BYTES.load(Ordering::Relaxed);
    if v != UNSET {
        return v;
    }
    let mib = std::env::var("ENGINE_BUFFER_CACHE_MIB")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_LIMIT_MIB);
    let bytes = mib << 20;
    // Another thread may have set a limit meanwhile; keep it.
    let _ = LIMIT_BYTES.compare_exchange(UNSET, bytes, Ordering::Relaxed, Ordering::Relaxed);
    LIMIT_BYTES.load(Ordering::Relaxed)
}

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.get_or_insert_with(|| Pool { free: HashMap::new(), bytes: 0 });
    f(pool)
}

/// A buffer of `n` f32 whose contents are unspecified (zeros or a previous tensor's values):
/// for outputs that a kernel overwrites completely.
pub fn alloc_f32(n: usize) -> Vec<f32> {
    if n >= MIN_POOLED {
        if let Some(v) = with_pool(|p| {
            let v = p.free.get_mut(&n).and_then(|list| list.pop());
            if v.is_some() {
                p.bytes -= n * 4;
            }
            v
        }) {
            return v;
        }
    }
    vec![0.0; n]
}

/// A zero-filled buffer of `n` f32.
pub fn alloc_f32_zeroed(n: usize) -> Vec<f32> {
    let mut v = alloc_f32(n);
    if n >= MIN_POOLED {
        use rayon::prelude::*;
        v.par_chunks_mut(1 << 16).for_each(|c| c.fill(0.0));
    }
    v
}

/// Takes a buffer back for reuse (or lets it go if the cache is full or it is small).
pub(crate) fn give_back(v: Vec<f32>) {
    let n = v.len();
    if n < MIN_POOLED || v.capacity() != n {
        return;
    }
    let limit = limit_bytes();
    with_pool(|p| {
        if p.bytes + n * 4 <= limit {
            p.bytes += n * 4;
            p.free.entry(n).or_default().push(v);
        }
    });
}

/// Caps the bytes held for reuse (default 384 MiB, or `ENGINE_BUFFER_CACHE_MIB`); 0 turns caching
/// off. Frees what exceeds it.
pub fn set_cache_limit(bytes: usize) {
    LIMIT_BYTES.store(bytes, Ordering::Relaxed);
    if cached_bytes() > bytes {
        clear();
    }
}

/// Returns every cached buffer to the system.
pub fn clear() {
    with_pool(|p| {
        p.free.clear();
        p.bytes = 0;
    });
}

/// Bytes currently held for reuse.
pub fn cached_bytes() -> usize {
    with_pool(|p| p.bytes)
}
