//! Register-blocked micro-kernels.
//!
//! A micro-kernel multiplies one packed MR×kc panel of A (for each p, MR consecutive values
//! A[i][p]) by one packed kc×NR panel of B (for each p, NR consecutive values B[p][j]), keeping
//! the MR×NR tile of C in registers, and then writes `C = alpha·tile + beta·C` into a tile whose
//! rows are `rsc` apart and whose columns are contiguous. The vector dimension is N: each step
//! loads NR/lanes vectors of B and broadcasts MR scalars of A, so the inner loop is nothing but
//! broadcast-FMAs.

/// A micro-kernel together with the cache blocking that suits it.
pub(super) trait MicroKernel {
    /// Rows of the C tile (scalars of A broadcast per step).
    const MR: usize;
    /// Columns of the C tile (a multiple of the vector width).
    const NR: usize;
    /// Largest depth of a packed panel; the A micro-panel (MR×KC) should sit in L1.
    const KC: usize;
    /// Target width of the B block one task packs; KC×NC should sit in L2.
    const NC: usize;
    /// Most rows of A packed at once (shared by all tasks; MC×KC should sit in L3).
    const MC: usize;

    /// Computes one full MR×NR tile.
    ///
    /// # Safety
    /// - `a` is valid for reading `MR * kc` f32 and `b` for reading `NR * kc` f32;
    /// - for every `i < MR`, `c + i * rsc` is valid for writing `NR` consecutive f32 (and for
    ///   reading them when `beta != 0`), and nothing else accesses them during the call;
    /// - the CPU supports the instructions the kernel was compiled for (see each kernel).
    unsafe fn run(kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, alpha: f32, beta: f32);
}

/// Portable kernel on `wide::f32x8` (AVX2 + FMA under the workspace's x86-64-v3 flags; wide's
/// own fallbacks elsewhere). MR×(8·NV) tile: MR·NV accumulators, NV loads of B and MR
/// broadcasts per step. 6×16 uses 12 of the 16 ymm registers for accumulators.
pub(super) struct Wide8<const MR: usize, const NV: usize>;

impl<const MR: usize, const NV: usize> MicroKernel for Wide8<MR, NV> {
    const MR: usize = MR;
    const NR: usize = 8 * NV;
    const KC: usize = 256;
    const NC: usize = 512;
    const MC: usize = 2048;

    #[inline(never)]
    unsafe fn run(kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, alpha: f32, beta: f32) {
        use wide::f32x8;
        // SAFETY (all pointer reads and writes below): the caller guarantees `a` holds MR·kc
        // and `b` holds 8·NV·kc readable f32, and the MR C rows hold 8·NV writable f32 each.
        // `f32x8` is 32 bytes of plain f32 lanes, so unaligned reads/writes of it are fine.
        let mut acc = [[f32x8::ZERO; NV]; MR];
        let mut ap = a;
        let mut bp = b;
        for _ in 0..kc {
            let mut bv = [f32x8::ZERO; NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = unsafe { bp.add(8 * v).cast::<f32x8>().read_unaligned() };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = f32x8::splat(unsafe { *ap.add(i) });
                for (x, bx) in row.iter_mut().zip(bv.iter()) {
                    *x = ai.mul_add(*bx, *x);
                }
            }
            ap = unsafe { ap.add(MR) };
            bp = unsafe { bp.add(8 * NV) };
        }
        let alpha = f32x8::splat(alpha);
        let betav = f32x8::splat(beta);
        for (i, row) in acc.iter().enumerate() {
            let cr = unsafe { c.add(i * rsc) };
            for (v, x) in row.iter().enumerate() {
                let cp = unsafe { cr.add(8 * v).cast::<f32x8>() };
                let out = if beta == 0.0 {
                    *x * alpha
                } else {
                    let old = unsafe { cp.read_unaligned() };
                    x.mul_add(alpha, old * betav)
                };
                unsafe { cp.write_unaligned(out) };
            }
        }
    }
}

/// AVX-512 kernel: MR×(16·NV) tile with MR·NV zmm accumulators (12×32: 24 of the 32 zmm).
/// The broadcasts of A fold into the FMAs as `{1to16}` memory operands.
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx512<const MR: usize, const NV: usize>;

#[cfg(target_arch = "x86_64")]
impl<const MR: usize, const NV: usize> MicroKernel for Avx512<MR, NV> {
    const MR: usize = MR;
    const NR: usize = 16 * NV;
    const KC: usize = 384;
    const NC: usize = 512;
    const MC: usize = 2048;

    /// # Safety
    /// Besides the trait's contract: the CPU must support AVX-512F.
    #[inline(never)]
    unsafe fn run(kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, alpha: f32, beta: f32) {
        // SAFETY: forwarded contract; AVX-512F support is the caller's obligation.
        unsafe { avx512_kernel::<MR, NV>(kc, a, b, c, rsc, alpha, beta) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_kernel<const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    beta: f32,
) {
    use std::arch::x86_64::*;
    // SAFETY (all pointer reads and writes below): as in `MicroKernel::run`'s contract, `a` holds
    // MR·kc and `b` 16·NV·kc readable f32 and the MR rows of C 16·NV writable f32 each.
    // Prefetching is only a hint and never faults.
    for i in 0..MR {
        let cr = unsafe { c.add(i * rsc) };
        for v in 0..NV {
            unsafe { _mm_prefetch::<_MM_HINT_T0>(cr.add(16 * v) as *const i8) };
        }
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = unsafe { _mm512_loadu_ps(bp.add(16 * v)) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(unsafe { *ap.add(i) });
            for (x, bx) in row.iter_mut().zip(bv.iter()) {
                *x = _mm512_fmadd_ps(ai, *bx, *x);
            }
        }
        ap = unsafe { ap.add(MR) };
        bp = unsafe { bp.add(16 * NV) };
    }
    let alphav = _mm512_set1_ps(alpha);
    let betav = _mm512_set1_ps(beta);
    for (i, row) in acc.iter().enumerate() {
        let cr = unsafe { c.add(i * rsc) };
        for (v, x) in row.iter().enumerate() {
            let cp = unsafe { cr.add(16 * v) };
            let out = if beta == 0.0 {
                _mm512_mul_ps(*x, alphav)
            } else {
                let old = unsafe { _mm512_loadu_ps(cp) };
                _mm512_fmadd_ps(*x, alphav, _mm512_mul_ps(old, betav))
            };
            unsafe { _mm512_storeu_ps(cp, out) };
        }
    }
}
