//! Binary ops on the GPU: one `binary_f32` launch over the broadcast shape, each operand read through
//! its own (broadcast) strides and offset, so views and broadcasts are never materialized.
use crate::error::{Error, Result};
use crate::gpu::map_pair;
use crate::layout::Layout;
use crate::tensor::Tensor;
use cuda::kernels::ops::Binary;

/// The kernel's op code for an engine op name: the four arithmetic ops, `maximum`, and the activation
/// derivatives (`relu_bwd`, ...) that take (forward input, upstream gradient).
fn code(op: &'static str) -> Result<Binary> {
    Ok(match op {
        "add" => Binary::Add,
        "sub" => Binary::Sub,
        "mul" => Binary::Mul,
        "div" => Binary::Div,
        "maximum" => Binary::Max,
        "relu_bwd" => Binary::ReluBwd,
        "silu_bwd" => Binary::SiluBwd,
        "gelu_bwd" => Binary::GeluErfBwd,
        "gelu_tanh_bwd" => Binary::GeluTanhBwd,
        _ => return Err(Error::invalid(op, "no GPU kernel for this binary op")),
    })
}

/// `op(a, b)` over `shape` (a and b already broadcast to it by `la`/`lb`), as a new contiguous tensor.
pub(crate) fn map(
    op: &'static str,
    ordinal: u32,
    (a, la): (&Tensor, &Layout),
    (b, lb): (&Tensor, &Layout),
    shape: &[usize],
) -> Result<Tensor> {
    let code = code(op)?;
    let out = map_pair(op, ordinal, (a, la), (b, lb), shape, |d, av, bv, out| {
        cuda::ops::binary(d, av, bv, out, shape, code)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, shape, None))
}
