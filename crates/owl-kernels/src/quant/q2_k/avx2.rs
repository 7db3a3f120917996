//! Q2_K with AVX2 + FMA + F16C: the Q2_K·Q8_K dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`] and **bit-identical** to it: each super-block is reduced to the same
//!   two integers (`Σ sc·(q·q8)` and `Σ m·bsum`, exact), then the scalar code's float
//!   expression is evaluated in its order.
//! - `vec_dot_n::<N>(w: &[BlockQ2K], a: [&[BlockQ8K]; N]) -> [f32; N]` — one weight row
//!   against N activation rows, each super-block unpacked once; column `t` equals
//!   `vec_dot(w, a[t])` bit for bit.
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): the 16 scale/min bytes split into low
//! (scale) and high (min) nibbles; the mins times the activations' `bsums` with one
//! `_mm256_madd_epi16`; per 32 elements the 2-bit quants by shift and mask, `maddubs` against
//! the activations, `madd` with `[s_k ×8 | s_k+1 ×8]`.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ2K;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::simd_x86::{
    f16_to_f32, hsum_i32x8, load_i16x16_at, load_i8x32_at, load_u8x16, load_u8x32_at, prefetch_ahead, sub16_scale_pair,
};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ2K], a: [&[BlockQ8K]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let mut sum = [0.0f32; N];
    // SAFETY: features guaranteed by the caller; loads are bounds-checked windows of the
    // blocks' arrays, `get_unchecked(i)` has i < nb ≤ every slice's length.
    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0x0F);
        for i in 0..nb {
            let x = w.get_unchecked(i);
            prefetch_ahead(x, 1);
            let packed = load_u8x16(&x.scales);
            let scales = _mm_and_si128(packed, m4);
            let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
            let mut sumi = [_mm256_setzero_si256(); N];
            for n in 0..2 {
                let bits = load_u8x32_at(&x.qs, 32 * n);
                // Element 128n + 32j + l: bits 2j..2j+2 of qs[32n + l].
                let q = [
                    _mm256_and_si256(bits, m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(bits), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(bits), m3),
                ];
                for (j, &qj) in q.iter().enumerate() {
                    let sc = sub16_scale_pair(scales, 8 * n + 2 * j);
                    for t in 0..N {
                        let y = load_i8x32_at(&a[t].get_unchecked(i).qs, 128 * n + 32 * j);
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(qj, y), sc));
                    }
                }
            }
            let (xd, xdmin) = (f16_to_f32(x.d), f16_to_f32(x.dmin));
            for t in 0..N {
                let y = a[t].get_unchecked(i);
                let summs = hsum_i32x8(_mm256_madd_epi16(mins16, load_i16x16_at(&y.bsums, 0)));
                let (dall, dmin) = (y.d * xd, y.d * xdmin);
                sum[t] += dall * hsum_i32x8(sumi[t]) as f32 - dmin * summs as f32;
            }
        }
    }
    sum
}
