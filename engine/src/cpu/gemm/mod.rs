//! Single-precision general matrix multiply, BLIS-style.
//!
//! # Design
//! - **Micro-kernel.** An MR×NR tile of C lives in vector registers; each depth step loads NR
//!   values of packed B and broadcasts MR values of packed A into FMAs. On CPUs with AVX-512F the
//!   12×32 zmm kernel (24 accumulators) is picked at run time; otherwise a 6×16 kernel on
//!   `wide::f32x8` (12 accumulators, AVX2 + FMA under the workspace's x86-64-v3 flags).
//! - **Blocking.** Depth is cut into blocks of ≤ KC (384); for each depth block, up to MC (2048)
//!   rows of A are packed into MR-row panels in a buffer shared by all tasks, and each task packs
//!   its own block of ≤ NC (512) columns of B into NR-column panels (thread-local, sized for
//!   that core's L2). Inside a task, each A micro-panel (MR×kc, in L1) sweeps all of the task's
//!   B micro-panels (streamed from L2).
//! - **Packing** reads any strides, so transposed and strided views cost no more than plain
//!   ones: row-major A and the transposed `Wᵀ` view go through 8×8 in-register transposes.
//!   A panels are packed on first use by whichever task needs them (no separate packing phase
//!   and barrier), and the source of the next panel is prefetched while the current one is
//!   being used.
//! - **Threads.** Each depth block's m×n output is cut into a grid of tasks, column blocks and/or
//!   row blocks, chosen by a small cost model (balanced rounds, B re-packing per row block) and
//!   run on rayon's pool; the loop nest itself runs inside the pool.
//! - Edge tiles (partial MR/NR) and C with a non-unit column stride go through a small
//!   register-tile buffer and a scalar write-back. A column-major C is handled by computing
//!   Cᵀ = Bᵀ·Aᵀ, which makes its columns the contiguous side.
//! - Tiny products (m·n·k < 32768) and matrix-vector shapes use a plain loop.

mod microkernel;
mod pack;
#[cfg(test)]
mod tests;

use microkernel::MicroKernel;
use rayon::prelude::*;
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// How a GEMM may use threads. `Rayon` splits the work over the global rayon pool;
/// `Serial` runs on the calling thread (callers that already parallelise over a batch use it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallelism {
    Serial,
    Rayon,
}

/// C = alpha · A·B + beta · C, all f32, with general strides (in elements, non-negative):
/// A is m×k with A[i][p] = a[i*rsa + p*csa]; B is k×n with B[p][j] = b[p*rsb + j*csb];
/// C is m×n with C[i][j] = c[i*rsc + j*csc]. beta == 0 means C is not read (may hold NaN).
/// The caller guarantees the slices are long enough (checked, see Panics); m, n or k may be 0.
///
/// A transposed operand is the same data with its two strides swapped (row-major A: `rsa = k,
/// csa = 1`; its transpose: `rsa = 1, csa = m`). When `alpha == 0` or `k == 0`, A and B are not
/// read and C becomes `beta·C`.
///
/// # Panics
/// If a slice is too short for its shape and strides (checked up front, also in release builds,
/// because the kernels write C through raw pointers).
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    par: Parallelism,
) {
    sgemm_with(None, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc, par)
}

/// Which micro-kernel family runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KernelKind {
    /// 6×16 on `wide::f32x8`.
    Wide,
    /// 12×32 on AVX-512F zmm registers.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The best kernel this CPU supports. `ENGINE_SGEMM_KERNEL=wide` forces the portable one
/// (for benchmarking and testing it on AVX-512 machines).
fn kernel_kind() -> KernelKind {
    static KIND: OnceLock<KernelKind> = OnceLock::new();
    *KIND.get_or_init(|| {
        let forced_wide = std::env::var("ENGINE_SGEMM_KERNEL").is_ok_and(|v| v == "wide");
        #[cfg(target_arch = "x86_64")]
        if !forced_wide && std::arch::is_x86_feature_detected!("avx512f") {
            return KernelKind::Avx512;
        }
        let _ = forced_wide;
        KernelKind::Wide
    })
}

/// `rows × cols` elements at `rs`/`cs` strides fit in `len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    (rows - 1)
        .checked_mul(rs)
        .and_then(|x| (cols - 1).checked_mul(cs).and_then(|y| x.checked_add(y)))
        .is_some_and(|last| last < len)
}

/// Distinct (i, j) of a `rows × cols` view at strides `rs`/`cs` address distinct elements.
fn no_self_overlap(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    // Order the two dimensions by stride; each must step over the whole extent of the inner one.
    let ((n_in, s_in), (n_out, s_out)) = if rs <= cs { ((rows, rs), (cols, cs)) } else { ((cols, cs), (rows, rs)) };
    (n_in <= 1 || s_in >= 1) && (n_out <= 1 || s_out > (n_in - 1) * s_in)
}

/// `sgemm` with the path forced: `None` picks as `sgemm` does; `Some(kind)` always takes the
/// packed path with that kernel (tests use it to cover every kernel on small shapes).
#[allow(clippy::too_many_arguments)]
fn sgemm_with(
    forced: Option<KernelKind>,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    par: Parallelism,
) {
    assert!(fits(c.len(), m, n, rsc, csc), "sgemm: C slice too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale_c(m, n, beta, c, rsc, csc);
        return;
    }
    assert!(fits(a.len(), m, k, rsa, csa), "sgemm: A slice too short");
    assert!(fits(b.len(), k, n, rsb, csb), "sgemm: B slice too short");

    // The kernels want C's columns contiguous; for a column-major C compute Cᵀ = Bᵀ·Aᵀ instead.
    let g = if csc != 1 && rsc == 1 {
        Gemm { m: n, n: m, k, alpha, beta, a: b, rsa: csb, csa: rsb, b: a, rsb: csa, csb: rsa, rsc: csc, csc: rsc }
    } else {
        Gemm { m, n, k, alpha, beta, a, rsa, csa, b, rsb, csb, rsc, csc }
    };

    let kind = match forced {
        Some(kind) => kind,
        None if g.m.saturating_mul(g.n).saturating_mul(g.k) < SMALL || g.m == 1 || g.n == 1 => {
            gemm_small(&g, c);
            return;
        }
        None => kernel_kind(),
    };
    // A forced AVX-512 kernel still needs the CPU to have it.
    #[cfg(target_arch = "x86_64")]
    let kind = if kind == KernelKind::Avx512 && !std::arch::is_x86_feature_detected!("avx512f") {
        KernelKind::Wide
    } else {
        kind
    };
    // Tasks may only run concurrently when they write disjoint elements.
    let par = if no_self_overlap(g.m, g.n, g.rsc, g.csc) { par } else { Parallelism::Serial };
    match kind {
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512 => gemm_blocked::<microkernel::Avx512<12, 2>>(&g, c, par),
        KernelKind::Wide => gemm_blocked::<microkernel::Wide8<6, 2>>(&g, c, par),
    }
}

/// Below this many multiply-adds the plain loop beats packing.
const SMALL: usize = 32 * 1024;

/// The problem after orientation. Same meaning as `sgemm`'s arguments.
#[derive(Clone, Copy)]
struct Gemm<'a> {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    a: &'a [f32],
    rsa: usize,
    csa: usize,
    b: &'a [f32],
    rsb: usize,
    csb: usize,
    rsc: usize,
    csc: usize,
}

/// C = beta·C (C := 0 when beta == 0, without reading it).
fn scale_c(m: usize, n: usize, beta: f32, c: &mut [f32], rsc: usize, csc: usize) {
    if beta == 1.0 {
        return;
    }
    for i in 0..m {
        for j in 0..n {
            let x = &mut c[i * rsc + j * csc];
            *x = if beta == 0.0 { 0.0 } else { beta * *x };
        }
    }
}

/// Plain i-p-j loop for tiny problems and matrix-vector shapes.
fn gemm_small(g: &Gemm, c: &mut [f32]) {
    let Gemm { m, n, k, alpha, beta, a, rsa, csa, b, rsb, csb, rsc, csc } = *g;
    scale_c(m, n, beta, c, rsc, csc);
    if n == 1 {
        // Dot products: accumulate in a register rather than in C.
        for i in 0..m {
            let mut s = 0f32;
            for p in 0..k {
                s += a[i * rsa + p * csa] * b[p * rsb];
            }
            c[i * rsc] += alpha * s;
        }
        return;
    }
    for i in 0..m {
        for p in 0..k {
            let aip = alpha * a[i * rsa + p * csa];
            if csc == 1 && csb == 1 {
                let cr = &mut c[i * rsc..i * rsc + n];
                let br = &b[p * rsb..p * rsb + n];
                for (x, &y) in cr.iter_mut().zip(br) {
                    *x += aip * y;
                }
            } else {
                for j in 0..n {
                    c[i * rsc + j * csc] += aip * b[p * rsb + j * csb];
                }
            }
        }
    }
}

/// A 64-byte aligned chunk of a packing buffer.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    /// Packed block of A (on the thread that runs the loop nest).
    static A_BUF: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    /// Packed block of B (on whichever thread runs a task).
    static B_BUF: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on a 64-byte aligned scratch slice of `len` f32 kept in `key` between calls. The
/// buffer is taken out of the thread-local while in use, so a nested call (e.g. a rayon task
/// stolen while waiting) gets a fresh one instead of a conflicting borrow.
fn with_scratch<R>(
    key: &'static std::thread::LocalKey<Cell<Vec<Line>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut v = key.with(Cell::take);
    let lines = len.div_ceil(16);
    if v.len() < lines {
        v = Vec::new();
        v.resize(lines, Line([0.0; 16]));
    }
    let r = f(&mut bytemuck::cast_slice_mut::<Line, f32>(&mut v)[..len]);
    key.with(|cell| cell.set(v));
    r
}

/// Raw C pointer shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: the pointer is only dereferenced for tiles owned by exactly one task (the task grid
// partitions C, and C's strides were checked not to alias distinct elements when running
// concurrently), and the `&mut [f32]` it came from outlives every task.
unsafe impl Send for CPtr {}
// SAFETY: see `Send`.
unsafe impl Sync for CPtr {}

/// Splits `total` items into `parts` near-equal consecutive ranges; returns range `idx`.
fn split(total: usize, parts: usize, idx: usize) -> (usize, usize) {
    let base = total / parts;
    let rem = total % parts;
    let start = idx * base + idx.min(rem);
    (start, start + base + usize::from(idx < rem))
}

/// Task grid over `mp` row panels and `np` column panels: (row blocks, column blocks).
///
/// Each task packs the B panels of its column block, so row blocks duplicate B packing; column
/// blocks wider than `nc_panels` would not fit the L2. Picks the grid with the least estimated
/// time on `threads` threads, counting a task as (row panels × column panels) tile computations
/// plus `pack_cost` tiles per B panel it packs, and tasks as run in rounds of `threads`.
fn task_grid(mp: usize, np: usize, threads: usize, nc_panels: usize, pack_cost: f64) -> (usize, usize) {
    let cb_min = np.div_ceil(nc_panels.max(1));
    if threads <= 1 {
        return (1, cb_min);
    }
    let mut best = (f64::INFINITY, 1, cb_min);
    for cb in cb_min..=np.min(cb_min.max(4 * threads)) {
        for rb in 1..=mp.min(4 * threads) {
            let rounds = (rb * cb).div_ceil(threads) as f64;
            let (rows, cols) = (mp.div_ceil(rb) as f64, np.div_ceil(cb) as f64);
            let t = rounds * cols * (rows + pack_cost);
            // Strictly better only: ties keep the fewer (earlier) tasks.
            if t < best.0 * (1.0 - 1e-9) {
                best = (t, rb, cb);
            }
        }
    }
    (best.1, best.2)
}

/// Estimated cost of packing one B panel, in micro-kernel tiles (for [`task_grid`]).
const PACK_COST: f64 = 1.0;

/// The blocked, packed GEMM with micro-kernel `K`.
fn gemm_blocked<K: MicroKernel>(g: &Gemm, c: &mut [f32], par: Parallelism) {
    let (mr, nr) = (K::MR, K::NR);
    let Gemm { m, n, k, .. } = *g;
    let threads = match par {
        Parallelism::Serial => 1,
        Parallelism::Rayon => rayon::current_num_threads().max(1),
    };
    let c_ptr = CPtr(c.as_mut_ptr());
    let k_blocks = k.div_ceil(K::KC);
    let kc_max = k.div_ceil(k_blocks);
    let mc_max = K::MC.next_multiple_of(mr);
    let np = n.div_ceil(nr);

    let mp_max = m.min(mc_max).div_ceil(mr);
    let mut states: Vec<AtomicU8> = (0..mp_max).map(|_| AtomicU8::new(EMPTY)).collect();
    let mut body = || {
        with_scratch(&A_BUF, mp_max * mr * kc_max, |a_buf| {
            for ic in (0..m).step_by(mc_max) {
                let mcur = mc_max.min(m - ic);
                let mp = mcur.div_ceil(mr);
                for kb in 0..k_blocks {
                    let pc = kb * kc_max;
                    let kc = kc_max.min(k - pc);
                    for st in states.iter_mut() {
                        *st.get_mut() = EMPTY;
                    }
                    let a_pack = SharedPanels::new(&mut a_buf[..mp * mr * kc], mr * kc, &states[..mp]);
                    let ab = ABlock { ic, mcur, pc, kc };
                    let beta = if kb == 0 { g.beta } else { 1.0 };
                    let (rb, cb) = task_grid(mp, np, threads, K::NC / nr, PACK_COST);
                    let task = |t: usize| {
                        let (p0, p1) = split(mp, rb, t / cb);
                        let (q0, q1) = split(np, cb, t % cb);
                        // Tasks sharing rows start their sweeps at staggered panels, so that they
                        // pack different A panels rather than wait on each other.
                        let start = (t % cb) * (p1 - p0) / cb;
                        if p0 < p1 && q0 < q1 {
                            run_task::<K>(g, &a_pack, ab, c_ptr, (p0, p1, start), (q0, q1), beta);
                        }
                    };
                    if threads > 1 && rb * cb > 1 {
                        (0..rb * cb).into_par_iter().for_each(task);
                    } else {
                        (0..rb * cb).for_each(task);
                    }
                }
            }
        })
    };
    if threads > 1 {
        // Run the whole loop nest on a pool thread: its parallel phases then start and join
        // by work-stealing instead of waking the (blocked) calling thread each time.
        rayon::scope(|_| body());
    } else {
        body();
    }
}

/// The A block being multiplied: rows `ic .. ic + mcur`, depth `pc .. pc + kc`.
#[derive(Clone, Copy)]
struct ABlock {
    ic: usize,
    mcur: usize,
    pc: usize,
    kc: usize,
}

const EMPTY: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
const POISONED: u8 = 3;

/// Packed A panels shared by the tasks of one phase and packed on first use: whichever task
/// needs a panel first packs it (claiming it with a compare-exchange), the others wait for it.
/// This overlaps packing with computing and needs no separate packing phase and barrier.
struct SharedPanels<'a> {
    ptr: *mut f32,
    panel_len: usize,
    states: &'a [AtomicU8],
    _buf: PhantomData<&'a mut [f32]>,
}

// SAFETY: a panel is written only by the one thread that moved its state EMPTY → BUSY, and read
// only after its state was seen READY (Acquire, pairing with the writer's Release), after which it
// is never written again while `self` lives. Distinct panels are disjoint ranges of the buffer.
unsafe impl Sync for SharedPanels<'_> {}

impl<'a> SharedPanels<'a> {
    /// `buf` holds `states.len()` panels of `panel_len`; all states must be `EMPTY`.
    fn new(buf: &'a mut [f32], panel_len: usize, states: &'a [AtomicU8]) -> Self {
        assert!(buf.len() >= panel_len * states.len());
        SharedPanels { ptr: buf.as_mut_ptr(), panel_len, states, _buf: PhantomData }
    }

    /// Whether panel `i` has been packed already.
    fn is_ready(&self, i: usize) -> bool {
        self.states[i].load(Ordering::Relaxed) == READY
    }

    /// Panel `i`, packing it with `pack` first if no task has yet.
    fn get(&self, i: usize, pack: impl FnOnce(&mut [f32])) -> &[f32] {
        let st = &self.states[i];
        if st.load(Ordering::Acquire) != READY {
            if st.compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Acquire).is_ok() {
                /// Marks the panel poisoned if `pack` unwinds, so that waiters panic too
                /// instead of spinning forever.
                struct Poison<'s>(&'s AtomicU8);
                impl Drop for Poison<'_> {
                    fn drop(&mut self) {
                        self.0.store(POISONED, Ordering::Release);
                    }
                }
                let guard = Poison(st);
                // SAFETY: we won EMPTY → BUSY, so no one else writes or reads panel i until we
                // publish READY; the range is inside the buffer (checked in `new`).
                pack(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.panel_len), self.panel_len) });
                std::mem::forget(guard);
                st.store(READY, Ordering::Release);
            } else {
                let mut spins = 0u32;
                loop {
                    match st.load(Ordering::Acquire) {
                        READY => break,
                        POISONED => panic!("sgemm: packing failed on another thread"),
                        _ if spins < 1 << 12 => {
                            spins += 1;
                            std::hint::spin_loop();
                        }
                        _ => std::thread::yield_now(),
                    }
                }
            }
        }
        // SAFETY: panel i is READY: fully written (Acquire above), never written again.
        unsafe { std::slice::from_raw_parts(self.ptr.add(i * self.panel_len), self.panel_len) }
    }
}

/// One task: packs B panels `q0..q1` (depth of `ab`) and computes the tiles of row panels
/// `p0..p1` of the A block × those column panels, sweeping the row panels from `p0 + start`
/// (wrapping around).
#[allow(clippy::too_many_arguments)]
fn run_task<K: MicroKernel>(
    g: &Gemm,
    a_pack: &SharedPanels,
    ab: ABlock,
    c: CPtr,
    (p0, p1, start): (usize, usize, usize),
    (q0, q1): (usize, usize),
    beta: f32,
) {
    let (mr, nr) = (K::MR, K::NR);
    let ABlock { ic, mcur, pc, kc } = ab;
    let n = g.n;
    with_scratch(&B_BUF, (q1 - q0) * nr * kc, |b_pack| {
        let j0 = q0 * nr;
        pack::pack_block(b_pack, nr, g.b, g.csb, g.rsb, j0, (q1 * nr).min(n) - j0, pc, kc);
        let mut tile = Tile([0.0; TILE]);
        for idx in 0..p1 - p0 {
            let p = p0 + (start + idx) % (p1 - p0);
            let a_panel = a_pack.get(p, |dst| {
                let r0 = p * mr;
                pack::pack_panel(dst, mr, g.a, g.rsa, g.csa, ic + r0, mr.min(mcur - r0), pc, kc);
            });
            // The next panel in the sweep, if it still needs packing: its source is prefetched
            // a slice before each of this row's kernel calls, so it arrives just before it's
            // packed (all at once would overflow the miss buffers or be evicted by then).
            let next =
                (idx + 1 < p1 - p0).then(|| p0 + (start + idx + 1) % (p1 - p0)).filter(|&pn| !a_pack.is_ready(pn));
            let i0 = ic + p * mr;
            let rows = mr.min(ic + mcur - i0);
            for (qi, (q, b_panel)) in (q0..q1).zip(b_pack.chunks_exact(nr * kc)).enumerate() {
                if let Some(pn) = next {
                    let r0 = pn * mr;
                    let src = (g.a, g.rsa, g.csa, ic + r0, mr.min(mcur - r0), pc, kc);
                    pack::prefetch_panel_part(src, qi, q1 - q0);
                }
                let j0 = q * nr;
                let cols = nr.min(n - j0);
                if rows == mr && cols == nr && g.csc == 1 {
                    // SAFETY: the packed panels hold MR·kc and NR·kc values; rows i0..i0+MR and
                    // columns j0..j0+NR are inside C (checked by `fits` in `sgemm_with`), columns
                    // are contiguous (csc == 1), and this task alone owns this tile. The kernel's
                    // CPU features were detected before it was chosen.
                    unsafe {
                        K::run(kc, a_panel.as_ptr(), b_panel.as_ptr(), c.0.add(i0 * g.rsc + j0), g.rsc, g.alpha, beta)
                    };
                } else {
                    // SAFETY: `tile` holds MR·NR ≤ TILE values, written as MR rows of NR; the
                    // panels are as above.
                    unsafe { K::run(kc, a_panel.as_ptr(), b_panel.as_ptr(), tile.0.as_mut_ptr(), nr, 1.0, 0.0) };
                    for i in 0..rows {
                        for j in 0..cols {
                            let v = g.alpha * tile.0[i * nr + j];
                            // SAFETY: (i0 + i, j0 + j) is inside C (rows/cols are clipped to m/n,
                            // C's extent was checked), and this task alone owns this tile.
                            unsafe {
                                let x = c.0.add((i0 + i) * g.rsc + (j0 + j) * g.csc);
                                *x = if beta == 0.0 { v } else { v + beta * *x };
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Largest MR·NR of any kernel.
const TILE: usize = 1024;

/// Register-tile spill buffer for edge tiles.
#[repr(C, align(64))]
struct Tile([f32; TILE]);
