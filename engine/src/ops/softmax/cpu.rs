//! CPU kernels for softmax / log-softmax over contiguous rows, plus the row helpers (parallel row
//! loops, SIMD max / exp-sum / dot) that the fused loss and norm kernels share.
//!
//! Every kernel works on rows of any length: whole `f32x8` chunks first, then a scalar tail.
use crate::cpu::pool::alloc_f32;
use crate::cpu::strided::MIN_PAR_ELEMS;
use crate::ops::reduce::cpu::sum_slice;
use crate::ops::unary::cpu::{load8, store8};
use rayon::prelude::*;
use wide::f32x8;

/// Rows handed to one rayon task: enough elements to pay for the split.
fn rows_per_task(n: usize) -> usize {
    (MIN_PAR_ELEMS / n.max(1)).max(1)
}

/// Runs `f(row_index, out_row)` over the rows of length `n` of `out`, on rayon threads when the
/// whole buffer is big enough.
pub(crate) fn for_each_row(out: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if n == 0 || out.is_empty() {
        return;
    }
    if out.len() >= 2 * MIN_PAR_ELEMS {
        out.par_chunks_mut(n).enumerate().with_min_len(rows_per_task(n)).for_each(|(r, o)| f(r, o));
    } else {
        out.chunks_mut(n).enumerate().for_each(|(r, o)| f(r, o));
    }
}

/// `f(r)` for each of `rows` rows of `n` elements, collected in row order (in parallel when big).
pub(crate) fn map_rows<T: Send>(rows: usize, n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if rows * n >= 2 * MIN_PAR_ELEMS {
        (0..rows).into_par_iter().with_min_len(rows_per_task(n)).map(f).collect()
    } else {
        (0..rows).map(f).collect()
    }
}

/// Largest element (NaNs are skipped, as `f32::max` does); -inf for an empty row.
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = f32x8::splat(f32::NEG_INFINITY);
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        acc = acc.max(load8(c));
    }
    let mut m = acc.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max);
    for &v in chunks.remainder() {
        m = m.max(v);
    }
    m
}

/// Σ exp(x − shift).
pub(crate) fn exp_sum(x: &[f32], shift: f32) -> f32 {
    let s = f32x8::splat(shift);
    let mut acc = [f32x8::ZERO; 2];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        acc[0] += (load8(c) - s).exp();
        acc[1] += (load8(&c[8..]) - s).exp();
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 8 {
        acc[0] += (load8(rest) - s).exp();
        rest = &rest[8..];
    }
    let mut total = (acc[0] + acc[1]).reduce_add();
    for &v in rest {
        total += (v - shift).exp();
    }
    total
}

/// Σ a·b.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [f32x8::ZERO; 2];
    let mut ac = a.chunks_exact(16);
    let mut bc = b.chunks_exact(16);
    for (x, y) in (&mut ac).zip(&mut bc) {
        acc[0] = load8(x).mul_add(load8(y), acc[0]);
        acc[1] = load8(&x[8..]).mul_add(load8(&y[8..]), acc[1]);
    }
    let (mut ra, mut rb) = (ac.remainder(), bc.remainder());
    if ra.len() >= 8 {
        acc[0] = load8(ra).mul_add(load8(rb), acc[0]);
        ra = &ra[8..];
        rb = &rb[8..];
    }
    let mut total = (acc[0] + acc[1]).reduce_add();
    for (&x, &y) in ra.iter().zip(rb) {
        total += x * y;
    }
    total
}

/// `out[i] = f(x[i])`, with the SIMD form `fv` and the scalar form `fs` of the same function.
#[inline(always)]
pub(crate) fn map1(x: &[f32], out: &mut [f32], fv: impl Fn(f32x8) -> f32x8, fs: impl Fn(f32) -> f32) {
    let mut xc = x.chunks_exact(8);
    let mut oc = out.chunks_exact_mut(8);
    for (o, v) in (&mut oc).zip(&mut xc) {
        store8(o, fv(load8(v)));
    }
    for (o, &v) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
        *o = fs(v);
    }
}

/// `out[i] = f(a[i], b[i])`, with SIMD and scalar forms.
#[inline(always)]
pub(crate) fn map2(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    fv: impl Fn(f32x8, f32x8) -> f32x8,
    fs: impl Fn(f32, f32) -> f32,
) {
    let mut ac = a.chunks_exact(8);
    let mut bc = b.chunks_exact(8);
    let mut oc = out.chunks_exact_mut(8);
    for ((o, x), y) in (&mut oc).zip(&mut ac).zip(&mut bc) {
        store8(o, fv(load8(x), load8(y)));
    }
    for ((o, &x), &y) in oc.into_remainder().iter_mut().zip(ac.remainder()).zip(bc.remainder()) {
        *o = fs(x, y);
    }
}

/// The output of a row whose maximum is -inf (every element -inf, or NaN, or the row is empty):
/// `fill` unless a NaN is present, in which case NaN (a NaN input never turns into a number).
fn masked_row(x: &[f32], y: &mut [f32], fill: f32) {
    let v = if x.iter().any(|v| v.is_nan()) { f32::NAN } else { fill };
    y.fill(v);
}

/// Softmax of one row: `exp(x − max) / Σ exp(x − max)`. A row of only -inf gives zeros.
fn softmax_row(x: &[f32], y: &mut [f32]) {
    let m = max(x);
    if m == f32::NEG_INFINITY {
        return masked_row(x, y, 0.0);
    }
    let s = f32x8::splat(m);
    map1(x, y, |v| (v - s).exp(), |v| (v - m).exp());
    let inv = 1.0 / sum_slice(y);
    let iv = f32x8::splat(inv);
    y.chunks_exact_mut(8).for_each(|c| store8(c, load8(c) * iv));
    let tail = y.len() / 8 * 8;
    y[tail..].iter_mut().for_each(|v| *v *= inv);
}

/// Log-softmax of one row: `(x − max) − ln Σ exp(x − max)`, which keeps full precision for large
/// logits. A row of only -inf gives -inf everywhere (the log of softmax's zeros).
fn log_softmax_row(x: &[f32], y: &mut [f32]) {
    let m = max(x);
    if m == f32::NEG_INFINITY {
        return masked_row(x, y, f32::NEG_INFINITY);
    }
    let ls = exp_sum(x, m).ln();
    let (sv, lv) = (f32x8::splat(m), f32x8::splat(ls));
    map1(x, y, |v| (v - sv) - lv, |v| (v - m) - ls);
}

/// Softmax (or log-softmax) of each row of length `n` of the contiguous `x`.
pub(crate) fn softmax_rows(x: &[f32], n: usize, log: bool) -> Vec<f32> {
    let mut out = alloc_f32(x.len());
    for_each_row(&mut out, n, |r, y| {
        let xr = &x[r * n..(r + 1) * n];
        if log {
            log_softmax_row(xr, y)
        } else {
            softmax_row(xr, y)
        }
    });
    out
}

/// Softmax backward per row: `gx = y ⊙ (g − Σ g⊙y)`.
pub(crate) fn softmax_backward(y: &[f32], g: &[f32], n: usize) -> Vec<f32> {
    let mut out = alloc_f32(y.len());
    for_each_row(&mut out, n, |r, o| {
        let (yr, gr) = (&y[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
        let d = dot(yr, gr);
        let dv = f32x8::splat(d);
        map2(yr, gr, o, |y, g| y * (g - dv), |y, g| y * (g - d));
    });
    out
}

/// Log-softmax backward per row: `gx = g − exp(y) · Σ g` (`exp(y)` is the softmax).
pub(crate) fn log_softmax_backward(y: &[f32], g: &[f32], n: usize) -> Vec<f32> {
    let mut out = alloc_f32(y.len());
    for_each_row(&mut out, n, |r, o| {
        let (yr, gr) = (&y[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
        let s = sum_slice(gr);
        let sv = f32x8::splat(s);
        map2(yr, gr, o, |y, g| y.exp().mul_neg_add(sv, g), |y, g| g - y.exp() * s);
    });
    out
}
