//! IQ4_NL with AVX2 + FMA + F16C: the IQ4_NL·Q8_0 dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`]; equal to it up to float reassociation of the per-block scaling
//!   (integer block sums are exact; tests: ≤ 2e-6 · Σ|w·a|).
//! - `vec_dot_n::<N>(w: &[BlockIQ4NL], a: [&[BlockQ8_0]; N]) -> [f32; N]` — one weight row against N
//!   activation rows (prefill tiles), each weight block loaded and unpacked once. Column `t` is
//!   bit-identical to `vec_dot(w, a[t])`, so a token's result does not depend on its tile.
//!   N = 4 keeps everything in registers.
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): nibbles unpacked with a
//! broadcast load, shift and mask and mapped through the 16-entry table
//! [`super::KVALUES_IQ4NL`] by `_mm256_shuffle_epi8`; signed×signed byte products via
//! `_mm256_sign_epi8` + `_mm256_maddubs_epi16` (table values −127..=113), pairs to i32 by
//! `_mm256_madd_epi16`, converted and scaled with FMA. The f16 scales of a block pair
//! are converted together (`f16x4_to_f32`); two blocks per iteration, one FMA accumulator
//! each.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.
//!
//! Activations must come from our quantizers (quants in -127..=127): the sign trick would
//! turn a -128 against a negative weight into a wrong product.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::{BlockIQ4NL, KVALUES_IQ4NL};
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::simd_x86::{
    dot_i8x32, f16_to_f32, hsum_f32x8, load_i8x16, load_i8x32, nibbles_32, pair_scales, prefetch_ahead,
};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockIQ4NL], a: [&[BlockQ8_0]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let w = &w[..nb];
    // SAFETY: features guaranteed by the caller. Every index is below `nb`, the length of `w`
    // after the re-slicing above and at most the length of every `a[t]`.
    unsafe {
        // The 16 non-linear values in both 128-bit lanes: `_mm256_shuffle_epi8` looks each
        // nibble up within its own lane.
        let table = _mm256_broadcastsi128_si256(load_i8x16(&KVALUES_IQ4NL));
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        let mut i = 0;
        while i + 1 < nb {
            let (x0, x1) = (w.get_unchecked(i), w.get_unchecked(i + 1));
            prefetch_ahead(x0, 2);
            let (q0, q1) =
                (_mm256_shuffle_epi8(table, nibbles_32(&x0.qs)), _mm256_shuffle_epi8(table, nibbles_32(&x1.qs)));
            for t in 0..N {
                let (y0, y1) = (a[t].get_unchecked(i), a[t].get_unchecked(i + 1));
                let (d0, d1) = pair_scales(x0.d, x1.d, y0.d, y1.d);
                let p0 = _mm256_cvtepi32_ps(dot_i8x32(q0, load_i8x32(&y0.qs)));
                let p1 = _mm256_cvtepi32_ps(dot_i8x32(q1, load_i8x32(&y1.qs)));
                acc0[t] = _mm256_fmadd_ps(d0, p0, acc0[t]);
                acc1[t] = _mm256_fmadd_ps(d1, p1, acc1[t]);
            }
            i += 2;
        }
        if i < nb {
            let x0 = w.get_unchecked(i);
            let q0 = _mm256_shuffle_epi8(table, nibbles_32(&x0.qs));
            for t in 0..N {
                let y0 = a[t].get_unchecked(i);
                let d0 = _mm256_set1_ps(f16_to_f32(x0.d) * f16_to_f32(y0.d));
                acc0[t] = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(dot_i8x32(q0, load_i8x32(&y0.qs))), acc0[t]);
            }
        }
        let mut out = [0.0f32; N];
        for t in 0..N {
            out[t] = hsum_f32x8(_mm256_add_ps(acc0[t], acc1[t]));
        }
        out
    }
}
