//! CPU reduction kernels over the middle axis of a contiguous `[outer, r, inner]` view.
use crate::cpu::strided::MIN_PAR_ELEMS;
use crate::ops::unary::cpu::load8;
use rayon::prelude::*;
use wide::f32x8;

/// Sum of a contiguous slice: four SIMD accumulators (latency hiding, and a pairwise-like error).
pub(crate) fn sum_slice(x: &[f32]) -> f32 {
    let mut acc = [f32x8::ZERO; 4];
    let mut chunks = x.chunks_exact(32);
    for c in &mut chunks {
        for (k, a) in acc.iter_mut().enumerate() {
            *a += load8(&c[8 * k..]);
        }
    }
    let mut total = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
    for &v in chunks.remainder() {
        total += v;
    }
    total
}

fn add_into(acc: &mut [f32], x: &[f32]) {
    let mut ac = acc.chunks_exact_mut(8);
    let mut xc = x.chunks_exact(8);
    for (a, b) in (&mut ac).zip(&mut xc) {
        let s = load8(a) + load8(b);
        a.copy_from_slice(&s.to_array());
    }
    for (a, b) in ac.into_remainder().iter_mut().zip(xc.remainder()) {
        *a += b;
    }
}

pub(crate) fn sum_axis(x: &[f32], outer: usize, r: usize, inner: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; outer * inner];
    if r == 0 || outer * inner == 0 {
        return out;
    }
    let parallel = outer * r * inner >= 2 * MIN_PAR_ELEMS;
    if inner == 1 {
        if outer == 1 && parallel {
            // One long row: partial sums in parallel, then combine.
            let partial: Vec<f32> = x[..r].par_chunks(MIN_PAR_ELEMS).map(sum_slice).collect();
            out[0] = partial.iter().sum();
        } else if parallel {
            out.par_iter_mut().enumerate().with_min_len((MIN_PAR_ELEMS / r).max(1)).for_each(|(o, v)| {
                *v = sum_slice(&x[o * r..(o + 1) * r]);
            });
        } else {
            for (o, v) in out.iter_mut().enumerate() {
                *v = sum_slice(&x[o * r..(o + 1) * r]);
            }
        }
        return out;
    }
    const COLS: usize = 2048;
    let pieces_count = outer * inner.div_ceil(COLS);
    let threads = rayon::current_num_threads();
    if parallel && pieces_count < threads && r >= 2 * threads {
        // Few output columns, a long reduced axis: split the axis, sum the partial rows after.
        let parts = threads.min(r);
        let partial: Vec<Vec<f32>> = (0..parts)
            .into_par_iter()
            .map(|t| {
                let (j0, j1) = (t * r / parts, (t + 1) * r / parts);
                let mut acc = vec![0.0f32; outer * inner];
                for o in 0..outer {
                    let row = &mut acc[o * inner..(o + 1) * inner];
                    for j in j0..j1 {
                        let base = (o * r + j) * inner;
                        add_into(row, &x[base..base + inner]);
                    }
                }
                acc
            })
            .collect();
        for p in &partial {
            add_into(&mut out, p);
        }
        return out;
    }
    let task = |o: usize, c0: usize, acc: &mut [f32]| {
        let c1 = c0 + acc.len();
        for j in 0..r {
            let base = (o * r + j) * inner;
            add_into(acc, &x[base + c0..base + c1]);
        }
    };
    let run = |(idx, acc): (usize, &mut [f32])| {
        let chunks_per_row = inner.div_ceil(COLS);
        let (o, c) = (idx / chunks_per_row, idx % chunks_per_row);
        task(o, c * COLS, acc);
    };
    // Chunks never straddle two output rows: split each row of `inner` into COLS-wide pieces.
    let mut pieces: Vec<&mut [f32]> = Vec::with_capacity(outer * inner.div_ceil(COLS));
    for row in out.chunks_mut(inner) {
        pieces.extend(row.chunks_mut(COLS));
    }
    if parallel {
        pieces.into_par_iter().enumerate().for_each(run);
    } else {
        pieces.into_iter().enumerate().for_each(run);
    }
    out
}

/// Max over the axis and the index of its first occurrence (NaN wins, as in PyTorch).
pub(crate) fn max_axis(x: &[f32], outer: usize, r: usize, inner: usize) -> (Vec<f32>, Vec<i64>) {
    let n = outer * inner;
    let mut vals = vec![f32::NEG_INFINITY; n];
    let mut idx = vec![0i64; n];
    let body = |(k, (v, ix)): (usize, (&mut f32, &mut i64))| {
        let (o, i) = (k / inner, k % inner);
        let mut best = f32::NEG_INFINITY;
        let mut arg = 0usize;
        for j in 0..r {
            let val = x[(o * r + j) * inner + i];
            if val > best || (val.is_nan() && !best.is_nan()) || j == 0 {
                best = val;
                arg = j;
            }
        }
        *v = best;
        *ix = arg as i64;
    };
    if n * r >= 2 * MIN_PAR_ELEMS {
        vals.par_iter_mut().zip(idx.par_iter_mut()).enumerate().for_each(body);
    } else {
        vals.iter_mut().zip(idx.iter_mut()).enumerate().for_each(body);
    }
    (vals, idx)
}
