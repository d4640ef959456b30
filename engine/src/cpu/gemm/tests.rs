//! Checks `sgemm` against a naive f64 triple loop.
//!
//! Tolerance: |got − want| ≤ 4·ε_f32·(√k + 2)·(|α|·Σ_p |A[i][p]|·|B[p][j]| + |β|·|C₀[i][j]|) + 1e-30,
//! i.e. a √k-scaled multiple of the rounding of the magnitudes involved (the deterministic worst
//! case is k·ε; blocked sums with FMA sit far below that).

use super::*;

/// Small deterministic PRNG (64-bit LCG, top bits) for test data.
struct Lcg(u64);
impl Lcg {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A matrix view in a larger buffer: element (i, j) at `off + i*rs + j*cs`.
struct View {
    rows: usize,
    cols: usize,
    off: usize,
    rs: usize,
    cs: usize,
    buf: Vec<f32>,
}

/// How a view is laid out in its buffer.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Column-major instead of row-major.
    col_major: bool,
    /// Extra elements between consecutive rows (row-major) or columns (column-major).
    pad: usize,
    /// Stride between consecutive elements along the contiguous dimension (1 = dense).
    inner: usize,
    /// Elements before the view starts.
    off: usize,
}

const DENSE: Layout = Layout { col_major: false, pad: 0, inner: 1, off: 0 };

impl View {
    /// A view laid out per `lay`, filled with `fill` (inside and outside the view).
    fn new(rows: usize, cols: usize, lay: Layout, fill: f32) -> View {
        let (outer_n, inner_n) = if lay.col_major { (cols, rows) } else { (rows, cols) };
        let ld = inner_n.max(1) * lay.inner + lay.pad;
        let (rs, cs) = if lay.col_major { (lay.inner, ld) } else { (ld, lay.inner) };
        let len = lay.off + outer_n * ld + 3;
        View { rows, cols, off: lay.off, rs, cs, buf: vec![fill; len] }
    }
    fn idx(&self, i: usize, j: usize) -> usize {
        self.off + i * self.rs + j * self.cs
    }
    fn get(&self, i: usize, j: usize) -> f32 {
        self.buf[self.idx(i, j)]
    }
    fn randomize(&mut self, rng: &mut Lcg) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                let x = self.idx(i, j);
                self.buf[x] = rng.next_f32();
            }
        }
    }
    fn set_all(&mut self, v: f32) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                let x = self.idx(i, j);
                self.buf[x] = v;
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    la: Layout,
    lb: Layout,
    lc: Layout,
}

const SENTINEL: f32 = -12345.5;

/// Runs one case with `forced` path/kernel and `par`, checks every element of C (in the view
/// against the f64 reference, outside it against the sentinel).
fn check(case: Case, forced: Option<KernelKind>, par: Parallelism, seed: u64) {
    let Case { m, n, k, alpha, beta, la, lb, lc } = case;
    let mut rng = Lcg(seed);
    let mut a = View::new(m, k, la, 0.0);
    let mut b = View::new(k, n, lb, 0.0);
    a.randomize(&mut rng);
    b.randomize(&mut rng);
    let mut c = View::new(m, n, lc, SENTINEL);
    if beta == 0.0 {
        c.set_all(f32::NAN);
    } else {
        c.randomize(&mut rng);
    }
    let c0: Vec<f32> = c.buf.clone();
    let (coff, crs, ccs) = (c.off, c.rs, c.cs);
    sgemm_with(
        forced,
        m,
        n,
        k,
        alpha,
        &a.buf[a.off..],
        a.rs,
        a.cs,
        &b.buf[b.off..],
        b.rs,
        b.cs,
        beta,
        &mut c.buf[coff..],
        crs,
        ccs,
        par,
    );
    let eps = f32::EPSILON as f64;
    let mut inside = vec![false; c.buf.len()];
    for i in 0..m {
        for j in 0..n {
            let mut want = 0f64;
            let mut mag = 0f64;
            for p in 0..k {
                let x = a.get(i, p) as f64 * b.get(p, j) as f64;
                want += x;
                mag += x.abs();
            }
            let ci = c.idx(i, j);
            inside[ci] = true;
            let old = if beta == 0.0 { 0.0 } else { c0[ci] as f64 };
            want = alpha as f64 * want + beta as f64 * old;
            let tol =
                4.0 * eps * ((k as f64).sqrt() + 2.0) * (alpha.abs() as f64 * mag + (beta as f64 * old).abs()) + 1e-30;
            let got = c.buf[ci] as f64;
            assert!(
                (got - want).abs() <= tol,
                "C[{i}][{j}] = {got}, want {want} (tol {tol:e}) in {case:?} {forced:?} {par:?}"
            );
        }
    }
    for (x, (&now, &before)) in c.buf.iter().zip(&c0).enumerate() {
        if !inside[x] {
            assert_eq!(
                now.to_bits(),
                before.to_bits(),
                "element {x} outside the C view was written in {case:?} {forced:?} {par:?}"
            );
        }
    }
}

/// The paths worth covering on this machine: the automatic choice, and each kernel forced onto
/// the packed path.
fn paths() -> Vec<Option<KernelKind>> {
    let mut v = vec![None, Some(KernelKind::Wide)];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        v.push(Some(KernelKind::Avx512));
    }
    v
}

fn layout(col_major: bool, variant: usize) -> Layout {
    match variant % 3 {
        0 => Layout { col_major, ..DENSE },
        // Sub-block of a wider matrix, not at the start of the buffer.
        1 => Layout { col_major, pad: 5, inner: 1, off: 3 },
        // Non-unit stride on both dimensions.
        _ => Layout { col_major, pad: 2, inner: 2, off: 1 },
    }
}

const ALPHA_BETA: [(f32, f32); 3] = [(1.0, 0.0), (1.0, 1.0), (-0.75, 0.5)];

#[test]
fn all_small_shapes_layouts_and_scalars() {
    let dims = [1, 7, 17, 129];
    let mut variant = 0usize;
    for &m in &dims {
        for &n in &dims {
            for &k in &dims {
                for ta in [false, true] {
                    for tb in [false, true] {
                        let (alpha, beta) = ALPHA_BETA[variant % 3];
                        let case = Case {
                            m,
                            n,
                            k,
                            alpha,
                            beta,
                            la: layout(ta, variant),
                            lb: layout(tb, variant / 3),
                            // C: row-major, column-major or strided, padded or not.
                            lc: layout(variant % 2 == 1, variant / 2),
                        };
                        variant += 1;
                        for (pi, path) in paths().into_iter().enumerate() {
                            let par = if (variant + pi) & 1 == 0 { Parallelism::Serial } else { Parallelism::Rayon };
                            check(case, path, par, variant as u64);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_alpha_beta_and_parallelism_on_one_shape() {
    for (alpha, beta) in ALPHA_BETA.into_iter().chain([(0.0, 0.5), (2.0, -1.0)]) {
        for par in [Parallelism::Serial, Parallelism::Rayon] {
            for path in paths() {
                for lc in [DENSE, layout(true, 1), layout(false, 2)] {
                    let case = Case { m: 45, n: 70, k: 33, alpha, beta, la: DENSE, lb: layout(true, 0), lc };
                    check(case, path, par, 7);
                }
            }
        }
    }
}

#[test]
fn large_dimensions() {
    // Cover k > KC (several depth blocks, beta applied once), m > MC (several A blocks), wide n
    // (several column blocks), and the transformer-style B = Wᵀ layout.
    let shapes = [(1000, 17, 129), (7, 1000, 129), (129, 129, 1000), (2100, 9, 5), (40, 1100, 20)];
    for (si, &(m, n, k)) in shapes.iter().enumerate() {
        for (pi, path) in paths().into_iter().enumerate() {
            let (alpha, beta) = ALPHA_BETA[(si + pi) % 3];
            let case = Case {
                m,
                n,
                k,
                alpha,
                beta,
                la: layout(si % 2 == 1, si),
                lb: layout(si & 1 == 0, si + 1),
                lc: layout(false, si + pi),
            };
            let par = if pi & 1 == 0 { Parallelism::Rayon } else { Parallelism::Serial };
            check(case, path, par, si as u64);
        }
    }
}

#[test]
fn other_thread_counts() {
    // Task grids for thread counts other than this machine's.
    for threads in [3, 5, 8] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("build a rayon pool");
        for &(m, n, k) in &[(129, 129, 17), (17, 300, 40), (300, 17, 40), (64, 96, 64)] {
            for path in paths() {
                let case = Case { m, n, k, alpha: 1.0, beta: 0.5, la: DENSE, lb: layout(true, 0), lc: DENSE };
                pool.install(|| check(case, path, Parallelism::Rayon, 11));
            }
        }
    }
}

#[test]
fn k_zero_scales_c() {
    for (beta, nan) in [(0.0, true), (1.0, false), (0.5, false)] {
        let (m, n) = (5, 9);
        let mut c: Vec<f32> = (0..m * n).map(|x| if nan { f32::NAN } else { x as f32 }).collect();
        sgemm(m, n, 0, 1.0, &[], 0, 1, &[], 1, 0, beta, &mut c, n, 1, Parallelism::Rayon);
        for (x, &v) in c.iter().enumerate() {
            let want = if beta == 0.0 { 0.0 } else { beta * x as f32 };
            assert_eq!(v, want);
        }
    }
}

#[test]
fn empty_shapes_are_no_ops() {
    let mut c = vec![1.0f32; 4];
    sgemm(0, 2, 3, 1.0, &[], 3, 1, &[0.0; 6], 2, 1, 0.0, &mut c, 2, 1, Parallelism::Rayon);
    sgemm(2, 0, 3, 1.0, &[0.0; 6], 3, 1, &[], 0, 1, 0.0, &mut c, 0, 1, Parallelism::Serial);
    assert_eq!(c, vec![1.0; 4]);
}

#[test]
fn alpha_zero_does_not_read_a_or_b() {
    let (m, n, k) = (40, 50, 60);
    let a = vec![f32::NAN; m * k];
    let b = vec![f32::NAN; k * n];
    let mut c = vec![2.0f32; m * n];
    sgemm(m, n, k, 0.0, &a, k, 1, &b, n, 1, 0.5, &mut c, n, 1, Parallelism::Rayon);
    assert!(c.iter().all(|&v| v == 1.0));
}

#[test]
#[should_panic(expected = "C slice too short")]
fn short_c_panics() {
    let mut c = vec![0.0f32; 10];
    sgemm(4, 4, 4, 1.0, &[0.0; 16], 4, 1, &[0.0; 16], 4, 1, 0.0, &mut c, 4, 1, Parallelism::Serial);
}

#[test]
fn helpers() {
    assert!(no_self_overlap(3, 4, 4, 1));
    assert!(no_self_overlap(3, 4, 1, 3));
    assert!(!no_self_overlap(3, 4, 0, 1));
    assert!(!no_self_overlap(3, 4, 2, 1));
    assert!(no_self_overlap(1, 4, 0, 1));
    assert!(fits(12, 3, 4, 4, 1));
    assert!(!fits(11, 3, 4, 4, 1));
    assert!(!fits(usize::MAX, 3, 4, usize::MAX, 1));
    for (total, parts) in [(10, 3), (3, 5), (64, 4)] {
        let mut next = 0;
        for idx in 0..parts {
            let (s, e) = split(total, parts, idx);
            assert_eq!(s, next);
            next = e;
        }
        assert_eq!(next, total);
    }
    // (row blocks, column blocks): column blocks fit the L2 bound, work splits evenly.
    assert_eq!(task_grid(171, 64, 2, 16, 1.0), (1, 4));
    assert_eq!(task_grid(43, 16, 2, 16, 1.0), (1, 2));
    assert_eq!(task_grid(171, 12, 2, 16, 1.0), (1, 2));
    assert_eq!(task_grid(171, 1, 2, 16, 1.0), (2, 1));
    assert_eq!(task_grid(50, 64, 1, 16, 1.0), (1, 4));
}
