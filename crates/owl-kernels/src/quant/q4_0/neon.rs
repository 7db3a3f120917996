//! Q4_0 with NEON: the Q4_0·Q8_0 dot product.
//!
//! `vec_dot(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32` has the contract of the scalar
//! [`super::vec_dot`] and equals it up to float reassociation of the per-block scaling: the
//! integer block sums are exact, the f32 scaling and accumulation run per lane in two
//! accumulators (tests: ≤ 2e-6 · Σ|w·a|).
//!
//! Recipe (after ggml `ggml-cpu/arch/arm/quants.c`, `ggml_vec_dot_q4_0_q8_0`): the 16 bytes of
//! a block split into low nibbles (elements 0..16) and high nibbles (16..32) with and/shift,
//! the offset 8 subtracted in signed bytes, then signed byte products widened with
//! `vmull_s8` and accumulated into i32 lanes; two blocks per iteration, each scaled by
//! `d_w·d_a` with one FMA.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

use super::BlockQ4_0;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::simd_neon::{dot_i8x32, halves_i8x32, nibbles, sub_offset, sum_scaled_blocks};

/// Σ w·a over a row; see the module header.
pub fn vec_dot(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    sum_scaled_blocks(w, a, |x, y| {
        let (lo, hi) = nibbles(&x.qs);
        (dot_i8x32((sub_offset(lo, 8), sub_offset(hi, 8)), halves_i8x32(&y.qs)), x.d() * y.d())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::simd_neon::testing::{no_min, run, Case};
    use crate::quant::BlockFormat;

    #[test]
    fn matches_scalar_reference() {
        let r = run(&Case {
            format: BlockFormat::Q4_0,
            scalar: super::super::vec_dot,
            neon: vec_dot,
            min_magnitude: no_min,
            bit_exact: false,
        });
        assert!(r.pairs > 0);
    }
}
