//! The packed Linear on the GPU. The weight's codes and scales are on the device already (moved with
//! the model, see `quant::to_device`); each product dequantizes it into an f32 scratch buffer
//! (kernels/cu/dequant.cu, bit for bit the host's values) and runs the f32 GEMM on it. The scratch
//! holds the whole weight unless that exceeds [`TILE_VALUES`], then tiles of rows: the device's
//! buffer cache hands the same block back every call, so unlike the host (which keeps the f32 weight
//! from ever existing whole to stay small in RAM) there is no reason to pay many narrow GEMMs.
use crate::error::{Error, Result};
use crate::gpu::with_device;
use crate::ops::matmul::cuda::{gemm_at, Operand};
use crate::quant::PackedMatrix;
use crate::storage::Device;
use crate::tensor::Tensor;
use cuda::GemmShape;

const OP: &str = "packed_linear";

/// Most f32 values dequantized at once (64 MiB): a 4096x4096 projection in one piece.
const TILE_VALUES: usize = 1 << 24;

fn tile_rows(rows: usize, cols: usize) -> usize {
    (TILE_VALUES / cols.max(1)).clamp(1, rows.max(1))
}

/// Checks that `w` sits on GPU `ordinal`, where the activations are.
pub(crate) fn check_on(op: &'static str, w: &dyn PackedMatrix, ordinal: u32) -> Result<()> {
    match w.device() {
        Device::Cuda(o) if o == ordinal => Ok(()),
        Device::Cpu => Err(Error::invalid(
            op,
            format!(
                "the {} packed weight {:?} is on the host but the input on cuda:{ordinal}; move the model with engine::models::move_to_device (a packed matrix alone with engine::quant::to_device)",
                w.type_name(),
                w.shape()
            ),
        )),
        other => Err(Error::invalid(
            op,
            format!("the {} packed weight is on {other} but the input on cuda:{ordinal}", w.type_name()),
        )),
    }
}

/// A GEMM `[m, k]·[k, n]` into `[m, n]` with row stride `c_m`: A's and B's (row, col) strides.
fn gemm(m: usize, n: usize, k: usize, a: [usize; 2], b: [usize; 2], c_m: usize, beta: f32) -> GemmShape {
    GemmShape {
        m,
        n,
        k,
        batch: 1,
        a_m: a[0],
        a_k: a[1],
        b_k: b[0],
        b_n: b[1],
        c_m,
        a_batch: 0,
        b_batch: 0,
        c_batch: 0,
        alpha: 1.0,
        beta,
    }
}

/// `out [rows, out] = x·dequant(W)ᵀ + beta·out`, `x` read as `[rows, in]` from element `x_off` of
/// `x` with (row, col) strides `xs`. `w` must be on `d`'s GPU (see [`check_on`]). A bf16 `x`
/// (autocast) takes the weight rounded to bf16 too, and the tensor-core GEMM.
#[allow(clippy::too_many_arguments)]
pub(crate) fn accumulate_forward(
    d: &cuda::Device,
    x: Operand,
    x_off: usize,
    xs: [usize; 2],
    rows: usize,
    w: &dyn PackedMatrix,
    out: &mut cuda::Buffer<f32>,
    beta: f32,
) -> cuda::Result<()> {
    let [out_f, in_f] = w.shape();
    if rows == 0 || out_f == 0 || in_f == 0 {
        return Ok(());
    }
    let t = tile_rows(out_f, in_f);
    let mut tile = Tile::new(d, t * in_f, matches!(x, Operand::BF16(_)))?;
    for r0 in (0..out_f).step_by(t) {
        let r1 = (r0 + t).min(out_f);
        let wt = tile.dequantize(d, w, r0..r1)?;
        // B[k][j] = W[r0 + j][k]: the tile read transposed through strides, into columns r0..r1.
        let g = gemm(rows, r1 - r0, in_f, xs, [1, in_f], out_f, beta);
        gemm_at(d, x, x_off, wt, 0, out, r0, &g)?;
    }
    Ok(())
}

/// The dequantization scratch: f32, plus its bf16 rounding under autocast.
struct Tile {
    f32: cuda::Buffer<f32>,
    bf16: Option<cuda::Buffer<u16>>,
}

impl Tile {
    fn new(d: &cuda::Device, len: usize, bf16: bool) -> cuda::Result<Self> {
        Ok(Tile { f32: d.alloc::<f32>(len)?, bf16: if bf16 { Some(d.alloc::<u16>(len)?) } else { None } })
    }

    /// Rows `rows` of `w` as a GEMM operand (row-major from element 0).
    fn dequantize(
        &mut self,
        d: &cuda::Device,
        w: &dyn PackedMatrix,
        rows: std::ops::Range<usize>,
    ) -> cuda::Result<Operand<'_>> {
        w.dequantize_rows_gpu(d, rows, &mut self.f32)?;
        match &mut self.bf16 {
            Some(h) => {
                // Rows past this tile's (the last one's) are stale; no GEMM reads them.
                cuda::ops::cast_to_half(d, &self.f32, h, true)?;
                Ok(Operand::BF16(h))
            }
            None => Ok(Operand::F32(&self.f32)),
        }
    }
}

/// `out [rows, out] = ones·biasᵀ`: the bias (`buf` from element `off`, stride `stride`) in every row,
/// by a rank-1 GEMM.
pub(crate) fn write_bias(
    d: &cuda::Device,
    buf: &cuda::Buffer<f32>,
    off: usize,
    stride: usize,
    rows: usize,
    out_f: usize,
    out: &mut cuda::Buffer<f32>,
) -> cuda::Result<()> {
    let mut ones = d.alloc::<f32>(rows)?;
    cuda::ops::fill(d, &mut ones, rows, 1.0)?;
    let g = gemm(rows, out_f, 1, [1, 1], [0, stride], out_f, 0.0);
    cuda::ops::gemm_f32_at(d, &ones, 0, buf, off, out, 0, &g)
}

/// The forward on GPU `ordinal`: `xc` contiguous `[..., in]`, output of `shape`.
pub(crate) fn forward(
    ordinal: u32,
    xc: &Tensor,
    w: &dyn PackedMatrix,
    bias: Option<&Tensor>,
    shape: &[usize],
) -> Result<Tensor> {
    check_on(OP, w, ordinal)?;
    let [out_f, in_f] = w.shape();
    let rows = xc.numel() / in_f.max(1);
    let (xbuf, x_off) = (xc.gpu_buf(OP)?, xc.layout().offset());
    let x = Operand::of(OP, &xbuf)?;
    let bias =
        bias.map(|t| Ok::<_, Error>((t.gpu_f32(OP)?, t.layout().offset(), t.layout().strides()[0]))).transpose()?;
    let out = with_device(OP, ordinal, |d| {
        // With no bias and an empty inner dim, nothing would write the output: start from zeros.
        let mut out =
            if bias.is_none() && in_f == 0 { d.zeros::<f32>(rows * out_f)? } else { d.alloc::<f32>(rows * out_f)? };
        let mut beta = 0.0;
        if let Some((buf, off, stride)) = &bias {
            write_bias(d, buf, *off, *stride, rows, out_f, &mut out)?;
            beta = 1.0;
        }
        accumulate_forward(d, x, x_off, [in_f, 1], rows, w, &mut out, beta)?;
        Ok(out)
    })?;
    Ok(Tensor::from_gpu(out, ordinal, shape, None))
}

/// `g [..., out]·dequant(W) → [..., in]` on GPU `ordinal`, tile by tile over the output features;
/// under autocast (`cast`) both rounded to bf16 and multiplied on the tensor cores.
pub(crate) fn input_grad(
    ordinal: u32,
    g: &Tensor,
    w: &dyn PackedMatrix,
    x_shape: &[usize],
    cast: Option<crate::DType>,
) -> Result<Tensor> {
    check_on(OP, w, ordinal)?;
    let [out_f, in_f] = w.shape();
    let gc = match cast {
        Some(dt) => crate::autocast::round_operand(g, dt)?,
        None => g.contiguous()?,
    };
    let rows = gc.numel() / out_f.max(1);
    let (gbuf, g_off) = (gc.gpu_buf(OP)?, gc.layout().offset());
    let gop = Operand::of(OP, &gbuf)?;
    let gx = with_device(OP, ordinal, |d| {
        if rows == 0 || out_f == 0 || in_f == 0 {
            return d.zeros::<f32>(rows * in_f);
        }
        let mut gx = d.alloc::<f32>(rows * in_f)?;
        let t = tile_rows(out_f, in_f);
        let mut tile = Tile::new(d, t * in_f, matches!(gop, Operand::BF16(_)))?;
        for r0 in (0..out_f).step_by(t) {
            let r1 = (r0 + t).min(out_f);
            let wt = tile.dequantize(d, w, r0..r1)?;
            // gx (+)= g[:, r0..r1]·W[r0..r1, :]
            let beta = if r0 == 0 { 0.0 } else { 1.0 };
            let shape = gemm(rows, in_f, r1 - r0, [out_f, 1], [in_f, 1], in_f, beta);
            gemm_at(d, gop, g_off + r0, wt, 0, &mut gx, 0, &shape)?;
        }
        Ok(gx)
    })?;
    Ok(Tensor::from_gpu(gx, ordinal, x_shape, None))
}
