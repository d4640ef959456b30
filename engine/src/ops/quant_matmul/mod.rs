//! Linear over a frozen packed weight: `y = x·dequant(W)ᵀ + b`. The weight is dequantized a tile
//! of rows at a time into one small buffer that each tile's GEMM reads at once, so the f32 weight
//! never exists whole (a 4-bit model stays 4-bit in memory). Backward gives the input gradient
//! `g·dequant(W)` the same way, and nothing for the weight: it is frozen by construction. On a GPU
//! (`cuda.rs`) the same products run on the weight's device copy (bitsandbytes 4-bit only). Under
//! `crate::autocast` the input (or gradient) and each dequantized tile are rounded to bf16.
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::autograd::record;
use crate::cpu::gemm::{sgemm, Parallelism};
use crate::error::{Error, Result};
use crate::quant::PackedMatrix;
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;
use std::sync::Arc;

const OP: &str = "packed_linear";

/// Values per dequantized tile: 1 MiB of f32, small next to a layer, big enough that the GEMM's
/// per-call cost (packing the activations again for every tile) stays a small share.
const TILE_VALUES: usize = 1 << 18;
/// Fewest weight rows per tile: each tile is the `n` of a GEMM, which is slow when narrow.
const MIN_TILE_ROWS: usize = 256;

/// Rows of W per tile for inputs of width `cols`: a multiple of 16 (the GEMM's panel width).
fn tile_rows(rows: usize, cols: usize) -> usize {
    let t = (TILE_VALUES / cols.max(1)).max(MIN_TILE_ROWS) / 16 * 16;
    t.min(rows).max(1)
}

/// Dequantizes `w` a tile of rows at a time into one buffer from the buffer cache (each call of
/// a training step would otherwise fault in a fresh MiB per layer) and hands each tile
/// `[r1 - r0, in]` to `f` with its row range, rounded to bf16 when `cast` (autocast).
fn for_each_tile(w: &dyn PackedMatrix, cast: bool, mut f: impl FnMut(usize, usize, &[f32])) -> Result<()> {
    let [out_f, in_f] = w.shape();
    let t = tile_rows(out_f, in_f);
    let mut tile = crate::cpu::pool::alloc_f32(t * in_f);
    let mut result = Ok(());
    for r0 in (0..out_f).step_by(t) {
        let r1 = (r0 + t).min(out_f);
        let buf = &mut tile[..(r1 - r0) * in_f];
        if let Err(e) = w.dequantize_rows(r0..r1, buf) {
            result = Err(e);
            break;
        }
        if cast {
            crate::autocast::round_bf16(buf);
        }
        f(r0, r1, buf);
    }
    crate::cpu::pool::give_back(tile);
    result
}

/// `x [..., in] → [..., out]` with `w` of shape `[out, in]` and an optional bias `[out]`.
pub fn packed_linear(x: &Tensor, w: &Arc<dyn PackedMatrix>, bias: Option<&Tensor>) -> Result<Tensor> {
    let [out_f, in_f] = w.shape();
    let x = x.float_input(OP)?;
    if x.rank() == 0 || x.shape()[x.rank() - 1] != in_f {
        return Err(Error::shape(
            OP,
            format!("input of shape {:?} does not end in in_features = {in_f} ({} weight)", x.shape(), w.type_name()),
        ));
    }
    let bias = bias.map(|b| b.float_input(OP)).transpose()?;
    if let Some(b) = &bias {
        if b.shape() != [out_f] {
            return Err(Error::shape(OP, format!("bias of shape {:?} for {out_f} outputs", b.shape())));
        }
    }
    let mut shape = x.shape().to_vec();
    let last = shape.len() - 1;
    shape[last] = out_f;
    let device = common_device(OP, &std::iter::once(&x).chain(bias.as_ref()).collect::<Vec<_>>())?;
    // Under autocast the input and the dequantized weight are rounded to bf16 (see `crate::autocast`).
    let cast = crate::autocast::autocast_dtype();
    let xc = match cast {
        Some(dt) => crate::autocast::round_operand(&x, dt)?,
        None => x.contiguous()?,
    };
    let out = match device {
        Device::Cpu => {
            let rows = xc.numel() / in_f.max(1);
            let mut y = crate::cpu::pool::alloc_f32(rows * out_f);
            {
                let xs = xc.read::<f32>(OP)?;
                forward_into(&xs, rows, w.as_ref(), &mut y, cast.is_some())?;
            }
            if let Some(b) = &bias {
                let bv = b.contiguous()?.to_vec::<f32>()?;
                for row in y.chunks_exact_mut(out_f.max(1)) {
                    row.iter_mut().zip(&bv).for_each(|(o, b)| *o += b);
                }
            }
            Tensor::from_op(CpuStorage::F32(y), &shape, None)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(o) => cuda::forward(o, &xc, w.as_ref(), bias.as_ref(), &shape)?,
    };
    let (wb, bias_shape) = (w.clone(), [out_f]);
    let inputs: Vec<&Tensor> = std::iter::once(&x).chain(bias.as_ref()).collect();
    let (x_tracks, x_shape) = (x.tracks_grad(), x.shape().to_vec());
    let has_bias = bias.is_some();
    let node = record(OP, &inputs, move |_, g| {
        let _cast = crate::autocast::set(cast);
        let gx = if x_tracks { Some(input_grad(g, wb.as_ref(), &x_shape)?) } else { None };
        let mut grads = vec![gx];
        if has_bias {
            grads.push(Some(g.sum_to(&bias_shape)?));
        }
        Ok(grads)
    });
    Ok(out.with_node_opt(node))
}

/// `y [rows, out] = x [rows, in] · dequant(W)ᵀ`, tile by tile; with `cast` each tile is rounded to
/// bf16 (autocast: the caller rounds `x`).
pub fn forward_into(x: &[f32], rows: usize, w: &dyn PackedMatrix, y: &mut [f32], cast: bool) -> Result<()> {
    let [out_f, in_f] = w.shape();
    if x.len() != rows * in_f || y.len() != rows * out_f {
        return Err(Error::shape(
            OP,
            format!("buffers of {} and {} values for {rows} rows of a {out_f}x{in_f} weight", x.len(), y.len()),
        ));
    }
    if rows == 0 || out_f == 0 {
        return Ok(());
    }
    for_each_tile(w, cast, |r0, r1, tile| {
        // B[k][j] = W[r0 + j][k]: the tile read transposed through strides.
        sgemm(rows, r1 - r0, in_f, 1.0, x, in_f, 1, tile, 1, in_f, 0.0, &mut y[r0..], out_f, 1, Parallelism::Rayon);
    })?;
    Ok(())
}

/// `g [..., out] · dequant(W) → [..., in]`, tile by tile over the output features; under autocast
/// with both rounded to bf16.
pub(crate) fn input_grad(g: &Tensor, w: &dyn PackedMatrix, x_shape: &[usize]) -> Result<Tensor> {
    let cast = crate::autocast::autocast_dtype();
    #[cfg(feature = "cuda")]
    if let Device::Cuda(o) = g.device() {
        return cuda::input_grad(o, g, w, x_shape, cast);
    }
    let [out_f, in_f] = w.shape();
    let gc = match cast {
        Some(dt) => crate::autocast::round_operand(g, dt)?,
        None => g.contiguous()?,
    };
    let rows = gc.numel() / out_f.max(1);
    let mut gx = crate::cpu::pool::alloc_f32_zeroed(rows * in_f);
    {
        let gs = gc.read::<f32>(OP)?;
        for_each_tile(w, cast.is_some(), |r0, r1, tile| {
            sgemm(
                rows,
                in_f,
                r1 - r0,
                1.0,
                &gs[r0..],
                out_f,
                1,
                tile,
                in_f,
                1,
                1.0,
                &mut gx,
                in_f,
                1,
                Parallelism::Rayon,
            );
        })?;
    }
    Tensor::from_vec(gx, x_shape)
}
