//! Q4_K with NEON: the Q4_K·Q8_K dot product.
//!
//! `vec_dot(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32` has the contract of the scalar
//! [`super::vec_dot`] and is **bit-identical** to it: each super-block is reduced to the same
//! two integers (`Σ sc·(q·q8)` and `Σ m·bsum`, exact), then the scalar code's float
//! expression is evaluated in its order.
//!
//! Recipe (after ggml `ggml-cpu/arch/arm/quants.c`, `ggml_vec_dot_q4_K_q8_K`): the 6-bit scales
//! and mins unpacked with 32-bit masks; the min term from the activations' `bsums` (pairs
//! summed, one widening multiply by the mins); per 64 elements one 32-byte load split into low
//! nibbles (sub-block 2j) and high nibbles (2j+1), products widened with `vmull_s8` into i32
//! lanes, each sub-block's lanes times its scale accumulated in i32 (`vmlaq_n_s32`), one
//! horizontal add per super-block.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

#![allow(unused_unsafe)]

use std::arch::aarch64::*;

use super::BlockQ4K;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::simd_neon::{as_i8, dot_i8x32, k4_scales_mins, load_i8x16_at, load_u8x16_at, mins_dot_bsums};

/// `Σ_sub-blocks sc·(q·q8)` of one super-block, exact.
#[inline(always)]
fn scaled_sum(x: &BlockQ4K, y: &BlockQ8K, sc: &[u8; 8]) -> i32 {
    // SAFETY: register-only intrinsics; NEON is always present on AArch64 (`simd_neon`).
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let (mut acc0, mut acc1) = (vdupq_n_s32(0), vdupq_n_s32(0));
        for j in 0..4 {
            // Bytes 32j..32j+32: low nibbles are elements 64j..64j+32, high nibbles the next 32.
            let (b0, b1) = (load_u8x16_at(&x.qs, 32 * j), load_u8x16_at(&x.qs, 32 * j + 16));
            let lo = (as_i8(vandq_u8(b0, m4)), as_i8(vandq_u8(b1, m4)));
            let hi = (as_i8(vshrq_n_u8::<4>(b0)), as_i8(vshrq_n_u8::<4>(b1)));
            let y_lo = (load_i8x16_at(&y.qs, 64 * j), load_i8x16_at(&y.qs, 64 * j + 16));
            let y_hi = (load_i8x16_at(&y.qs, 64 * j + 32), load_i8x16_at(&y.qs, 64 * j + 48));
            acc0 = vmlaq_n_s32(acc0, dot_i8x32(lo, y_lo), sc[2 * j] as i32);
            acc1 = vmlaq_n_s32(acc1, dot_i8x32(hi, y_hi), sc[2 * j + 1] as i32);
        }
        vaddvq_s32(vaddq_s32(acc0, acc1))
    }
}

/// Σ w·a over a row; see the module header.
pub fn vec_dot(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (sc, m) = k4_scales_mins(&x.scales);
        let summs = mins_dot_bsums(&m, &y.bsums);
        let isum = scaled_sum(x, y, &sc);
        // The scalar code's expression, operation for operation (bit-identical result).
        sum += (x.d() * y.d) * isum as f32 - (x.dmin() * y.d) * summs as f32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::simd_neon::testing::{no_min, run, Case};
    use crate::quant::BlockFormat;

    #[test]
    fn matches_scalar_reference_bit_for_bit() {
        let r = run(&Case {
            format: BlockFormat::Q4_K,
            scalar: super::super::vec_dot,
            neon: vec_dot,
            min_magnitude: no_min,
            bit_exact: true,
        });
        assert!(r.pairs > 0);
    }
}
