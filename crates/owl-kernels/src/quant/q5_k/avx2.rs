//! Q5_K with AVX2 + FMA + F16C: the Q5_K·Q8_K dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`] and **bit-identical** to it: each super-block is reduced to the same
//!   two integers (`Σ sc·(q·q8)` and `Σ m·bsum`, exact), then the scalar code's float
//!   expression is evaluated in its order.
//! - `vec_dot_n::<N>(w: &[BlockQ5K], a: [&[BlockQ8K]; N]) -> [f32; N]` — one weight row
//!   against N activation rows, each super-block unpacked once; column `t` equals
//!   `vec_dot(w, a[t])` bit for bit. N = 4 keeps the accumulators in registers.
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): as Q4_K (scales/mins by 32-bit masks,
//! nibbles by and/shift, `maddubs` + `madd` with the broadcast sub-block scale, mins through
//! `bsums`), plus the fifth bit of element `64j + 32h + l` — bit `2j + h` of `qh[l]` — added
//! as 16 with a compare against the bit mask.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ5K;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::simd_x86::{
    broadcast_i16_mask, f16_to_f32, hsum_i32x4, hsum_i32x8, k4_scales_mins, load_i16x16_at, load_i8x32_at,
    load_u8x32_at, prefetch_ahead, select_bit,
};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ5K], a: [&[BlockQ8K]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let mut sum = [0.0f32; N];
    // SAFETY: features guaranteed by the caller; loads are bounds-checked windows of the
    // blocks' arrays, `get_unchecked(i)` has i < nb ≤ every slice's length.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        for i in 0..nb {
            let x = w.get_unchecked(i);
            prefetch_ahead(x, 1);
            let (scales, mins) = k4_scales_mins(&x.scales);
            let sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales));
            let mins16 = _mm_cvtepu8_epi16(mins);
            let high = load_u8x32_at(&x.qh, 0);
            let mut sumi = [_mm256_setzero_si256(); N];
            for j in 0..4 {
                let bits = load_u8x32_at(&x.qs, 32 * j);
                let lo = _mm256_or_si256(_mm256_and_si256(bits, m4), select_bit(high, 1 << (2 * j), 16));
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4),
                    select_bit(high, 2 << (2 * j), 16),
                );
                let sc_lo = _mm256_shuffle_epi8(sc16, broadcast_i16_mask(2 * j));
                let sc_hi = _mm256_shuffle_epi8(sc16, broadcast_i16_mask(2 * j + 1));
                for t in 0..N {
                    let y = a[t].get_unchecked(i);
                    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load_i8x32_at(&y.qs, 64 * j)), sc_lo);
                    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load_i8x32_at(&y.qs, 64 * j + 32)), sc_hi);
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p_lo, p_hi));
                }
            }
            let (d, dmin) = (f16_to_f32(x.d), f16_to_f32(x.dmin));
            for t in 0..N {
                let y = a[t].get_unchecked(i);
                let bs = load_i16x16_at(&y.bsums, 0);
                let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256::<1>(bs));
                let summs = hsum_i32x4(_mm_madd_epi16(mins16, pairs));
                let isum = hsum_i32x8(sumi[t]);
                sum[t] += (d * y.d) * isum as f32 - (dmin * y.d) * summs as f32;
            }
        }
    }
    sum
}
