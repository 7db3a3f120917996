//! Q5_0 with NEON: the Q5_0·Q8_0 dot product.
//!
//! `vec_dot(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32` has the contract of the scalar
//! [`super::vec_dot`] and equals it up to float reassociation of the per-block scaling: the
//! integer block sums are exact, the f32 scaling and accumulation run per lane in two
//! accumulators (tests: ≤ 2e-6 · Σ|w·a|).
//!
//! Recipe (after ggml `ggml-cpu/arch/arm/quants.c`, `ggml_vec_dot_q5_0_q8_0`): nibbles as for
//! Q4_0; the fifth bits spread to bytes without ggml's 256-entry lookup table — each `qh`
//! byte broadcast over 8 lanes and tested against the lane's bit (`vtstq_u8`), giving 0x10
//! where the bit is set — or-ed in, the offset 16 subtracted in signed bytes; products
//! widened with `vmull_s8`, two blocks per iteration, one FMA each.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

#![allow(unused_unsafe)]

use std::arch::aarch64::*;

use super::BlockQ5_0;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::simd_neon::{dot_i8x32, halves_i8x32, load_u8x16, nibbles, sub_offset, sum_scaled_blocks};

/// Lane `l` tests bit `l % 8` of the byte broadcast into its half.
const LANE_BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/// The 5-bit quants of a block minus 16, as (elements 0..16, elements 16..32).
#[inline(always)]
fn quants(x: &BlockQ5_0) -> (int8x16_t, int8x16_t) {
    let (lo, hi) = nibbles(&x.qs);
    // SAFETY: register-only intrinsics; NEON is always present on AArch64 (`simd_neon`).
    unsafe {
        let bits = load_u8x16(&LANE_BITS);
        let bit4 = vdupq_n_u8(0x10);
        // Bit i of the little-endian qh word is byte i/8, bit i%8: lanes 0..8 take qh[0],
        // 8..16 qh[1] (elements 0..16); qh[2], qh[3] for elements 16..32.
        let h_lo = vcombine_u8(vdup_n_u8(x.qh[0]), vdup_n_u8(x.qh[1]));
        let h_hi = vcombine_u8(vdup_n_u8(x.qh[2]), vdup_n_u8(x.qh[3]));
        let q_lo = vorrq_u8(lo, vandq_u8(vtstq_u8(h_lo, bits), bit4));
        let q_hi = vorrq_u8(hi, vandq_u8(vtstq_u8(h_hi, bits), bit4));
        (sub_offset(q_lo, 16), sub_offset(q_hi, 16))
    }
}

/// Σ w·a over a row; see the module header.
pub fn vec_dot(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    sum_scaled_blocks(w, a, |x, y| (dot_i8x32(quants(x), halves_i8x32(&y.qs)), x.d() * y.d()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::simd_neon::testing::{no_min, run, Case};
    use crate::quant::BlockFormat;

    #[test]
    fn matches_scalar_reference() {
        let r = run(&Case {
            format: BlockFormat::Q5_0,
            scalar: super::super::vec_dot,
            neon: vec_dot,
            min_magnitude: no_min,
            bit_exact: false,
        });
        assert!(r.pairs > 0);
    }

    /// Every fifth bit on its own: the unpacked quants equal the scalar code's.
    #[test]
    fn fifth_bits_land_on_their_elements() {
        for bit in 0..32 {
            let x = BlockQ5_0 { d: [0, 0x3c], qh: (1u32 << bit).to_le_bytes(), qs: [0x5A; 16] };
            let (lo, hi) = quants(&x);
            let mut got = [0i8; 32];
            // SAFETY: stores 16 bytes into each half of `got`.
            unsafe {
                vst1q_s8(got.as_mut_ptr(), lo);
                vst1q_s8(got.as_mut_ptr().add(16), hi);
            }
            let mut want = [0f32; 32];
            super::super::dequantize(&[x], &mut want);
            for e in 0..32 {
                assert_eq!(got[e] as f32, want[e], "bit {bit}, element {e}");
            }
        }
    }
}
