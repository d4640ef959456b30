//! Packing of operand panels into the contiguous layout the micro-kernels read.
//!
//! A panel is W "lanes" (rows of A, or columns of B) by kc steps of depth, stored step-major:
//! element (lane l, step p) goes to `dst[p * W + l]`. Lanes past the edge of the matrix are
//! zero-filled so the kernel can always compute a full tile. A's row panel is packed with
//! (lane stride, depth stride) = (rsa, csa) and B's column panel with (csb, rsb), so any
//! layout, transposed or strided, goes through the same code.

/// Packs lanes `l0 .. l0 + lanes` as consecutive `width`-lane panels (each width·kc long, the last one
/// zero-padded) into `dst`. When lanes are contiguous in `x` (row-major B), it walks each step's
/// whole row segment once across all panels, which keeps the reads sequential; otherwise it packs
/// panel by panel.
pub(super) fn pack_block(
    dst: &mut [f32],
    width: usize,
    x: &[f32],
    ls: usize,
    ps: usize,
    l0: usize,
    lanes: usize,
    p0: usize,
    kc: usize,
) {
    let full = lanes / width;
    let mut done = 0;
    if ls == 1 && full > 1 {
        let ok = match width {
            6 => copy_block_full::<6>(dst, x, ps, l0 + p0 * ps, full, kc),
            12 => copy_block_full::<12>(dst, x, ps, l0 + p0 * ps, full, kc),
            16 => copy_block_full::<16>(dst, x, ps, l0 + p0 * ps, full, kc),
            32 => copy_block_full::<32>(dst, x, ps, l0 + p0 * ps, full, kc),
            48 => copy_block_full::<48>(dst, x, ps, l0 + p0 * ps, full, kc),
            64 => copy_block_full::<64>(dst, x, ps, l0 + p0 * ps, full, kc),
            _ => false,
        };
        if ok {
            done = full;
        }
    }
    for (q, d) in dst.chunks_exact_mut(width * kc).enumerate().skip(done) {
        let lq = q * width;
        if lq >= lanes {
            break;
        }
        let next = lq + width;
        if next < lanes {
            prefetch_panel_part((x, ls, ps, l0 + next, width.min(lanes - next), p0, kc), 0, 1);
        }
        pack_panel(d, width, x, ls, ps, l0 + lq, width.min(lanes - lq), p0, kc);
    }
}

/// `panels` full W-lane panels of a lanes-contiguous matrix: for each step, one contiguous row
/// segment of `panels·W` values is split across the panels.
fn copy_block_full<const W: usize>(
    dst: &mut [f32],
    x: &[f32],
    ps: usize,
    base: usize,
    panels: usize,
    kc: usize,
) -> bool {
    let dst = &mut dst[..panels * W * kc];
    for p in 0..kc {
        let at = base + p * ps;
        let row = &x[at..at + panels * W];
        for (q, src) in row.chunks_exact(W).enumerate() {
            let o = q * W * kc + p * W;
            let d: &mut [f32; W] = match (&mut dst[o..o + W]).try_into() {
                Ok(d) => d,
                Err(_) => return false,
            };
            let s: &[f32; W] = match src.try_into() {
                Ok(s) => s,
                Err(_) => return false,
            };
            *d = *s;
        }
    }
    true
}

/// Packs lanes `l0 .. l0 + w` (w ≤ `width`) and depth `p0 .. p0 + kc` of the matrix
/// `X[l][p] = x[l * ls + p * ps]` into `dst` (length ≥ width·kc) as one panel.
///
/// Panics if `x` is too short for the requested lanes (the public entry point checks this).
pub(super) fn pack_panel(
    dst: &mut [f32],
    width: usize,
    x: &[f32],
    ls: usize,
    ps: usize,
    l0: usize,
    w: usize,
    p0: usize,
    kc: usize,
) {
    debug_assert!(w >= 1 && w <= width);
    let dst = &mut dst[..width * kc];
    if w == 0 || kc == 0 {
        dst.fill(0.0);
        return;
    }
    if ls == 1 {
        // Lanes contiguous (row-major B, column-major A): a straight copy per step.
        let base = l0 + p0 * ps;
        let done = w == width
            && match width {
                6 => pack_copy_full::<6>(dst, x, ps, base, kc),
                12 => pack_copy_full::<12>(dst, x, ps, base, kc),
                16 => pack_copy_full::<16>(dst, x, ps, base, kc),
                32 => pack_copy_full::<32>(dst, x, ps, base, kc),
                48 => pack_copy_full::<48>(dst, x, ps, base, kc),
                64 => pack_copy_full::<64>(dst, x, ps, base, kc),
                _ => false,
            };
        if done {
            return;
        }
        for (p, d) in dst.chunks_exact_mut(width).enumerate() {
            let start = l0 + (p0 + p) * ps;
            d[..w].copy_from_slice(&x[start..start + w]);
            d[w..].fill(0.0);
        }
    } else if ps == 1 {
        // Depth contiguous (row-major A, transposed B): transpose width rows into the panel.
        let start = l0 * ls + p0;
        let done = w == width
            && match width {
                4 => pack_transpose_full::<4>(dst, x, ls, start, kc),
                6 => pack_transpose_full::<6>(dst, x, ls, start, kc),
                8 => pack_transpose_full::<8>(dst, x, ls, start, kc),
                12 => pack_transpose_full::<12>(dst, x, ls, start, kc),
                14 => pack_transpose_full::<14>(dst, x, ls, start, kc),
                16 => pack_transpose_full::<16>(dst, x, ls, start, kc),
                24 => pack_transpose_full::<24>(dst, x, ls, start, kc),
                32 => pack_transpose_full::<32>(dst, x, ls, start, kc),
                48 => pack_transpose_full::<48>(dst, x, ls, start, kc),
                64 => pack_transpose_full::<64>(dst, x, ls, start, kc),
                _ => false,
            };
        if !done {
            for l in 0..w {
                let start = (l0 + l) * ls + p0;
                let src = &x[start..start + kc];
                for (d, &v) in dst.chunks_exact_mut(width).zip(src) {
                    d[l] = v;
                }
            }
            for d in dst.chunks_exact_mut(width) {
                d[w..].fill(0.0);
            }
        }
    } else {
        for (p, d) in dst.chunks_exact_mut(width).enumerate() {
            let base = (p0 + p) * ps;
            for (l, v) in d[..w].iter_mut().enumerate() {
                *v = x[base + (l0 + l) * ls];
            }
            d[w..].fill(0.0);
        }
    }
}

/// Full-width copying pack (returns true, for the dispatch in [`pack_panel`]):
/// `dst[p * W + l] = x[base + p * ps + l]`. Fixed-size copies compile to a few vector moves
/// instead of a `memcpy` call per step.
fn pack_copy_full<const W: usize>(dst: &mut [f32], x: &[f32], ps: usize, base: usize, kc: usize) -> bool {
    // Bounds: the last element read is base + (kc-1)·ps + W - 1.
    let _ = &x[base + (kc - 1) * ps..base + (kc - 1) * ps + W];
    for (p, d) in dst.chunks_exact_mut(W).take(kc).enumerate() {
        let at = base + p * ps;
        let d: &mut [f32; W] = match d.try_into() {
            Ok(d) => d,
            Err(_) => return false,
        };
        let src: &[f32; W] = match x[at..at + W].try_into() {
            Ok(s) => s,
            Err(_) => return false,
        };
        *d = *src;
    }
    true
}

/// Full-width transposing pack (returns true, for the dispatch in [`pack_panel`]):
/// `dst[p * W + l] = x[start + l * ls + p]` for l < W, p < kc.
///
/// Works on blocks of 8 lanes × 8 steps: 8 contiguous values are loaded from each of the 8 source
/// rows, transposed in registers (`f32x8::transpose`) and stored as 8-lane pieces of 8
/// destination steps. A last group of fewer than 8 lanes is transposed the same way with zero
/// rows and stored partially.
fn pack_transpose_full<const W: usize>(dst: &mut [f32], x: &[f32], ls: usize, start: usize, kc: usize) -> bool {
    use wide::f32x8;
    const B: usize = 8;
    // Bounds: the last element read is start + (W-1)·ls + kc - 1.
    let rows: [&[f32]; W] = std::array::from_fn(|l| &x[start + l * ls..start + l * ls + kc]);
    // 16 steps (one 64-byte line of each source row) per round, as two 8×8 transposes.
    let full = kc / (2 * B) * (2 * B);
    for p in (0..full).step_by(2 * B) {
        for g in (0..W).step_by(B) {
            let r = (W - g).min(B);
            for h in [p, p + B] {
                let mut blk = [f32x8::ZERO; B];
                for (v, row) in blk.iter_mut().zip(&rows[g..g + r]) {
                    let src: [f32; B] = row[h..h + B].try_into().unwrap_or([0.0; B]);
                    *v = f32x8::from(src);
                }
                let t = f32x8::transpose(blk);
                for (q, v) in t.iter().enumerate() {
                    let at = (h + q) * W + g;
                    store_lanes(&mut dst[at..at + r], v.as_array());
                }
            }
        }
    }
    for p in full..kc {
        let d = &mut dst[p * W..(p + 1) * W];
        for (l, row) in rows.iter().enumerate() {
            d[l] = row[p];
        }
    }
    true
}

/// `dst.copy_from_slice(&v[..dst.len()])` with fixed-size copies for the common lengths (a
/// variable-length `copy_from_slice` becomes a `memcpy` call).
#[inline(always)]
fn store_lanes(dst: &mut [f32], v: &[f32; 8]) {
    match dst.len() {
        8 => dst.copy_from_slice(v),
        6 => dst.copy_from_slice(&v[..6]),
        4 => dst.copy_from_slice(&v[..4]),
        2 => dst.copy_from_slice(&v[..2]),
        _ => {
            for (d, s) in dst.iter_mut().zip(v) {
                *d = *s;
            }
        }
    }
}

/// The source of a panel as [`pack_panel`] takes it: (x, ls, ps, l0, w, p0, kc).
pub(super) type PanelSrc<'a> = (&'a [f32], usize, usize, usize, usize, usize, usize);

/// Asks the CPU to start loading part `part` of `parts` of the source of a panel, so that
/// packing it later finds the data in cache. Short, strided source rows defeat the hardware
/// prefetchers (each row is a new stream of a few lines); without this, packing stalls on
/// memory. Only a hint: no effect on results, never faults.
#[allow(unused_variables)]
pub(super) fn prefetch_panel_part(src: PanelSrc, part: usize, parts: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE: usize = 16; // f32 per 64-byte cache line
        let (x, ls, ps, l0, w, p0, kc) = src;
        let pf = |idx: usize| {
            if idx < x.len() {
                // SAFETY: prefetching is a hint that never faults; the address is in `x` anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().add(idx).cast::<i8>()) };
            }
        };
        if w == 0 || kc == 0 || parts == 0 {
            return;
        }
        if ps == 1 {
            // Lanes are rows of contiguous depth: split the lanes.
            let per = w.div_ceil(parts);
            for l in l0 + part * per..l0 + ((part + 1) * per).min(w) {
                let s = l * ls + p0;
                for off in (0..kc).step_by(LINE) {
                    pf(s + off);
                }
                pf(s + kc - 1);
            }
        } else if ls == 1 {
            // Steps are rows of contiguous lanes: split the steps.
            let per = kc.div_ceil(parts);
            for p in p0 + part * per..p0 + ((part + 1) * per).min(kc) {
                let s = l0 + p * ps;
                for off in (0..w).step_by(LINE) {
                    pf(s + off);
                }
                pf(s + w - 1);
            }
        }
    }
}
