//! bitsandbytes' 4-bit block quantization (`quantize_4bit` / `dequantize_4bit`), byte for byte.
//!
//! The flattened row-major matrix is cut into blocks of `blocksize` values (the last one may be
//! shorter and gets its own absmax). Each value is divided by its block's absmax and replaced by the
//! nearest of 16 levels (NF4 or FP4); two codes share a byte, the first in the high nibble. With
//! double quantization the f32 absmaxes are themselves stored as 8-bit codes: their mean (the
//! offset) is subtracted and the rest quantized with the dynamic 8-bit code in blocks of 256.
use super::codes::{dynamic_map, fp4, FP4_ASCENDING, NF4};
use super::{check_rows, PackedMatrix};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::ops::Range;

/// The 4-bit data type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    Nf4,
    Fp4,
}

impl QuantType {
    pub fn parse(s: &str) -> Result<QuantType> {
        match s {
            "nf4" => Ok(QuantType::Nf4),
            "fp4" => Ok(QuantType::Fp4),
            other => Err(Error::invalid("bnb_4bit_quant_type", format!("`{other}` is not one of nf4, fp4"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
        }
    }
    /// The 16 levels in nibble order.
    pub fn code(self) -> [f32; 16] {
        match self {
            QuantType::Nf4 => NF4,
            QuantType::Fp4 => fp4(),
        }
    }
}

/// Block sizes bitsandbytes accepts.
pub const BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
/// Block size of the double quantization of the absmaxes.
pub const NESTED_BLOCKSIZE: usize = 256;

/// The per-block scales.
#[derive(Clone, Debug, PartialEq)]
pub enum Absmax {
    /// One f32 per block.
    Plain(Vec<f32>),
    /// Double quantization: `absmax[b] = nested_code[codes[b]] · nested_absmax[b / nested_blocksize] + offset`.
    Double { codes: Vec<u8>, nested_absmax: Vec<f32>, nested_code: Vec<f32>, nested_blocksize: usize, offset: f32 },
}

impl Absmax {
    pub fn blocks(&self) -> usize {
        match self {
            Absmax::Plain(v) => v.len(),
            Absmax::Double { codes, .. } => codes.len(),
        }
    }

    /// The f32 absmax of block `b` (computed as bitsandbytes computes it: code·scale, then + offset).
    #[inline]
    pub fn get(&self, b: usize) -> f32 {
        match self {
            Absmax::Plain(v) => v[b],
            Absmax::Double { codes, nested_absmax, nested_code, nested_blocksize, offset } => {
                nested_code[codes[b] as usize] * nested_absmax[b / nested_blocksize] + offset
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Absmax::Plain(v) => 4 * v.len(),
            // The nested code book is shared by every matrix (one constant) and not counted.
            Absmax::Double { codes, nested_absmax, .. } => codes.len() + 4 * nested_absmax.len() + 4,
        }
    }
}

/// A matrix in bitsandbytes' 4-bit layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Bnb4bit {
    pub shape: [usize; 2],
    pub quant_type: QuantType,
    pub blocksize: usize,
    /// `ceil(n / 2)` bytes, element `2i` in the high nibble of byte `i`.
    pub packed: Vec<u8>,
    pub absmax: Absmax,
    /// The 16 levels (from the file when read from a checkpoint, else the built-in table).
    pub code: [f32; 16],
    /// The levels dequantization multiplies: `code`, except that bitsandbytes' FP4 decoder gives
    /// nibble 8 (sign bit set, zero magnitude) as -0 where the stored code book says +0.
    levels: [f32; 16],
    name: String,
}

impl Bnb4bit {
    /// Assembles a matrix from its parts, checking that they fit together.
    pub fn from_parts(
        shape: [usize; 2],
        quant_type: QuantType,
        blocksize: usize,
        packed: Vec<u8>,
        absmax: Absmax,
        code: [f32; 16],
    ) -> Result<Bnb4bit> {
        const OP: &str = "Bnb4bit";
        if blocksize == 0 {
            return Err(Error::invalid(OP, "blocksize must be positive"));
        }
        let n = shape[0] * shape[1];
        if packed.len() != n.div_ceil(2) {
            return Err(Error::shape(
                OP,
                format!("{} packed bytes for a {shape:?} matrix, need {}", packed.len(), n.div_ceil(2)),
            ));
        }
        let blocks = n.div_ceil(blocksize);
        if absmax.blocks() != blocks {
            return Err(Error::shape(
                OP,
                format!("{} absmax values for {blocks} blocks of {blocksize} in a {shape:?} matrix", absmax.blocks()),
            ));
        }
        if let Absmax::Double { nested_absmax, nested_code, nested_blocksize, .. } = &absmax {
            if *nested_blocksize == 0
                || nested_absmax.len() != blocks.div_ceil(*nested_blocksize)
                || nested_code.len() != 256
            {
                return Err(Error::shape(
                    OP,
                    format!(
                        "double quantization state does not fit {blocks} blocks: {} nested absmax (block {nested_blocksize}), {} code entries",
                        nested_absmax.len(),
                        nested_code.len()
                    ),
                ));
            }
        }
        let dq = if matches!(absmax, Absmax::Double { .. }) { "+dq" } else { "" };
        let name = format!("{}{dq}/{blocksize}", quant_type.name());
        let mut levels = code;
        if quant_type == QuantType::Fp4 && levels[8] == 0.0 {
            levels[8] = -0.0;
        }
        Ok(Bnb4bit { shape, quant_type, blocksize, packed, absmax, code, levels, name })
    }

    /// `quantize_4bit(w, blocksize, quant_type, compress_statistics = double_quant)` of a row-major
    /// `[rows, cols]` f32 matrix.
    pub fn quantize(
        data: &[f32],
        shape: [usize; 2],
        quant_type: QuantType,
        blocksize: usize,
        double_quant: bool,
    ) -> Result<Bnb4bit> {
        const OP: &str = "quantize_4bit";
        if !BLOCKSIZES.contains(&blocksize) {
            return Err(Error::invalid(OP, format!("blocksize {blocksize} is not one of {BLOCKSIZES:?}")));
        }
        let n = shape[0] * shape[1];
        if data.len() != n || n == 0 {
            return Err(Error::shape(OP, format!("{} values for a {shape:?} matrix (must be non-empty)", data.len())));
        }
        let code = quant_type.code();
        let (packed, absmax) = quantize_4bit(data, blocksize, quant_type);
        let absmax = if double_quant { double_quantize(&absmax) } else { Absmax::Plain(absmax) };
        Bnb4bit::from_parts(shape, quant_type, blocksize, packed, absmax, code)
    }

    pub fn numel(&self) -> usize {
        self.shape[0] * self.shape[1]
    }

    /// The 16 values the codes stand for, as dequantization multiplies them (`code`, with FP4's
    /// nibble 8 as -0).
    pub fn levels(&self) -> [f32; 16] {
        self.levels
    }

    pub fn double_quant(&self) -> bool {
        matches!(self.absmax, Absmax::Double { .. })
    }

    /// Dequantizes the flat elements `start..start + out.len()`.
    fn dequantize_flat(&self, start: usize, out: &mut [f32]) {
        let bs = self.blocksize;
        let mut i = start;
        let end = start + out.len();
        while i < end {
            let b = i / bs;
            let seg_end = ((b + 1) * bs).min(end);
            let scale = self.absmax.get(b);
            let lut: [f32; 16] = self.levels.map(|c| c * scale);
            let dst = &mut out[i - start..seg_end - start];
            let mut j = i;
            let mut k = 0;
            if j % 2 == 1 {
                dst[0] = lut[(self.packed[j / 2] & 0x0f) as usize];
                j += 1;
                k = 1;
            }
            let pairs = (seg_end - j) / 2;
            for (d, &byte) in dst[k..k + 2 * pairs].chunks_exact_mut(2).zip(&self.packed[j / 2..j / 2 + pairs]) {
                d[0] = lut[(byte >> 4) as usize];
                d[1] = lut[(byte & 0x0f) as usize];
            }
            j += 2 * pairs;
            if j < seg_end {
                dst[j - i] = lut[(self.packed[j / 2] >> 4) as usize];
            }
            i = seg_end;
        }
    }
}

impl PackedMatrix for Bnb4bit {
    fn shape(&self) -> [usize; 2] {
        self.shape
    }

    fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
        check_rows("Bnb4bit::dequantize_rows", self.shape, &rows, out.len())?;
        let cols = self.shape[1];
        // Chunks of whole rows, large enough to amortize a task, run in parallel.
        let chunk_rows = (16384 / cols.max(1)).max(1);
        out.par_chunks_mut(chunk_rows * cols).enumerate().for_each(|(c, dst)| {
            self.dequantize_flat((rows.start + c * chunk_rows) * cols, dst);
        });
        Ok(())
    }

    fn stored_bytes(&self) -> usize {
        self.packed.len() + self.absmax.bytes()
    }

    fn type_name(&self) -> &str {
        &self.name
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The 4-bit codes and f32 absmax of every block (bitsandbytes' default `quantize_4bit` kernel):
/// full blocks are scaled by `x · (1 / absmax)`, the trailing partial block by `x / absmax`; the
/// scaled value goes to the first level whose midpoint with the next level is >= it.
fn quantize_4bit(data: &[f32], blocksize: usize, quant_type: QuantType) -> (Vec<u8>, Vec<f32>) {
    let code = quant_type.code();
    // Levels in ascending order and the nibble stored for each position.
    let (sorted, nibble): ([f32; 16], [u8; 16]) = match quant_type {
        QuantType::Nf4 => (code, std::array::from_fn(|i| i as u8)),
        QuantType::Fp4 => (FP4_ASCENDING.map(|i| code[i as usize]), FP4_ASCENDING),
    };
    let bounds: [f32; 15] = std::array::from_fn(|i| (sorted[i] + sorted[i + 1]) / 2.0);
    let bucket = |x: f32| -> u8 { nibble[bounds.iter().take_while(|&&b| b < x).count()] };
    let n = data.len();
    let full = n - n % blocksize;
    let mut absmax: Vec<f32> = data.chunks(blocksize).map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs()))).collect();
    let mut codes: Vec<u8> = Vec::with_capacity(n + 1);
    for (b, chunk) in data.chunks(blocksize).enumerate() {
        if b * blocksize < full {
            let inv = 1.0 / absmax[b].max(1e-38);
            codes.extend(chunk.iter().map(|&v| bucket((v * inv).clamp(-1.0, 1.0))));
        } else {
            let am = absmax[b].max(1e-38);
            absmax[b] = am;
            codes.extend(chunk.iter().map(|&v| bucket((v / am).clamp(-1.0, 1.0))));
        }
    }
    if n % 2 == 1 {
        codes.push(bucket(0.0));
    }
    let packed = codes.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect();
    (packed, absmax)
}

/// The mean of the block absmaxes, the offset of double quantization, as PyTorch's f32 `mean`
/// computes it: its sum (see [`torch_sum_f32`]) divided by the count in f32.
pub fn absmax_offset(absmax: &[f32]) -> f32 {
    torch_sum_f32(absmax) / absmax.len() as f32
}

/// PyTorch's f32 sum of a contiguous vector as its CPU kernel (`cascade_sum`) adds in one thread:
/// whole 8-lane vectors go to four interleaved vector accumulators that cascade every 16 steps
/// through four levels, the accumulators are folded, the leftover elements summed, and the 8 lanes
/// added to them in order; fewer than 8 values use four interleaved scalars the same way. (8 lanes
/// also on an AVX-512 machine: bit-identical to torch 2.15's sums and means on 1 to 32,767 values.) PyTorch splits sums of 32,768 or more elements across threads, which this does not model: a
/// matrix of more than 2M weights at block size 64 may get an offset one ulp away from bitsandbytes'.
pub fn torch_sum_f32(v: &[f32]) -> f32 {
    const LANES: usize = 8;
    if v.len() < LANES {
        let sums = four_way_sum::<1>(v.len(), |i| [v[i]]);
        return sums[0];
    }
    let vectors = v.len() / LANES;
    let lanes = four_way_sum::<LANES>(vectors, |i| std::array::from_fn(|l| v[i * LANES + l]));
    let mut total = 0f32;
    for &x in &v[vectors * LANES..] {
        total += x;
    }
    for l in lanes {
        total += l;
    }
    total
}

/// PyTorch's `row_sum` with four interleaved accumulators (`multi_row_sum` + the fold) over `n`
/// items of `W` lanes each.
fn four_way_sum<const W: usize>(n: usize, item: impl Fn(usize) -> [f32; W]) -> [f32; W] {
    const LEVELS: usize = 4;
    let add = |a: &mut [f32; W], b: &[f32; W]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    let rows = n / 4;
    // level_power = max(4, ceil_log2(rows) / 4)
    let ceil_log2 = if rows <= 2 { 1 } else { usize::BITS as usize - (rows - 1).leading_zeros() as usize };
    let power = (ceil_log2 / LEVELS).max(4);
    let step = 1usize << power;
    let mut acc = [[[0f32; W]; 4]; LEVELS];
    let mut i = 0;
    while i + step <= rows {
        for _ in 0..step {
            for k in 0..4 {
                add(&mut acc[0][k], &item(i * 4 + k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            for k in 0..4 {
                let lower = acc[j - 1][k];
                add(&mut acc[j][k], &lower);
                acc[j - 1][k] = [0.0; W];
            }
            if i & ((step - 1) << (j * power)) != 0 {
                break;
            }
        }
    }
    for r in i..rows {
        for k in 0..4 {
            add(&mut acc[0][k], &item(r * 4 + k));
        }
    }
    for j in 1..LEVELS {
        for k in 0..4 {
            let upper = acc[j][k];
            add(&mut acc[0][k], &upper);
        }
    }
    let mut sums = acc[0];
    for r in rows * 4..n {
        add(&mut sums[0], &item(r));
    }
    let mut out = sums[0];
    for s in &sums[1..] {
        add(&mut out, s);
    }
    out
}

/// Double quantization of f32 absmaxes (bitsandbytes' `quantize_blockwise` of `absmax - mean`
/// with the dynamic code, blocks of 256, CPU kernel semantics).
pub fn double_quantize(absmax: &[f32]) -> Absmax {
    double_quantize_with_offset(absmax, absmax_offset(absmax))
}

/// [`double_quantize`] with a given offset.
pub fn double_quantize_with_offset(absmax: &[f32], offset: f32) -> Absmax {
    let code = dynamic_map();
    let centered: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let (codes, nested_absmax) = quantize_blockwise_8bit(&centered, &code, NESTED_BLOCKSIZE);
    Absmax::Double { codes, nested_absmax, nested_code: code.to_vec(), nested_blocksize: NESTED_BLOCKSIZE, offset }
}

/// Cells of the lookup table through which bitsandbytes' CPU kernel finds the 8-bit code of a
/// normalized value in [-1, 1]: the value is first rounded to one of 65536 evenly spaced points
/// (`floor((x + 1) · 32767.5 + 0.5)`, in f32), and the point's nearest code is stored. So a value
/// within half a cell (1.5e-5) of the midpoint between two codes may get the farther one; we do the
/// same to produce the same bytes (checked against its output on 700k values and the fixtures).
const LUT_CELLS: usize = 65536;
const LUT_HALF: f32 = 32767.5;

fn lut_cell(x: f32) -> usize {
    let c = ((x + 1.0) * LUT_HALF + 0.5).floor();
    if c.is_nan() {
        return LUT_CELLS / 2;
    }
    (c.max(0.0) as usize).min(LUT_CELLS - 1)
}

/// Nearest entry of the ascending `code` to `x`, ties to the lower index.
fn nearest_code(code: &[f32; 256], x: f32) -> u8 {
    let mut idx = code.partition_point(|&c| c <= x).saturating_sub(1);
    if idx < 255 && (x - code[idx + 1]).abs() < (x - code[idx]).abs() {
        idx += 1;
    }
    idx as u8
}

/// 8-bit blockwise quantization (bitsandbytes' CPU `quantize_blockwise`): per block the absmax,
/// each value divided by it, then the code of its lookup-table cell (see [`LUT_HALF`]).
pub fn quantize_blockwise_8bit(data: &[f32], code: &[f32; 256], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let lut: Vec<u8> = (0..LUT_CELLS).map(|c| nearest_code(code, c as f32 / LUT_HALF - 1.0)).collect();
    let mut codes = Vec::with_capacity(data.len());
    let mut absmax = Vec::with_capacity(data.len().div_ceil(blocksize));
    for chunk in data.chunks(blocksize) {
        let am = chunk.iter().fold(f32::MIN, |m, v| m.max(v.abs()));
        absmax.push(am);
        codes.extend(chunk.iter().map(|&v| lut[lut_cell(v / am)]));
    }
    (codes, absmax)
}
