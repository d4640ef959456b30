//! Reductions on the GPU. Sums are one `reduce` launch over the middle dim of a contiguous
//! `[outer, len, inner]` view. There is no index-returning kernel, so max and argmax find the first
//! maximum with reductions and elementwise launches: each element gets a score that is its position
//! counted from the end of the dim (plus `len` for a NaN, which wins as on the host) when it is a
//! maximum and 0 otherwise; the largest score names the first maximum (or first NaN).
use crate::error::{Error, Result};
use crate::gpu::{dense_f32, with_device, GpuBuf, Strided};
use crate::tensor::Tensor;
use cuda::kernels::ops::{Binary, Reduce, Unary};
use cuda::{Buffer, Device};
use std::sync::Arc;

/// `[outer, len, inner]` around the reduced dim(s).
pub(crate) type Split = (usize, usize, usize);

/// Sum of the contiguous `x` over the middle of `split`, as a tensor of `out_shape`.
pub(crate) fn sum(ordinal: u32, x: &Tensor, (outer, len, inner): Split, out_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "sum";
    let xb = dense_f32(OP, ordinal, x)?;
    let out = with_device(OP, ordinal, |d| {
        if len == 0 || outer * inner == 0 {
            // An empty sum is 0 (the launcher refuses empty dims).
            return d.zeros::<f32>(outer * inner);
        }
        let mut y = d.alloc::<f32>(outer * inner)?;
        cuda::ops::reduce(d, &xb, &mut y, outer, len, inner, Reduce::Sum)?;
        Ok(y)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, out_shape, None))
}

/// Strides of the `[outer, len, inner]` iteration space for a full operand, a `[outer, 1, inner]` one,
/// a `[len]` one and a single value.
struct Views {
    full: [isize; 3],
    keep: [isize; 3],
    along: [isize; 3],
    scalar: [isize; 3],
}

struct Launches<'d> {
    d: &'d Device,
    shape: [usize; 3],
    v: Views,
}

impl Launches<'_> {
    fn binary(
        &self,
        a: (&Buffer<f32>, &[isize; 3]),
        b: (&Buffer<f32>, &[isize; 3]),
        op: Binary,
    ) -> cuda::Result<Buffer<f32>> {
        let mut out = self.d.alloc::<f32>(self.shape.iter().product())?;
        cuda::ops::binary(self.d, Strided::new(a.0, a.1), Strided::new(b.0, b.1), &mut out, &self.shape, op)?;
        Ok(out)
    }

    fn unary(&self, x: &Buffer<f32>, op: Unary, s: f32) -> cuda::Result<Buffer<f32>> {
        let mut out = self.d.alloc::<f32>(self.shape.iter().product())?;
        cuda::ops::unary(self.d, Strided::new(x, &self.v.full), &mut out, &self.shape, op, s)?;
        Ok(out)
    }

    fn reduce(&self, x: &Buffer<f32>, op: Reduce) -> cuda::Result<Buffer<f32>> {
        let [outer, len, inner] = self.shape;
        let mut y = self.d.alloc::<f32>(outer * inner)?;
        cuda::ops::reduce(self.d, x, &mut y, outer, len, inner, op)?;
        Ok(y)
    }
}

fn launches(d: &Device, (outer, len, inner): Split) -> Launches<'_> {
    let (l, i) = (len as isize, inner as isize);
    let v = Views { full: [l * i, i, 1], keep: [i, 0, 1], along: [0, 1, 0], scalar: [0; 3] };
    Launches { d, shape: [outer, len, inner], v }
}

/// The scores (`[outer, len, inner]`) and their maximum (`[outer, inner]`), see the module comment.
fn first_max(k: &Launches, x: &Buffer<f32>) -> cuda::Result<(Buffer<f32>, Buffer<f32>)> {
    let len = k.shape[1];
    let v = &k.v;
    let one = k.d.upload(&[1.0f32])?;
    let from_end: Vec<f32> = (0..len).map(|j| (len - j) as f32).collect();
    let from_end = k.d.upload(&from_end)?;
    let m = k.reduce(x, Reduce::Max)?;
    // m − x > 0 below the maximum; NaN (so not below) for a NaN x and where x and m are one infinity.
    let diff = k.binary((&m, &v.keep), (x, &v.full), Binary::Sub)?;
    let below = k.binary((&diff, &v.full), (&one, &v.scalar), Binary::ReluBwd)?;
    let hit = k.binary((&below, &v.full), (&from_end, &v.along), Binary::Mul)?;
    let hit = k.binary((&from_end, &v.along), (&hit, &v.full), Binary::Sub)?;
    // Not NaN: finite (x − x + 1 > 0) or infinite (|x| − f32::MAX > 0).
    let zero_if_finite = k.binary((x, &v.full), (x, &v.full), Binary::Sub)?;
    let finite =
        k.binary((&k.unary(&zero_if_finite, Unary::AddScalar, 1.0)?, &v.full), (&one, &v.scalar), Binary::ReluBwd)?;
    let beyond = k.unary(&k.unary(x, Unary::Abs, 0.0)?, Unary::AddScalar, -f32::MAX)?;
    let infinite = k.binary((&beyond, &v.full), (&one, &v.scalar), Binary::ReluBwd)?;
    let not_nan = k.binary((&finite, &v.full), (&infinite, &v.full), Binary::Add)?;
    // score = hit + len · (1 − not_nan)
    let nan_bonus = k.unary(&k.unary(&not_nan, Unary::Scale, -(len as f32))?, Unary::AddScalar, len as f32)?;
    let score = k.binary((&hit, &v.full), (&nan_bonus, &v.full), Binary::Add)?;
    let best = k.reduce(&score, Reduce::Max)?;
    Ok((score, best))
}

/// Scores are whole numbers in f32: the dim must be short enough for them to be exact.
fn check_len(op: &'static str, len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::invalid(op, "cannot take the maximum of an empty dim"));
    }
    if len > 1 << 22 {
        return Err(Error::invalid(op, format!("a dim of {len} elements is too long for the GPU path (at most 2^22)")));
    }
    Ok(())
}

/// Max of the contiguous `x` over the middle of `split` (as `out_shape`), and the one-hot mask of the
/// first maximum (shaped like `x`) for the backward.
pub(crate) fn max(ordinal: u32, x: &Tensor, split: Split, out_shape: &[usize]) -> Result<(Tensor, Tensor)> {
    const OP: &str = "max";
    check_len(OP, split.1)?;
    if split.0 * split.2 == 0 {
        let empty =
            |shape: &[usize]| Tensor::zeros_on(shape, crate::dtype::DType::F32, crate::storage::Device::Cuda(ordinal));
        return Ok((empty(out_shape)?, empty(x.shape())?));
    }
    let xb = dense_f32(OP, ordinal, x)?;
    let (vals, onehot) = with_device(OP, ordinal, |d| {
        let k = launches(d, split);
        let v = &k.v;
        let (score, best) = first_max(&k, &xb)?;
        // Scores differ by at least 1, so only the best is above best − 0.5.
        let gap = k.binary((&score, &v.full), (&best, &v.keep), Binary::Sub)?;
        let one = d.upload(&[1.0f32])?;
        let onehot = k.binary((&k.unary(&gap, Unary::AddScalar, 0.5)?, &v.full), (&one, &v.scalar), Binary::ReluBwd)?;
        // x where the mask is set, an exact 0 elsewhere (never 0 · inf), summed: x at the first maximum.
        let picked = k.binary((&onehot, &v.full), (&xb, &v.full), Binary::ReluBwd)?;
        Ok((k.reduce(&picked, Reduce::Sum)?, onehot))
    })?;
    Ok((Tensor::from_gpu(vals, ordinal, out_shape, None), Tensor::from_gpu(onehot, ordinal, x.shape(), None)))
}

/// The gradient of `max`: `g` (`[outer, 1, inner]`) placed at the first maximum given by `onehot`.
pub(crate) fn max_backward(ordinal: u32, onehot: &Tensor, g: &Tensor, split: Split) -> Result<Tensor> {
    const OP: &str = "max_bwd";
    let (mb, gb) = (dense_f32(OP, ordinal, onehot)?, dense_f32(OP, ordinal, g)?);
    let gx = with_device(OP, ordinal, |d| {
        let k = launches(d, split);
        k.binary((&mb, &k.v.full), (&gb, &k.v.keep), Binary::ReluBwd)
    })?;
    Ok(Tensor::from_gpu(gx, ordinal, onehot.shape(), None))
}

/// Index of the first maximum (first NaN if any) of the contiguous `x` over the middle of `split`, as i64.
pub(crate) fn argmax(ordinal: u32, x: &Tensor, split: Split, out_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "argmax";
    check_len(OP, split.1)?;
    if split.0 * split.2 == 0 {
        let empty = with_device(OP, ordinal, |d| d.zeros::<i64>(0))?;
        return Ok(Tensor::from_gpu_buf(GpuBuf::I64(Arc::new(empty)), ordinal, out_shape, None));
    }
    let len = split.1 as f32;
    let xb = dense_f32(OP, ordinal, x)?;
    let idx = with_device(OP, ordinal, |d| {
        let k = launches(d, split);
        let (_, best) = first_max(&k, &xb)?;
        // A NaN's score is len higher: index = len − best, plus len when best > len.
        let n = best.len();
        let shape = [n];
        let over = {
            let mut o = d.alloc::<f32>(n)?;
            cuda::ops::unary(d, Strided::new(&best, &[1]), &mut o, &shape, Unary::AddScalar, -len)?;
            o
        };
        let len_buf = d.upload(&[len])?;
        let mut bonus = d.alloc::<f32>(n)?;
        cuda::ops::binary(
            d,
            Strided::new(&over, &[1]),
            Strided::new(&len_buf, &[0]),
            &mut bonus,
            &shape,
            Binary::ReluBwd,
        )?;
        let mut idx = d.alloc::<f32>(n)?;
        cuda::ops::binary(d, Strided::new(&bonus, &[1]), Strided::new(&best, &[1]), &mut idx, &shape, Binary::Sub)?;
        let mut out = d.alloc::<f32>(n)?;
        cuda::ops::unary(d, Strided::new(&idx, &[1]), &mut out, &shape, Unary::AddScalar, len)?;
        // No f32 -> i64 cast kernel: the indices (one per output element) cross to the host and back.
        let host: Vec<i64> = d.download(&out)?.into_iter().map(|v| v as i64).collect();
        d.upload(&host)
    })?;
    Ok(Tensor::from_gpu_buf(GpuBuf::I64(Arc::new(idx)), ordinal, out_shape, None))
}
