//! Launch geometry and operand extent checks, host-side (no CUDA needed, so CPU CI tests them).
//! Kernels index memory with what they are given; these checks are what keeps a bad shape from reading
//! or writing outside a buffer.

use crate::{Error, Result};

/// Threads per block of the grid-stride elementwise kernels and the GEMMs.
pub const BLOCK: u32 = 256;
/// Output tile of both GEMM kernels (rows and columns).
pub const GEMM_TILE: u32 = 128;
/// Largest grid y / z extent the driver accepts.
const MAX_GRID_YZ: u64 = 65_535;

/// Grid size (blocks in x) of a grid-stride kernel over `n` items; capped, since each thread loops.
pub fn grid_stride_blocks(n: u64) -> u32 {
    n.div_ceil(u64::from(BLOCK)).clamp(1, 1 << 16) as u32
}

/// Block size of the one-block-per-row kernels: enough warps to cover `cols`, 32 to 1024 threads.
pub fn row_block(cols: u32) -> u32 {
    cols.div_ceil(32).clamp(1, 32) * 32
}

/// A strided, batched GEMM `C[z] = alpha A[z] B[z] + beta C[z]` (see `kernels/cu/gemm_args.cuh`).
/// Strides are in elements and non-negative; a transposed operand is swapped strides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a_m: usize,
    pub a_k: usize,
    pub b_k: usize,
    pub b_n: usize,
    pub c_m: usize,
    pub a_batch: usize,
    pub b_batch: usize,
    pub c_batch: usize,
    pub alpha: f32,
    pub beta: f32,
}

impl GemmShape {
    /// Contiguous row-major operands, optionally transposed: A is `[m, k]` (or `[k, m]` if `trans_a`),
    /// B is `[k, n]` (or `[n, k]`), C is `[m, n]`; `batch` matrices back to back.
    pub fn row_major(m: usize, n: usize, k: usize, batch: usize, trans_a: bool, trans_b: bool) -> GemmShape {
        let (a_m, a_k) = if trans_a { (1, m) } else { (k, 1) };
        let (b_k, b_n) = if trans_b { (1, k) } else { (n, 1) };
        GemmShape {
            m,
            n,
            k,
            batch,
            a_m,
            a_k,
            b_k,
            b_n,
            c_m: n,
            a_batch: m * k,
            b_batch: k * n,
            c_batch: m * n,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    /// One past the largest element index the kernel touches in each operand: (a, b, c).
    pub fn extents(&self) -> Option<(usize, usize, usize)> {
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            return Some((0, 0, 0));
        }
        let last = |batch_stride: usize, r: usize, rs: usize, c: usize, cs: usize| -> Option<usize> {
            let z = (self.batch - 1).checked_mul(batch_stride)?;
            let i = r.checked_sub(1).map_or(Some(0), |r| r.checked_mul(rs))?;
            let j = c.checked_sub(1).map_or(Some(0), |c| c.checked_mul(cs))?;
            z.checked_add(i)?.checked_add(j)?.checked_add(1)
        };
        let a = if self.k == 0 { 0 } else { last(self.a_batch, self.m, self.a_m, self.k, self.a_k)? };
        let b = if self.k == 0 { 0 } else { last(self.b_batch, self.k, self.b_k, self.n, self.b_n)? };
        let c = last(self.c_batch, self.m, self.c_m, self.n, 1)?;
        Some((a, b, c))
    }

    /// Checks the shape against the operand lengths and the kernel's limits; returns the launch grid.
    pub fn check(&self, op: &'static str, a_len: usize, b_len: usize, c_len: usize) -> Result<[u32; 3]> {
        let (a, b, c) = self.extents().ok_or_else(|| Error::invalid(op, format!("{self:?}: index overflow")))?;
        for (name, need, have) in [("A", a, a_len), ("B", b, b_len), ("C", c, c_len)] {
            if need > have {
                return Err(Error::invalid(
                    op,
                    format!("{self:?} reads {name} up to element {need}, buffer has {have}"),
                ));
            }
        }
        let too_big = |v: usize| v > u32::MAX as usize;
        if too_big(self.m) || too_big(self.n) || too_big(self.k) || self.batch as u64 > MAX_GRID_YZ {
            return Err(Error::invalid(op, format!("{self:?}: m, n, k must fit u32 and batch <= {MAX_GRID_YZ}")));
        }
        let tiles_m = (self.m as u64).div_ceil(u64::from(GEMM_TILE));
        if tiles_m > MAX_GRID_YZ {
            return Err(Error::invalid(op, format!("m = {} exceeds {} rows", self.m, MAX_GRID_YZ * 128)));
        }
        let tiles_n = (self.n as u64).div_ceil(u64::from(GEMM_TILE));
        Ok([tiles_n as u32, tiles_m as u32, self.batch as u32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_extents_cover_exactly_the_last_element() {
        let g = GemmShape::row_major(3, 5, 4, 2, false, false);
        assert_eq!(g.extents(), Some((24, 40, 30)));
        let t = GemmShape::row_major(3, 5, 4, 1, true, true);
        // A^T stored [k, m] = [4, 3]: last (m=2, k=3) at 2 * 1 + 3 * 3 = 11; B^T stored [n, k]: 3 + 4 * 4 = 19.
        assert_eq!(t.extents(), Some((12, 20, 15)));
        assert_eq!(g.check("gemm", 24, 40, 30).unwrap(), [1, 1, 2]);
        let e = g.check("gemm", 23, 40, 30).unwrap_err().to_string();
        assert!(e.contains("reads A up to element 24, buffer has 23"), "{e}");
        let big = GemmShape::row_major(300, 129, 1, 1, false, false);
        assert_eq!(big.check("gemm", 300, 129, 300 * 129).unwrap(), [2, 3, 1]);
        assert_eq!(GemmShape::row_major(0, 5, 4, 1, false, false).check("gemm", 0, 20, 0).unwrap(), [1, 0, 1]);
        let mut overflow = g;
        overflow.a_batch = usize::MAX;
        assert!(overflow.check("gemm", usize::MAX, 40, 30).unwrap_err().to_string().contains("overflow"));
    }

    #[test]
    fn launch_sizes() {
        assert_eq!(grid_stride_blocks(0), 1);
        assert_eq!(grid_stride_blocks(257), 2);
        assert_eq!(grid_stride_blocks(u64::MAX), 1 << 16);
        assert_eq!((row_block(1), row_block(33), row_block(5000)), (32, 64, 1024));
    }
}
