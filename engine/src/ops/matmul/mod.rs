//! Matrix multiplication, batched with broadcasting over leading dims. Transposed and strided
//! operands go straight to the GEMM as strides (the packing step absorbs them): no copies. On a GPU
//! (`cuda.rs`) the same layouts become the strided, batched GEMM's arguments. Under
//! `crate::autocast` the operands (forward and backward) are rounded to bf16 first: on a GPU they
//! become bf16 tensors for the tensor-core GEMM, on the host rounded f32 values for the f32 GEMM.
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::autograd::record;
use crate::cpu::gemm::{sgemm, Parallelism};
use crate::error::{Error, Result};
use crate::layout::{broadcast_shapes, Layout};
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Batches whose GEMMs are smaller than this run one per thread instead of each using all threads.
const SMALL_GEMM_FLOPS: usize = 1 << 22;

impl Tensor {
    /// `self [..., m, k] · rhs [..., k, n]`, batch dims broadcast (NumPy `matmul` rules, rank >= 2).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let (a, b) = if half_on_gpu(self, rhs) {
            (self.clone(), rhs.clone())
        } else {
            (self.float_input("matmul")?, rhs.float_input("matmul")?)
        };
        if a.rank() < 2 || b.rank() < 2 {
            return Err(Error::shape(
                "matmul",
                format!("operands need rank >= 2, got {:?} and {:?}", a.shape(), b.shape()),
            ));
        }
        let (m, k) = (a.shape()[a.rank() - 2], a.shape()[a.rank() - 1]);
        let (k2, n) = (b.shape()[b.rank() - 2], b.shape()[b.rank() - 1]);
        if k != k2 {
            return Err(Error::shape(
                "matmul",
                format!("inner dims differ: {:?} · {:?} ({k} vs {k2})", a.shape(), b.shape()),
            ));
        }
        let cast = crate::autocast::autocast_dtype();
        let out = match cast {
            // Under autocast f32 operands are rounded first (two half GPU operands already are).
            Some(dt) if a.dtype() == crate::DType::F32 || b.dtype() == crate::DType::F32 => {
                product(&crate::autocast::round_operand(&a, dt)?, &crate::autocast::round_operand(&b, dt)?, [m, n, k])?
            }
            _ => product(&a, &b, [m, n, k])?,
        };
        Ok(out.with_node_opt(matmul_node(&a, &b, cast)))
    }
}

/// `a [..., m, k] · b [..., k, n]` (shapes checked), recording nothing: f32 on the host, f32 or two
/// half operands on a GPU.
fn product(a: &Tensor, b: &Tensor, [m, n, k]: [usize; 3]) -> Result<Tensor> {
    let device = common_device("matmul", &[a, b])?;
    // [B..., m, k] · [k, n] with mergeable batch dims is one big GEMM.
    let flat = if b.rank() == 2 && a.rank() > 2 { a.layout().reshape(&[a.numel() / k.max(1), k]).ok() } else { None };
    let (la, lb, shape) = match flat {
        Some(flat) => {
            let mut shape = a.shape().to_vec();
            let last = shape.len() - 1;
            shape[last] = n;
            (flat, b.layout().clone(), shape)
        }
        None => {
            let batch = broadcast_shapes("matmul", &a.shape()[..a.rank() - 2], &b.shape()[..b.rank() - 2])?;
            let mut sa = batch.clone();
            sa.extend([m, k]);
            let mut sb = batch.clone();
            sb.extend([k, n]);
            let mut shape = batch;
            shape.extend([m, n]);
            (a.layout().broadcast_as(&sa)?, b.layout().broadcast_as(&sb)?, shape)
        }
    };
    let out = match device {
        Device::Cpu => {
            let (r, rows) = (la.rank(), la.shape()[la.rank() - 2]);
            let nb = la.shape()[..r - 2].iter().product();
            let out = gemm_batched(a, &la, b, &lb, nb, rows, n, k)?;
            Tensor::from_op(CpuStorage::F32(out), &shape, None)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(o) => cuda::matmul(o, (a, &la), (b, &lb), &shape)?,
    };
    Ok(out)
}

/// Two bf16 (or two f16) operands on a GPU, neither differentiated, go to the tensor-core GEMM as
/// they are (exact products, f32 sums and result, as the host's widening to f32 gives); anything
/// else is computed in f32.
fn half_on_gpu(a: &Tensor, b: &Tensor) -> bool {
    let half = matches!(a.dtype(), crate::DType::BF16 | crate::DType::F16) && a.dtype() == b.dtype();
    half && a.device() != Device::Cpu && a.device() == b.device() && !a.tracks_grad() && !b.tracks_grad()
}

/// The backward replays the forward's autocast state (`cast`), so its GEMMs round their operands
/// as the forward's did, whatever the state when the backward runs.
fn matmul_node(a: &Tensor, b: &Tensor, cast: Option<crate::DType>) -> Option<crate::autograd::Node> {
    let (ia, ib) = (a.clone(), b.clone());
    record("matmul", &[a, b], move |_, g| {
        let _cast = crate::autocast::set(cast);
        let ga = if ia.tracks_grad() { Some(g.matmul(&ib.t()?)?.sum_to(ia.shape())?) } else { None };
        let gb = if !ib.tracks_grad() {
            None
        } else if ib.rank() == 2 && ia.rank() > 2 {
            // Σ over the batch of aᵀ·g as one GEMM on the flattened rows.
            let k = ia.shape()[ia.rank() - 1];
            let n = g.shape()[g.rank() - 1];
            let rows = ia.numel() / k.max(1);
            let fa = ia.contiguous()?.reshape(&[rows, k])?;
            let fg = g.contiguous()?.reshape(&[rows, n])?;
            Some(fa.t()?.matmul(&fg)?)
        } else {
            Some(ia.t()?.matmul(g)?.sum_to(ib.shape())?)
        };
        Ok(vec![ga, gb])
    })
}

/// Storage offset of batch `i` of a layout whose last two dims are the matrix.
fn batch_offset(l: &Layout, i: usize) -> usize {
    let r = l.rank();
    let mut rem = i;
    let mut off = l.offset();
    for d in (0..r - 2).rev() {
        off += (rem % l.shape()[d]) * l.strides()[d];
        rem /= l.shape()[d];
    }
    off
}

fn gemm_batched(
    a: &Tensor,
    la: &Layout,
    b: &Tensor,
    lb: &Layout,
    nb: usize,
    m: usize,
    n: usize,
    k: usize,
) -> Result<Vec<f32>> {
    let mut out = crate::cpu::pool::alloc_f32(nb * m * n);
    if out.is_empty() {
        return Ok(out);
    }
    let (ad, bd) = (a.read_all::<f32>("matmul")?, b.read_all::<f32>("matmul")?);
    let (ra, rb) = (la.rank(), lb.rank());
    let (rsa, csa) = (la.strides()[ra - 2], la.strides()[ra - 1]);
    let (rsb, csb) = (lb.strides()[rb - 2], lb.strides()[rb - 1]);
    let one = |i: usize, c: &mut [f32], par: Parallelism| {
        let (oa, ob) = (batch_offset(la, i), batch_offset(lb, i));
        sgemm(m, n, k, 1.0, &ad[oa..], rsa, csa, &bd[ob..], rsb, csb, 0.0, c, n, 1, par);
    };
    if nb > 1 && 2 * m * n * k < SMALL_GEMM_FLOPS {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| one(i, c, Parallelism::Serial));
    } else {
        out.chunks_mut(m * n).enumerate().for_each(|(i, c)| one(i, c, Parallelism::Rayon));
    }
    Ok(out)
}
