//! Q8_0 with NEON: the Q8_0·Q8_0 dot product.
//!
//! `vec_dot(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32` has the contract of the scalar
//! [`super::vec_dot`] and equals it up to float reassociation of the per-block scaling: the
//! integer block sums are exact, the f32 scaling and accumulation run per lane in two
//! accumulators (tests: ≤ 2e-6 · Σ|w·a|).
//!
//! Recipe (after ggml `ggml-cpu/arch/arm/quants.c`, `ggml_vec_dot_q8_0_q8_0`): two blocks per
//! iteration, each as two 16-byte halves multiplied with `vmull_s8` and accumulated into i32
//! lanes (`simd_neon::dot_i8x16`), converted and scaled by `d_w·d_a` with one FMA.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

use super::BlockQ8_0;
use crate::quant::simd_neon::{dot_i8x32, halves_i8x32, sum_scaled_blocks};

/// Σ w·a over a row; see the module header.
pub fn vec_dot(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    sum_scaled_blocks(w, a, |x, y| (dot_i8x32(halves_i8x32(&x.qs), halves_i8x32(&y.qs)), x.d() * y.d()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::simd_neon::testing::{no_min, run, Case};
    use crate::quant::BlockFormat;

    #[test]
    fn matches_scalar_reference() {
        let r = run(&Case {
            format: BlockFormat::Q8_0,
            scalar: super::super::vec_dot,
            neon: vec_dot,
            min_magnitude: no_min,
            bit_exact: false,
        });
        assert!(r.pairs > 0);
    }
}
