//! Q5_1 with AVX2 + FMA + F16C: the Q5_1·Q8_1 dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`]; equal to it up to float reassociation of the per-block scaling
//!   (integer block sums are exact; tests: ≤ 2e-6 · Σ|w·a|).
//! - `vec_dot_n::<N>(w: &[BlockQ5_1], a: [&[BlockQ8_1]; N]) -> [f32; N]` — one weight row against N
//!   activation rows (prefill tiles), each weight block loaded and unpacked once. Column `t` is
//!   bit-identical to `vec_dot(w, a[t])`, so a token's result does not depend on its tile.
//!   N = 4 keeps everything in registers.
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): nibbles unpacked with a
//! broadcast load, shift and mask; the fifth bits spread to a byte mask and OR-ed in as 0x10
//! (quants stay unsigned 0..=31 for `_mm256_maddubs_epi16`), pairs to i32 by
//! `_mm256_madd_epi16`, converted and scaled with FMA; the minimum enters as `m·s` per block. The f16 scales of a block pair
//! are converted together (`f16x8_to_f32`); two blocks per iteration, one FMA accumulator
//! each.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ5_1;
use crate::quant::q8_1::BlockQ8_1;
use crate::quant::simd_x86::{
    dot_u8i8x32, f16_to_f32, f16x8_to_f32, five_bit_codes_32, hsum_f32x8, load_i8x32, prefetch_ahead,
};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ5_1], a: [&[BlockQ8_1]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let w = &w[..nb];
    // SAFETY: features guaranteed by the caller. Every index is below `nb`, the length of `w`
    // after the re-slicing above and at most the length of every `a[t]`.
    unsafe {
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        // The min terms `m·s` (weights' minimum × activation block's `d·Σq`), kept apart as in
        // the scalar code: lanes 2 and 3 of `msum` (pairs), `mtail` for an odd last block.
        let mut msum = [_mm_setzero_ps(); N];
        let mut mtail = [0.0f32; N];
        let mut i = 0;
        while i + 1 < nb {
            let (x0, x1) = (w.get_unchecked(i), w.get_unchecked(i + 1));
            prefetch_ahead(x0, 2);
            let (q0, q1) = (five_bit_codes_32(&x0.qs, x0.qh), five_bit_codes_32(&x1.qs, x1.qh));
            for t in 0..N {
                let (y0, y1) = (a[t].get_unchecked(i), a[t].get_unchecked(i + 1));
                // [dx0, dx1, m0, m1] · [dy0, dy1, s0, s1]: both block scales and both min terms.
                let f = f16x8_to_f32([x0.d, x1.d, x0.m, x1.m], [y0.d, y1.d, y0.s, y1.s]);
                let prod = _mm_mul_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps::<1>(f));
                let (d0, d1) = (_mm256_broadcastss_ps(prod), _mm256_broadcastss_ps(_mm_movehdup_ps(prod)));
                msum[t] = _mm_add_ps(msum[t], prod);
                let p0 = _mm256_cvtepi32_ps(dot_u8i8x32(q0, load_i8x32(&y0.qs)));
                let p1 = _mm256_cvtepi32_ps(dot_u8i8x32(q1, load_i8x32(&y1.qs)));
                acc0[t] = _mm256_fmadd_ps(d0, p0, acc0[t]);
                acc1[t] = _mm256_fmadd_ps(d1, p1, acc1[t]);
            }
            i += 2;
        }
        if i < nb {
            let x0 = w.get_unchecked(i);
            let q0 = five_bit_codes_32(&x0.qs, x0.qh);
            for t in 0..N {
                let y0 = a[t].get_unchecked(i);
                let d0 = _mm256_set1_ps(f16_to_f32(x0.d) * f16_to_f32(y0.d));
                acc0[t] = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(dot_u8i8x32(q0, load_i8x32(&y0.qs))), acc0[t]);
                mtail[t] = f16_to_f32(x0.m) * f16_to_f32(y0.s);
            }
        }
        let mut out = [0.0f32; N];
        for t in 0..N {
            out[t] = {
                // Lanes 2 and 3 of `msum` hold the pairs' min terms.
                let m = _mm_movehl_ps(msum[t], msum[t]);
                let m = _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m))) + mtail[t];
                hsum_f32x8(_mm256_add_ps(acc0[t], acc1[t])) + m
            };
        }
        out
    }
}
