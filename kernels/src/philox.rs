//! Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
//! the counter-based generator of `kernels/cu/dropout.cu`, on the CPU: the GPU dropout mask is
//! `keep(i) = philox([ (i/4 + offset) as lo, hi, 0, 0 ], seed)[i % 4] >= p * 2^32`, reproducible here.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Ten rounds of Philox4x32 on counter `c` with key `k`.
pub fn philox4x32_10(mut c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let (mut k0, mut k1) = (k[0], k[1]);
    for _ in 0..10 {
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0];
        k0 = k0.wrapping_add(W0);
        k1 = k1.wrapping_add(W1);
    }
    c
}

/// The dropout kernel's keep decision for element `i` (p in [0, 1)).
pub fn dropout_keep(i: u64, p: f32, seed: u64, offset: u64) -> bool {
    let ctr = i / 4 + offset;
    let words = philox4x32_10([ctr as u32, (ctr >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32]);
    let threshold = (f64::from(p) * 4294967296.0) as u32;
    words[(i % 4) as usize] >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known-answer vectors published with Random123 (kat_vectors, philox4x32 10 rounds).
    #[test]
    fn matches_the_random123_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn dropout_keeps_about_one_minus_p() {
        let n = 40_000;
        let kept = (0..n).filter(|&i| dropout_keep(i, 0.25, 1234, 7)).count() as f64 / n as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept fraction {kept}");
    }
}
