//! Unary ops on the GPU: `unary_f32` launches reading the input through its strides and offset.
use crate::error::{Error, Result};
use crate::gpu::{strides_of, with_device, Strided};
use crate::tensor::Tensor;
use cuda::kernels::ops::Unary;

/// The launches (op code, scalar) that compute an engine op; `params` are its scalars
/// (`affine`: mul, add; `powf`: the exponent).
fn launches(op: &'static str, params: [f32; 2]) -> Result<Vec<(Unary, f32)>> {
    let one = |u| Ok(vec![(u, 0.0)]);
    match op {
        "neg" => one(Unary::Neg),
        "exp" => one(Unary::Exp),
        "log" => one(Unary::Log),
        "sqrt" => one(Unary::Sqrt),
        "recip" => one(Unary::Recip),
        "tanh" => one(Unary::Tanh),
        "sigmoid" => one(Unary::Sigmoid),
        "relu" => one(Unary::Relu),
        "silu" => one(Unary::Silu),
        "gelu" => one(Unary::GeluErf),
        "gelu_tanh" => one(Unary::GeluTanh),
        "powf" if params[0] == 2.0 => one(Unary::Square),
        "powf" => Ok(vec![(Unary::PowScalar, params[0])]),
        // x * mul + add: the kernel has scale and add-scalar ops, so two launches unless one is trivial.
        "affine" => {
            let [mul, add] = params;
            Ok(match (mul == 1.0, add == 0.0) {
                (true, true) => vec![(Unary::Copy, 0.0)],
                (false, true) => vec![(Unary::Scale, mul)],
                (true, false) => vec![(Unary::AddScalar, add)],
                (false, false) => vec![(Unary::Scale, mul), (Unary::AddScalar, add)],
            })
        }
        "contiguous" => one(Unary::Copy),
        _ => Err(Error::invalid(op, "no GPU kernel for this unary op")),
    }
}

/// `op(x)` as a new contiguous tensor of x's shape.
pub(crate) fn map(op: &'static str, ordinal: u32, x: &Tensor, params: [f32; 2]) -> Result<Tensor> {
    let steps = launches(op, params)?;
    let xb = x.gpu_f32(op)?;
    let (shape, strides) = (x.shape().to_vec(), strides_of(x.layout()));
    let n = x.numel();
    let out = with_device(op, ordinal, |d| {
        let mut out = d.alloc::<f32>(n)?;
        let xv = Strided { buf: &xb, offset: x.layout().offset(), strides: &strides };
        let (code, s) = steps.first().copied().unwrap_or((Unary::Copy, 0.0));
        cuda::ops::unary(d, xv, &mut out, &shape, code, s)?;
        for &(code, s) in steps.iter().skip(1) {
            let prev = out;
            out = d.alloc::<f32>(n)?;
            let contiguous: Vec<isize> =
                crate::layout::contiguous_strides(&shape).iter().map(|&s| s as isize).collect();
            cuda::ops::unary(d, Strided::new(&prev, &contiguous), &mut out, &shape, code, s)?;
        }
        Ok(out)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, &shape, None))
}
