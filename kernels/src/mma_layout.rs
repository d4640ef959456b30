//! CPU replay of `gemm_mma.cu`'s index math (not its arithmetic precision): shared-memory staging,
//! per-lane fragment loads, the mma.m16n8k16 operand/result layouts of the PTX ISA, and the stores, for
//! one launch grid on a shape that is no tile multiple, for every transpose combination. If a fragment offset in the
//! kernel were wrong (a swapped register, a wrong +8), this would disagree with the naive product.
//! The layouts below are written from the ISA's fragment tables, independently of the kernel's loads.

const BM: usize = 128;
const BN: usize = 128;
const BK: usize = 32;
const LDS: usize = BK + 8;

/// One `u32` fragment register: two 16-bit elements, `.0` the low half (lower address).
type Reg = (f32, f32);

/// ISA: A (16x16, row) register r of lane l holds (row, k) and (row, k + 1) with
/// row = l/4 + 8 (r % 2), k = 2 (l % 4) + 8 (r / 2). B (16x8, col) register r: (k, col) and (k + 1, col)
/// with col = l/4, k = 2 (l % 4) + 8 r. C/D (16x8) element r: row = l/4 + 8 (r / 2), col = 2 (l % 4) + r % 2.
fn mma_m16n8k16(d: &mut [[f32; 4]; 32], a: &[[Reg; 4]; 32], b: &[[Reg; 2]; 32]) {
    let mut am = [[0f32; 16]; 16];
    let mut bm = [[0f32; 8]; 16];
    for l in 0..32 {
        for r in 0..4 {
            let (row, k) = (l / 4 + 8 * (r % 2), 2 * (l % 4) + 8 * (r / 2));
            (am[row][k], am[row][k + 1]) = a[l][r];
        }
        for r in 0..2 {
            let (col, k) = (l / 4, 2 * (l % 4) + 8 * r);
            (bm[k][col], bm[k + 1][col]) = b[l][r];
        }
    }
    for l in 0..32 {
        for r in 0..4 {
            let (row, col) = (l / 4 + 8 * (r / 2), 2 * (l % 4) + r % 2);
            d[l][r] += (0..16).map(|k| am[row][k] * bm[k][col]).sum::<f32>();
        }
    }
}

struct Gemm<'a> {
    a: &'a [f32],
    b: &'a [f32],
    m: usize,
    n: usize,
    k: usize,
    a_m: usize,
    a_k: usize,
    b_k: usize,
    b_n: usize,
}

/// One thread block (bx, by) of the kernel, all 256 threads, writing into row-major `c`.
fn block(g: &Gemm, c: &mut [f32], bx: usize, by: usize) {
    let (row0, col0) = (by * BM, bx * BN);
    let mut acc = vec![[[[0f32; 4]; 32]; 4]; 4 * 8]; // [warp * 4 + i][j][lane][r]
    let mut k0 = 0;
    while k0 < g.k {
        let mut as_ = vec![0f32; BM * LDS];
        let mut bs = vec![0f32; BN * LDS];
        // The kernel's two load orders: along k when the operand's k stride is 1, else along m / n.
        let split = |e: usize, k_fast: bool| if k_fast { (e >> 5, e & (BK - 1)) } else { (e & (BM - 1), e >> 7) };
        for tid in 0..256 {
            for l in 0..16 {
                let e = tid + 256 * l;
                let (r, kk) = split(e, g.a_k == 1);
                let (gm, gk) = (row0 + r, k0 + kk);
                as_[r * LDS + kk] = if gm < g.m && gk < g.k { g.a[gm * g.a_m + gk * g.a_k] } else { 0.0 };
                let (c, kb) = split(e, g.b_k == 1);
                let (gn, gkb) = (col0 + c, k0 + kb);
                bs[c * LDS + kb] = if gn < g.n && gkb < g.k { g.b[gkb * g.b_k + gn * g.b_n] } else { 0.0 };
            }
        }
        for warp in 0..8 {
            let (wrow, wcol) = ((warp >> 2) * 64, (warp & 3) * 32);
            for ks in (0..BK).step_by(16) {
                let reg = |s: &[f32], at: usize| (s[at], s[at + 1]);
                let mut fa = [[[(0f32, 0f32); 4]; 32]; 4];
                let mut fb = [[[(0f32, 0f32); 2]; 32]; 4];
                for lane in 0..32 {
                    let (gr, t) = (lane >> 2, lane & 3);
                    for i in 0..4 {
                        let base = (wrow + 16 * i + gr) * LDS + ks + 2 * t;
                        fa[i][lane] = [
                            reg(&as_, base),
                            reg(&as_, base + 8 * LDS),
                            reg(&as_, base + 8),
                            reg(&as_, base + 8 * LDS + 8),
                        ];
                    }
                    for j in 0..4 {
                        let base = (wcol + 8 * j + gr) * LDS + ks + 2 * t;
                        fb[j][lane] = [reg(&bs, base), reg(&bs, base + 8)];
                    }
                }
                for i in 0..4 {
                    for j in 0..4 {
                        mma_m16n8k16(&mut acc[warp * 4 + i][j], &fa[i], &fb[j]);
                    }
                }
            }
        }
        k0 += BK;
    }
    for warp in 0..8 {
        let (wrow, wcol) = ((warp >> 2) * 64, (warp & 3) * 32);
        for lane in 0..32 {
            let (gr, t) = (lane >> 2, lane & 3);
            for i in 0..4 {
                for j in 0..4 {
                    let (r, col) = (row0 + wrow + 16 * i + gr, col0 + wcol + 8 * j + 2 * t);
                    let d = acc[warp * 4 + i][j][lane];
                    for (dr, dc, v) in [(0, 0, d[0]), (0, 1, d[1]), (8, 0, d[2]), (8, 1, d[3])] {
                        if r + dr < g.m && col + dc < g.n {
                            c[(r + dr) * g.n + col + dc] = v;
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn mma_fragment_index_math_reproduces_a_naive_gemm() {
    // Small integers keep every product and sum exact in f32, so the comparison is equality.
    let (m, n, k) = (131, 137, 45);
    let val = |i: usize, s: usize| ((i * 7 + s * 13) % 11) as f32 - 5.0;
    // Every transpose combination: A stored [m][k] or [k][m], B stored [k][n] or [n][k].
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a: Vec<f32> = (0..m * k).map(|i| val(i, 1)).collect();
        let b: Vec<f32> = (0..k * n).map(|i| val(i, 2)).collect();
        let (a_m, a_k) = if ta { (1, m) } else { (k, 1) };
        let (b_k, b_n) = if tb { (1, k) } else { (n, 1) };
        let g = Gemm { a: &a, b: &b, m, n, k, a_m, a_k, b_k, b_n };
        let mut c = vec![f32::NAN; m * n];
        for by in 0..m.div_ceil(BM) {
            for bx in 0..n.div_ceil(BN) {
                block(&g, &mut c, bx, by);
            }
        }
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * a_m + p * a_k] * b[p * b_k + j * b_n]).sum();
                assert_eq!(c[i * n + j], want, "C[{i}][{j}] ta={ta} tb={tb}");
            }
        }
    }
}
