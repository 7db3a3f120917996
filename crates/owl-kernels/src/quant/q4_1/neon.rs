//! Q4_1 with NEON: the Q4_1·Q8_1 dot product.
//!
//! `vec_dot(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32` has the contract of the scalar
//! [`super::vec_dot`] and equals it up to float reassociation: per block the exact integer
//! sum Σ q·q8 is scaled by `d_w·d_a` per lane in two accumulators, and the min term `m_w·s_a`
//! is summed apart, as ggml does (tests: ≤ 2e-6 · (Σ|w·a| + Σ|m·s|)).
//!
//! Recipe (after ggml `ggml-cpu/arch/arm/quants.c`, `ggml_vec_dot_q4_1_q8_1`): nibbles by
//! and/shift (no offset: the quants are 0..16), products widened with `vmull_s8` and
//! accumulated into i32 lanes; two blocks per iteration, one FMA each.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

#![allow(unused_unsafe)]

use std::arch::aarch64::*;

use super::BlockQ4_1;
use crate::quant::q8_1::BlockQ8_1;
use crate::quant::simd_neon::{as_i8, dot_i8x32, halves_i8x32, nibbles};

/// The exact integer sum Σ q·q8 of one block pair, in four i32 lanes.
#[inline(always)]
fn block_sum(x: &BlockQ4_1, y: &BlockQ8_1) -> int32x4_t {
    let (lo, hi) = nibbles(&x.qs);
    dot_i8x32((as_i8(lo), as_i8(hi)), halves_i8x32(&y.qs))
}

/// Σ w·a over a row; see the module header.
pub fn vec_dot(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let nb = w.len().min(a.len());
    let (w, a) = (&w[..nb], &a[..nb]);
    let mut mins = 0.0f32;
    // SAFETY: register-only intrinsics; NEON is always present on AArch64 (`simd_neon`).
    unsafe {
        let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let (wp, ap) = (w.chunks_exact(2), a.chunks_exact(2));
        let (wt, at) = (wp.remainder(), ap.remainder());
        for (x, y) in wp.zip(ap) {
            let (p0, p1) = (block_sum(&x[0], &y[0]), block_sum(&x[1], &y[1]));
            mins += x[0].m() * y[0].s() + x[1].m() * y[1].s();
            acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(p0), x[0].d() * y[0].d());
            acc1 = vfmaq_n_f32(acc1, vcvtq_f32_s32(p1), x[1].d() * y[1].d());
        }
        if let (Some(x), Some(y)) = (wt.first(), at.first()) {
            mins += x.m() * y.s();
            acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(block_sum(x, y)), x.d() * y.d());
        }
        vaddvq_f32(vaddq_f32(acc0, acc1)) + mins
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::simd_neon::testing::{run, Case};
    use crate::quant::BlockFormat;

    /// Σ|m·s| plus Σ|d_w·d_a·q·q8|: with `w = d·q + m` the terms `d·q·a` and `m·s` may
    /// cancel (a block whose values are all at its minimum: `q = 15`, `w = 0`), so Σ|w·a|
    /// alone does not bound the rounding of the two terms the kernel (and ggml) adds.
    fn min_magnitude(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f64 {
        w.iter()
            .zip(a)
            .map(|(x, y)| {
                let q: f64 = (0..32)
                    .map(|e| {
                        let q = if e < 16 { x.qs[e] & 0x0F } else { x.qs[e - 16] >> 4 };
                        (q as f64 * y.qs[e] as f64).abs()
                    })
                    .sum();
                (x.d() as f64 * y.d() as f64).abs() * q + (x.m() as f64 * y.s() as f64).abs()
            })
            .sum()
    }

    #[test]
    fn matches_scalar_reference() {
        let r = run(&Case {
            format: BlockFormat::Q4_1,
            scalar: super::super::vec_dot,
            neon: vec_dot,
            min_magnitude,
            bit_exact: false,
        });
        assert!(r.pairs > 0);
    }
}
