//! Dropout on the GPU: `cuda::ops::dropout`, the counter-based Philox4x32-10 kernel. Element i of the
//! row-major tensor is kept from the Philox output for counter i/4 under key `seed` (see
//! kernels/cu/dropout.cu), so the mask is a function of (seed, i) alone and the backward, the same
//! launch on the gradient, drops exactly the forward's elements.
use crate::error::Result;
use crate::gpu::dense_f32;
use crate::gpu::with_device;
use crate::tensor::Tensor;

/// `x` (any layout) with the elements the mask of `seed` drops zeroed and the rest scaled by 1/(1−p).
pub(crate) fn apply(op: &'static str, ordinal: u32, x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let xb = dense_f32(op, ordinal, x)?;
    let n = x.numel();
    let out = with_device(op, ordinal, |d| {
        let mut y = d.alloc::<f32>(n)?;
        if n > 0 {
            cuda::ops::dropout(d, &xb, &mut y, n, p, seed, 0)?;
        }
        Ok(y)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, x.shape(), None))
}
