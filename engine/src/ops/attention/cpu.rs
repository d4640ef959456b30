//! CPU kernels for scaled dot-product attention.
//!
//! Work is cut into tasks of one (batch, head) and, in the forward, one block of at most
//! `QUERY_BLOCK` query rows; tasks run on rayon and each GEMM inside runs `Parallelism::Serial`.
//! A task holds only its block's `rows × keys` scores: the full `tq × tk` matrix is never stored.
//! Under a causal mask a block only touches the keys its last row may see, which halves the work
//! of a square causal attention.
//!
//! For the backward the forward keeps one number per query row, the log-sum-exp of its masked,
//! scaled scores; the backward recomputes the probabilities from it (P = exp(S − lse)), as
//! FlashAttention does, instead of storing `batch · heads · tq · tk` probabilities.
use crate::cpu::gemm::{sgemm, Parallelism};
use rayon::prelude::*;

/// Query rows per task and per score block.
pub(crate) const QUERY_BLOCK: usize = 64;

/// The log-sum-exp recorded for a row whose keys are all masked: its probabilities are all 0.
pub(crate) const EMPTY_ROW: f32 = f32::INFINITY;

/// A strided 4-D f32 operand `[batch, heads, time, dim]`, read in place.
#[derive(Clone, Copy)]
pub(crate) struct View4<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) offset: usize,
    pub(crate) strides: [usize; 4],
}

impl<'a> View4<'a> {
    /// The storage from row `row` of matrix (`b`, `h`) on; rows step by `strides[2]`, columns by
    /// `strides[3]`.
    fn from(&self, b: usize, h: usize, row: usize) -> &'a [f32] {
        let off = self.offset + b * self.strides[0] + h * self.strides[1] + row * self.strides[2];
        &self.data[off.min(self.data.len())..]
    }
    fn rs(&self) -> usize {
        self.strides[2]
    }
    fn cs(&self) -> usize {
        self.strides[3]
    }
}

/// Sizes of one attention call. `heads` is a multiple of `kv_heads`; all sizes are > 0.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) tq: usize,
    pub(crate) tk: usize,
    pub(crate) d: usize,
    pub(crate) dv: usize,
}

impl Dims {
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Which keys each query row sees.
#[derive(Clone, Copy)]
pub(crate) struct Masking<'a> {
    pub(crate) causal: bool,
    /// `[batch, tk]`, true = attend.
    pub(crate) keep: Option<&'a [bool]>,
    pub(crate) scale: f32,
}

impl Masking<'_> {
    /// Keys `0..end` are the only ones query row `i` may see (bottom-right aligned causal mask:
    /// key j is visible iff j ≤ i + tk − tq).
    fn visible_end(&self, i: usize, dims: &Dims) -> usize {
        if !self.causal {
            return dims.tk;
        }
        let end = i as isize + 1 + dims.tk as isize - dims.tq as isize;
        end.clamp(0, dims.tk as isize) as usize
    }

    /// Whether key `j` of batch `b` is not padding.
    #[inline]
    fn kept(&self, b: usize, j: usize, tk: usize) -> bool {
        match self.keep {
            Some(k) => k[b * tk + j],
            None => true,
        }
    }
}

/// Scores of query rows `r0..r0+rows` of head (`b`, `h`) against keys `0..kend`, scaled, into
/// `s` (`rows × kend`, row-major).
fn scores(
    q: &View4,
    k: &View4,
    dims: &Dims,
    mask: &Masking,
    b: usize,
    h: usize,
    r0: usize,
    rows: usize,
    kend: usize,
    s: &mut [f32],
) {
    let kvh = h / dims.group();
    sgemm(
        rows,
        kend,
        dims.d,
        mask.scale,
        q.from(b, h, r0),
        q.rs(),
        q.cs(),
        k.from(b, kvh, 0),
        k.cs(),
        k.rs(),
        0.0,
        s,
        kend,
        1,
        Parallelism::Serial,
    );
}

/// Forward: writes `out` (`[batch, heads, tq, dv]`, contiguous) and the per-row log-sum-exp
/// `lse` (`[batch, heads, tq]`; `EMPTY_ROW` for rows with no visible key, whose output is 0).
pub(crate) fn forward(q: View4, k: View4, v: View4, dims: Dims, mask: Masking, out: &mut [f32], lse: &mut [f32]) {
    let Dims { tq, dv, tk, .. } = dims;
    let group = dims.group();
    out.par_chunks_mut(tq * dv).zip(lse.par_chunks_mut(tq)).enumerate().for_each(|(bh, (o, l))| {
        let (b, h) = (bh / dims.heads, bh % dims.heads);
        o.par_chunks_mut(QUERY_BLOCK * dv).zip(l.par_chunks_mut(QUERY_BLOCK)).enumerate().for_each(
            |(blk, (ob, lb))| {
                let r0 = blk * QUERY_BLOCK;
                let rows = lb.len();
                let kend = mask.visible_end(r0 + rows - 1, &dims);
                let mut s = vec![0.0f32; rows * kend];
                scores(&q, &k, &dims, &mask, b, h, r0, rows, kend, &mut s);
                for r in 0..rows {
                    let row = &mut s[r * kend..(r + 1) * kend];
                    lb[r] = softmax_row(row, mask.visible_end(r0 + r, &dims), |j| mask.kept(b, j, tk));
                }
                sgemm(
                    rows,
                    dv,
                    kend,
                    1.0,
                    &s,
                    kend,
                    1,
                    v.from(b, h / group, 0),
                    v.rs(),
                    v.cs(),
                    0.0,
                    ob,
                    dv,
                    1,
                    Parallelism::Serial,
                );
            },
        );
    });
}

/// Replaces the scores in `row` by probabilities over the keys `j < end` with `kept(j)` (0 for
/// the others); returns the row's log-sum-exp, or `EMPTY_ROW` (and an all-zero row) when no key
/// is visible.
fn softmax_row(row: &mut [f32], end: usize, kept: impl Fn(usize) -> bool) -> f32 {
    let mut max = f32::NEG_INFINITY;
    let mut any = false;
    for (j, &x) in row[..end].iter().enumerate() {
        if kept(j) {
            any = true;
            max = max.max(x);
        }
    }
    if !any {
        row.fill(0.0);
        return EMPTY_ROW;
    }
    let mut sum = 0.0f32;
    for (j, x) in row.iter_mut().enumerate() {
        if j < end && kept(j) {
            *x = (*x - max).exp();
            sum += *x;
        } else {
            *x = 0.0;
        }
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
    max + sum.ln()
}

/// Which gradients the backward computes.
#[derive(Clone, Copy)]
pub(crate) struct Needs {
    pub(crate) q: bool,
    pub(crate) k: bool,
    pub(crate) v: bool,
}

/// Backward for one call. `g` is the output gradient (`[batch, heads, tq, dv]`, contiguous) and
/// `lse` what the forward recorded. Writes `dq` (`[batch, heads, tq, d]`) and, per query head,
/// `dk_heads` (`[batch, heads, tk, d]`) and `dv_heads` (`[batch, heads, tk, dv]`), all zeroed by the
/// caller; the caller sums the per-query-head key/value gradients over each kv group.
pub(crate) fn backward(
    q: View4,
    k: View4,
    v: View4,
    dims: Dims,
    mask: Masking,
    g: &[f32],
    lse: &[f32],
    needs: Needs,
    dq: &mut [f32],
    dk_heads: &mut [f32],
    dv_heads: &mut [f32],
) {
    let Dims { tq, tk, d, dv, .. } = dims;
    let group = dims.group();
    let need_ds = needs.q || needs.k;
    dq.par_chunks_mut(tq * d)
        .zip(dk_heads.par_chunks_mut(tk * d))
        .zip(dv_heads.par_chunks_mut(tk * dv))
        .enumerate()
        .for_each(|(bh, ((dq, dk), dvh))| {
            let (b, h) = (bh / dims.heads, bh % dims.heads);
            let kvh = h / group;
            let (g_bh, lse_bh) = (&g[bh * tq * dv..(bh + 1) * tq * dv], &lse[bh * tq..(bh + 1) * tq]);
            let mut p = Vec::new();
            let mut dp = Vec::new();
            for r0 in (0..tq).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(tq - r0);
                let kend = mask.visible_end(r0 + rows - 1, &dims);
                if kend == 0 {
                    continue; // every row of the block sees nothing: all gradients 0
                }
                let g_blk = &g_bh[r0 * dv..(r0 + rows) * dv];
                // P, recomputed from the scores and the recorded log-sum-exp.
                p.clear();
                p.resize(rows * kend, 0.0);
                scores(&q, &k, &dims, &mask, b, h, r0, rows, kend, &mut p);
                for r in 0..rows {
                    let (end, l) = (mask.visible_end(r0 + r, &dims), lse_bh[r0 + r]);
                    for (j, x) in p[r * kend..(r + 1) * kend].iter_mut().enumerate() {
                        *x = if l != EMPTY_ROW && j < end && mask.kept(b, j, tk) { (*x - l).exp() } else { 0.0 };
                    }
                }
                // dV += Pᵀ·g
                if needs.v {
                    sgemm(kend, dv, rows, 1.0, &p, 1, kend, g_blk, dv, 1, 1.0, dvh, dv, 1, Parallelism::Serial);
                }
                if !need_ds {
                    continue;
                }
                // dP = g·Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)), in place.
                dp.clear();
                dp.resize(rows * kend, 0.0);
                sgemm(
                    rows,
                    kend,
                    dv,
                    1.0,
                    g_blk,
                    dv,
                    1,
                    v.from(b, kvh, 0),
                    v.cs(),
                    v.rs(),
                    0.0,
                    &mut dp,
                    kend,
                    1,
                    Parallelism::Serial,
                );
                for (pr, dr) in p.chunks_exact(kend).zip(dp.chunks_exact_mut(kend)) {
                    let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                    for (x, &pv) in dr.iter_mut().zip(pr) {
                        *x = pv * (*x - dot);
                    }
                }
                // dQ = scale·dS·K, dK += scale·dSᵀ·Q
                if needs.q {
                    let (kk, dq_blk) = (k.from(b, kvh, 0), &mut dq[r0 * d..(r0 + rows) * d]);
                    sgemm(
                        rows,
                        d,
                        kend,
                        mask.scale,
                        &dp,
                        kend,
                        1,
                        kk,
                        k.rs(),
                        k.cs(),
                        0.0,
                        dq_blk,
                        d,
                        1,
                        Parallelism::Serial,
                    );
                }
                if needs.k {
                    let qq = q.from(b, h, r0);
                    sgemm(
                        kend,
                        d,
                        rows,
                        mask.scale,
                        &dp,
                        1,
                        kend,
                        qq,
                        q.rs(),
                        q.cs(),
                        1.0,
                        dk,
                        d,
                        1,
                        Parallelism::Serial,
                    );
                }
            }
        });
}

/// Sums per-query-head gradients `[batch, heads, t, n]` over each group of `group` heads into
/// `[batch, heads / group, t, n]`.
pub(crate) fn sum_groups(per_head: &[f32], group: usize, mat: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; per_head.len() / group];
    out.par_chunks_mut(mat).enumerate().for_each(|(i, o)| {
        for src in per_head[i * group * mat..(i + 1) * group * mat].chunks_exact(mat) {
            o.iter_mut().zip(src).for_each(|(a, b)| *a += b);
        }
    });
    out
}
