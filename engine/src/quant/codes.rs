//! The code books of bitsandbytes' 4-bit and 8-bit block quantization, as f32 values.

/// NF4 (NormalFloat4, QLoRA): the 16 levels, equal-mass quantiles of N(0, 1) scaled to [-1, 1],
/// in nibble order (which is also ascending order).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// FP4 as bitsandbytes defines it (1 sign bit, 2 exponent bits with bias 2, 1 mantissa bit),
/// normalized by its largest magnitude (12), in nibble order. Nibble 8 would be -0; bitsandbytes
/// writes it as the integer `-0`, so both zeros are +0.
pub fn fp4() -> [f32; 16] {
    const RAW: [f32; 16] =
        [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, 0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0];
    RAW.map(|v| v / 12.0)
}

/// FP4 nibbles in ascending order of their value, the tie (nibbles 0 and 8) in the order bitsandbytes'
/// `torch.argsort` puts them: quantization picks a position in this order, then stores its nibble.
pub const FP4_ASCENDING: [u8; 16] = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3];

/// `torch.linspace(start, end, steps)` in f32, computed as PyTorch's CPU kernel does (from the
/// start for the first half, from the end for the second, each a fused multiply-add), so the values
/// agree to the bit.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| if i < half { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - 1 - i) as f32, end) })
        .collect()
}

/// bitsandbytes' signed 8-bit "dynamic" code (`create_dynamic_map()`: 7 exponent bits, the
/// fraction shrinking as the exponent grows), ascending, as stored with double-quantized weights.
/// (Its CPU quantizer searches a copy whose first entry is -1; see `quantize_blockwise_8bit`.)
pub fn dynamic_map() -> [f32; 256] {
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..7i32 {
        let b = linspace_f32(0.1, 1.0, (1usize << i) + 1);
        let scale = 10f64.powi(i - 6) as f32;
        let means: Vec<f32> = b.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        data.extend(means.iter().map(|m| scale * m));
        data.extend(means.iter().map(|m| -scale * m));
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(f32::total_cmp);
    let mut code = [0f32; 256];
    code.copy_from_slice(&data);
    code
}
