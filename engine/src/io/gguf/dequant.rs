//! ggml tensor types and their block dequantization, following the block layouts of llama.cpp's
//! `ggml-common.h` / `ggml-quants.c` (all little-endian; `d`, `m`, `dmin` are f16):
//!
//! | type | elements / bytes per block | layout → element value |
//! |---|---|---|
//! | Q4_0 | 32 / 18 | d, 16 nibble bytes: x[j] = d·((q[j] & 15) − 8), x[j+16] = d·((q[j] >> 4) − 8) |
//! | Q4_1 | 32 / 20 | d, m, 16 nibble bytes: x[j] = d·(q[j] & 15) + m, x[j+16] = d·(q[j] >> 4) + m |
//! | Q8_0 | 32 / 34 | d, 32 × i8: x[j] = d·q[j] |
//! | Q4_K | 256 / 144 | d, dmin, 12 bytes of 6-bit (scale, min) pairs, 128 nibble bytes |
//! | Q5_K | 256 / 176 | d, dmin, 12 scale bytes, 32 bytes of fifth bits, 128 nibble bytes |
//! | Q6_K | 256 / 210 | 128 low-nibble bytes, 64 bytes of 2-bit highs, 16 × i8 scales, d |
use crate::error::{Error, Result};
use half::{bf16, f16};
use rayon::prelude::*;

/// A ggml tensor type id as a GGUF file stores it (`ggml_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const BF16: GgmlType = GgmlType(30);

    /// ggml's name of the type (also of the ones that are not supported here), `None` for ids
    /// ggml does not define.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 40] = [
            "F32", "F16", "Q4_0", "Q4_1", "", "", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
            "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16",
            "I32", "I64", "F64", "IQ1_M", "BF16", "", "", "", "TQ1_0", "TQ2_0", "", "", "", "MXFP4",
        ];
        NAMES.get(self.0 as usize).copied().filter(|n| !n.is_empty())
    }

    /// The name for messages: ggml's, or `unknown type id N`.
    pub fn describe(self) -> String {
        match self.name() {
            Some(n) => n.to_string(),
            None => format!("unknown type id {}", self.0),
        }
    }

    /// `(elements, bytes)` of one block for the types this reader dequantizes; `None` for the others.
    pub fn block(self) -> Option<(usize, usize)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
            _ => return None,
        })
    }

    /// The names of the supported types, for error messages.
    pub const SUPPORTED: &'static str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K";
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for j in 0..16 {
        y[j] = d * ((b[2 + j] & 15) as i32 - 8) as f32;
        y[j + 16] = d * ((b[2 + j] >> 4) as i32 - 8) as f32;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for j in 0..16 {
        y[j] = d * (b[4 + j] & 15) as f32 + m;
        y[j + 16] = d * (b[4 + j] >> 4) as f32 + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for j in 0..32 {
        y[j] = d * (b[2 + j] as i8) as f32;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) packed in the 12 scale bytes of Q4_K / Q5_K:
/// sub-blocks 0..4 keep theirs in the low 6 bits of bytes j and j+4; 4..8 in the nibbles of byte
/// j+4 with their top two bits in the high bits of bytes j−4 (scale) and j (min).
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    };
    (sc as f32, m as f32)
}

/// Q4_K and Q5_K share their layout but for the fifth bits (`qh`, absent in Q4_K): 4 groups of
/// 64 elements, each the low then the high nibbles of 32 bytes, with its own two (scale, min).
fn k_quant_4_5(b: &[u8], y: &mut [f32], fifth_bits: bool) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let (qh, qs) = if fifth_bits { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
    for g in 0..4 {
        let (s1, m1) = scale_min_k4(2 * g, scales);
        let (s2, m2) = scale_min_k4(2 * g + 1, scales);
        let q = &qs[32 * g..32 * g + 32];
        for l in 0..32 {
            let (mut lo, mut hi) = ((q[l] & 15) as f32, (q[l] >> 4) as f32);
            if fifth_bits {
                lo += if qh[l] & (1 << (2 * g)) != 0 { 16.0 } else { 0.0 };
                hi += if qh[l] & (2 << (2 * g)) != 0 { 16.0 } else { 0.0 };
            }
            y[64 * g + l] = d * s1 * lo - dmin * m1;
            y[64 * g + 32 + l] = d * s2 * hi - dmin * m2;
        }
    }
}

/// Q6_K: two halves of 128 elements. Element l + 32·k of a half (l < 32, k < 4) takes its low 4
/// bits from byte l + 32·(k & 1) of `ql` (low nibble for k < 2, high for k ≥ 2) and its top 2 bits
/// from bits 2k, 2k+1 of `qh[l]`; its value is d · scales[l/16 + 2k] · (q − 32).
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let lows = [ql[l] & 15, ql[l + 32] & 15, ql[l] >> 4, ql[l + 32] >> 4];
            for (k, low) in lows.into_iter().enumerate() {
                let q = (low | (((qh[l] >> (2 * k)) & 3) << 4)) as i32 - 32;
                out[l + 32 * k] = d * (sc[l / 16 + 2 * k] as i8) as f32 * q as f32;
            }
        }
    }
}

/// The block kernel of a supported type: decodes one block's bytes into its elements.
type BlockKernel = fn(&[u8], &mut [f32]);

fn kernel(ty: GgmlType) -> Option<BlockKernel> {
    Some(match ty {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = half_at(b, 0),
        GgmlType::BF16 => |b, y| y[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_K => |b, y| k_quant_4_5(b, y, false),
        GgmlType::Q5_K => |b, y| k_quant_4_5(b, y, true),
        GgmlType::Q6_K => q6_k,
        _ => return None,
    })
}

/// Checks that `bytes` hold exactly the blocks of `numel` elements of `ty`; returns the block
/// size, its byte count and kernel. `what` names the tensor in errors.
fn blocks_of(ty: GgmlType, bytes: usize, numel: usize, what: &str) -> Result<(usize, usize, BlockKernel)> {
    let (Some((per_block, block_bytes)), Some(kernel)) = (ty.block(), kernel(ty)) else {
        return Err(Error::invalid(
            "gguf",
            format!("{what} has type {}, which is not supported (supported: {})", ty.describe(), GgmlType::SUPPORTED),
        ));
    };
    if !numel.is_multiple_of(per_block) || bytes != numel / per_block * block_bytes {
        return Err(Error::invalid(
            "gguf",
            format!(
                "{what}: {numel} elements of {} need {} bytes in blocks of {per_block}, got {bytes}",
                ty.describe(),
                numel.div_ceil(per_block) * block_bytes,
            ),
        ));
    }
    Ok((per_block, block_bytes, kernel))
}

/// Dequantizes `bytes` (whole blocks of `ty`) into `out`, on the calling thread.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32], what: &str) -> Result<()> {
    let (per_block, block_bytes, kernel) = blocks_of(ty, bytes.len(), out.len(), what)?;
    for (y, b) in out.chunks_exact_mut(per_block).zip(bytes.chunks_exact(block_bytes)) {
        kernel(b, y);
    }
    Ok(())
}

/// Dequantizes `numel` elements of type `ty` from `bytes` (exactly the blocks holding them), in
/// parallel. `what` names the tensor in errors.
pub fn dequantize(ty: GgmlType, bytes: &[u8], numel: usize, what: &str) -> Result<Vec<f32>> {
    let (per_block, block_bytes, kernel) = blocks_of(ty, bytes.len(), numel, what)?;
    let mut out = vec![0f32; numel];
    // Chunks of many blocks per task: one block is too little work to schedule.
    let blocks_per_task = (16384 / per_block).max(1);
    out.par_chunks_mut(per_block * blocks_per_task).zip(bytes.par_chunks(block_bytes * blocks_per_task)).for_each(
        |(y, b)| {
            for (yb, bb) in y.chunks_exact_mut(per_block).zip(b.chunks_exact(block_bytes)) {
                kernel(bb, yb);
            }
        },
    );
    Ok(out)
}
