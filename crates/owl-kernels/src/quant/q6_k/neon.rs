//! Q6_K with NEON: the Q6_K·Q8_K dot product.
//!
//! `vec_dot(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32` has the contract of the scalar
//! [`super::vec_dot`] and is **bit-identical** to it: each super-block is reduced to the same
//! integer `Σ sc·((q − 32)·q8)` (exact), then the scalar code's float expression is evaluated.
//!
//! Recipe (after ggml `ggml-cpu/arch/arm/quants.c`, `ggml_vec_dot_q6_K_q8_K`): per half
//! super-block (128 elements) 64 bytes of low nibbles and 32 bytes of high bits loaded once;
//! each group of 32 elements is a nibble of `ql` or-ed with two bits of `qh` moved to bits
//! 4..6 (shift and mask 0x30), the offset 32 subtracted in signed bytes; products widened
//! with `vmull_s8` into i32 lanes, each 16-element sub-block's lanes times its signed scale
//! accumulated in i32 (`vmlaq_n_s32`). ggml instead subtracts `32·Σ sc·bsum` once per
//! super-block; subtracting the offset per byte keeps the quants in -32..32 and needs no
//! `bsums`, with the same integer result.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

#![allow(unused_unsafe)]

use std::arch::aarch64::*;

use super::BlockQ6K;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::simd_neon::{dot_i8x16, load_i8x16_at, load_u8x16_at, sub_offset};

/// `Σ_sub-blocks sc·((q − 32)·q8)` of one super-block, exact.
#[inline(always)]
fn scaled_sum(x: &BlockQ6K, y: &BlockQ8K) -> i32 {
    // SAFETY: register-only intrinsics; NEON is always present on AArch64 (`simd_neon`).
    unsafe {
        let (m4, m2) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x30));
        let zero = vdupq_n_s32(0);
        let (mut acc0, mut acc1) = (zero, zero);
        for n in 0..2 {
            let ql: [uint8x16_t; 4] = std::array::from_fn(|k| load_u8x16_at(&x.ql, 64 * n + 16 * k));
            let qh = [load_u8x16_at(&x.qh, 32 * n), load_u8x16_at(&x.qh, 32 * n + 16)];
            let sc = &x.scales[8 * n..8 * n + 8];
            let q8 = &y.qs[128 * n..128 * n + 128];
            for k in 0..4 {
                // Elements 128n + 32k + l: nibble k/2 of ql[32(k%2) + l], bits 2k..2k+2 of qh[l].
                let (l0, l1) = (ql[2 * (k % 2)], ql[2 * (k % 2) + 1]);
                let (l0, l1) = if k < 2 {
                    (vandq_u8(l0, m4), vandq_u8(l1, m4))
                } else {
                    (vshrq_n_u8::<4>(l0), vshrq_n_u8::<4>(l1))
                };
                let high = |h: uint8x16_t| match k {
                    0 => vandq_u8(vshlq_n_u8::<4>(h), m2),
                    1 => vandq_u8(vshlq_n_u8::<2>(h), m2),
                    2 => vandq_u8(h, m2),
                    _ => vandq_u8(vshrq_n_u8::<2>(h), m2),
                };
                let q0 = sub_offset(vorrq_u8(l0, high(qh[0])), 32);
                let q1 = sub_offset(vorrq_u8(l1, high(qh[1])), 32);
                let p0 = dot_i8x16(zero, q0, load_i8x16_at(q8, 32 * k));
                let p1 = dot_i8x16(zero, q1, load_i8x16_at(q8, 32 * k + 16));
                acc0 = vmlaq_n_s32(acc0, p0, sc[2 * k] as i32);
                acc1 = vmlaq_n_s32(acc1, p1, sc[2 * k + 1] as i32);
            }
        }
        vaddvq_s32(vaddq_s32(acc0, acc1))
    }
}

/// Σ w·a over a row; see the module header.
pub fn vec_dot(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        // The scalar code's expression (bit-identical result).
        sum += (x.d() * y.d) * scaled_sum(x, y) as f32;
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
            format: BlockFormat::Q6_K,
            scalar: super::super::vec_dot,
            neon: vec_dot,
            min_magnitude: no_min,
            bit_exact: true,
        });
        assert!(r.pairs > 0);
    }
}
