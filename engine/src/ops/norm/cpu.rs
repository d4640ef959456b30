//! CPU kernels for LayerNorm and RMSNorm over the last dim of a contiguous tensor. Both are
//! `y = (x − μ)·rstd·w + b` per row: LayerNorm with μ the row mean and rstd = 1/√(var + eps)
//! (biased variance), RMSNorm with μ = 0 and rstd = 1/√(mean(x²) + eps) and no bias.
use crate::cpu::pool::alloc_f32;
use crate::cpu::strided::MIN_PAR_ELEMS;
use crate::ops::reduce::cpu::sum_slice;
use crate::ops::softmax::cpu::dot;
use crate::ops::unary::cpu::{load8, store8};
use rayon::prelude::*;
use wide::f32x8;

/// Per-row statistics saved by the forward for the backward.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RowStats {
    pub(crate) mean: f32,
    pub(crate) rstd: f32,
}

/// Σ (x − μ)².
fn sum_sq_centered(x: &[f32], mu: f32) -> f32 {
    let m = f32x8::splat(mu);
    let mut acc = [f32x8::ZERO; 2];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        let (d0, d1) = (load8(c) - m, load8(&c[8..]) - m);
        acc[0] = d0.mul_add(d0, acc[0]);
        acc[1] = d1.mul_add(d1, acc[1]);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 8 {
        let d = load8(rest) - m;
        acc[0] = d.mul_add(d, acc[0]);
        rest = &rest[8..];
    }
    let mut total = (acc[0] + acc[1]).reduce_add();
    for &v in rest {
        total += (v - mu) * (v - mu);
    }
    total
}

/// Normalizes each row of length `n`: returns `y` and each row's `(mean, rstd)`.
pub(crate) fn norm_forward(
    x: &[f32],
    n: usize,
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f32,
    centered: bool,
) -> (Vec<f32>, Vec<RowStats>) {
    let rows = x.len().checked_div(n).unwrap_or(0);
    let mut y = alloc_f32(x.len());
    let mut stats = vec![RowStats::default(); rows];
    let row = |r: usize, yr: &mut [f32], st: &mut RowStats| {
        let xr = &x[r * n..(r + 1) * n];
        let mean = if centered { sum_slice(xr) / n as f32 } else { 0.0 };
        let rstd = 1.0 / (sum_sq_centered(xr, mean) / n as f32 + eps).sqrt();
        *st = RowStats { mean, rstd };
        let (mv, rv) = (f32x8::splat(mean), f32x8::splat(rstd));
        let full = n / 8 * 8;
        for i in (0..full).step_by(8) {
            let mut v = (load8(&xr[i..]) - mv) * rv;
            if let Some(w) = w {
                v *= load8(&w[i..]);
            }
            if let Some(b) = b {
                v += load8(&b[i..]);
            }
            store8(&mut yr[i..], v);
        }
        for i in full..n {
            let mut v = (xr[i] - mean) * rstd;
            if let Some(w) = w {
                v *= w[i];
            }
            if let Some(b) = b {
                v += b[i];
            }
            yr[i] = v;
        }
    };
    if rows == 0 {
        return (y, stats);
    }
    if x.len() >= 2 * MIN_PAR_ELEMS {
        let per_task = (MIN_PAR_ELEMS / n).max(1);
        y.par_chunks_mut(n)
            .zip(stats.par_iter_mut())
            .enumerate()
            .with_min_len(per_task)
            .for_each(|(r, (yr, st))| row(r, yr, st));
    } else {
        y.chunks_mut(n).zip(stats.iter_mut()).enumerate().for_each(|(r, (yr, st))| row(r, yr, st));
    }
    (y, stats)
}

/// Which gradients the backward should produce.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wants {
    pub(crate) x: bool,
    pub(crate) w: bool,
    pub(crate) b: bool,
}

/// Gradients of x, weight and bias (each `None` when not wanted).
pub(crate) type NormGrads = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>);

/// At most this many partial weight/bias gradients are summed at the end: bounds the extra
/// memory to `2 · MAX_BLOCKS · n` floats, and fixes the summation order whatever the thread count.
const MAX_BLOCKS: usize = 64;

/// Backward of `norm_forward` from the upstream gradient `g` (same shape as `x`). With
/// `x̂ = (x − μ)·rstd` and `ĝ = g·w`:
/// `gx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))` (RMSNorm drops the `mean(ĝ)` term),
/// `gw = Σ_rows g·x̂`, `gb = Σ_rows g`.
pub(crate) fn norm_backward(
    x: &[f32],
    g: &[f32],
    n: usize,
    w: Option<&[f32]>,
    stats: &[RowStats],
    centered: bool,
    wants: Wants,
) -> NormGrads {
    let rows = stats.len();
    // Every row of gx is written below.
    let mut gx = if wants.x { Some(alloc_f32(x.len())) } else { None };
    if rows == 0 || n == 0 {
        let z = || Some(vec![0.0f32; n]);
        return (gx, if wants.w { z() } else { None }, if wants.b { z() } else { None });
    }
    let parallel = x.len() >= 2 * MIN_PAR_ELEMS;
    let block = if parallel { rows.div_ceil(MAX_BLOCKS).max((MIN_PAR_ELEMS / n).max(1)) } else { rows };
    let blocks = rows.div_ceil(block);
    let gx_chunks: Vec<Option<&mut [f32]>> = match gx.as_mut() {
        Some(v) => v.chunks_mut(block * n).map(Some).collect(),
        None => (0..blocks).map(|_| None).collect(),
    };
    let inv_n = 1.0 / n as f32;
    // One block of rows: writes its part of gx, returns its partial gw and gb.
    let run = |(bi, mut gx_block): (usize, Option<&mut [f32]>)| -> (Vec<f32>, Vec<f32>) {
        let mut pw = if wants.w { vec![0.0f32; n] } else { Vec::new() };
        let mut pb = if wants.b { vec![0.0f32; n] } else { Vec::new() };
        let mut gh = vec![0.0f32; n];
        let mut xh = vec![0.0f32; n];
        let first = bi * block;
        let last = (first + block).min(rows);
        for r in first..last {
            let (xr, gr) = (&x[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
            let RowStats { mean, rstd } = stats[r];
            let (mv, rv) = (f32x8::splat(mean), f32x8::splat(rstd));
            let full = n / 8 * 8;
            // x̂ and ĝ = g·w for the row.
            for i in (0..full).step_by(8) {
                store8(&mut xh[i..], (load8(&xr[i..]) - mv) * rv);
                let gv = load8(&gr[i..]);
                store8(&mut gh[i..], if let Some(w) = w { gv * load8(&w[i..]) } else { gv });
            }
            for i in full..n {
                xh[i] = (xr[i] - mean) * rstd;
                gh[i] = if let Some(w) = w { gr[i] * w[i] } else { gr[i] };
            }
            if let Some(gxb) = gx_block.as_deref_mut() {
                let o = &mut gxb[(r - first) * n..(r - first + 1) * n];
                let a = if centered { sum_slice(&gh) * inv_n } else { 0.0 };
                let c = dot(&gh, &xh) * inv_n;
                let (av, cv) = (f32x8::splat(a), f32x8::splat(c));
                for i in (0..full).step_by(8) {
                    let v = load8(&xh[i..]).mul_neg_add(cv, load8(&gh[i..]) - av) * rv;
                    store8(&mut o[i..], v);
                }
                for i in full..n {
                    o[i] = (gh[i] - a - xh[i] * c) * rstd;
                }
            }
            if wants.w {
                for i in (0..full).step_by(8) {
                    let v = load8(&gr[i..]).mul_add(load8(&xh[i..]), load8(&pw[i..]));
                    store8(&mut pw[i..], v);
                }
                for i in full..n {
                    pw[i] += gr[i] * xh[i];
                }
            }
            if wants.b {
                for i in (0..full).step_by(8) {
                    let v = load8(&pb[i..]) + load8(&gr[i..]);
                    store8(&mut pb[i..], v);
                }
                for i in full..n {
                    pb[i] += gr[i];
                }
            }
        }
        (pw, pb)
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = if parallel {
        gx_chunks.into_par_iter().enumerate().map(run).collect()
    } else {
        gx_chunks.into_iter().enumerate().map(run).collect()
    };
    let (pw, pb): (Vec<Vec<f32>>, Vec<Vec<f32>>) = partials.into_iter().unzip();
    let combine = |parts: Vec<Vec<f32>>| {
        let mut acc = vec![0.0f32; n];
        for p in &parts {
            for (a, v) in acc.iter_mut().zip(p) {
                *a += v;
            }
        }
        acc
    };
    let gw = if wants.w { Some(combine(pw)) } else { None };
    let gb = if wants.b { Some(combine(pb)) } else { None };
    (gx, gw, gb)
}
