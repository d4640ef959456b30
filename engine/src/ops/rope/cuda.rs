//! RoPE on the GPU: `cuda::ops::Rope` on row-major x with the cos/sin tables on the same device;
//! the backward is the same launch with `transpose` (the adjoint rotation).
use crate::error::Result;
use crate::gpu::dense_f32;
use crate::gpu::with_device;
use crate::tensor::Tensor;

/// The rotation (or, with `transpose`, its adjoint) of `x` `[batch, heads, t, hd]`.
pub(crate) fn rotate(
    ordinal: u32,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    per_batch: bool,
    transpose: bool,
) -> Result<Tensor> {
    const OP: &str = "rope";
    let sh = x.shape();
    let rope = cuda::ops::Rope { batch: sh[0], heads: sh[1], seq: sh[2], head_dim: sh[3], per_batch };
    let (xb, cb, sb) = (dense_f32(OP, ordinal, x)?, dense_f32(OP, ordinal, cos)?, dense_f32(OP, ordinal, sin)?);
    let out = with_device(OP, ordinal, |d| {
        let mut y = d.alloc::<f32>(x.numel())?;
        if x.numel() > 0 {
            rope.apply(d, &xb, &cb, &sb, &mut y, transpose)?;
        }
        Ok(y)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, sh, None))
}
