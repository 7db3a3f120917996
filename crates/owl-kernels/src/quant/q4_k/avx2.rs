//! Q4_K with AVX2 + FMA + F16C: the Q4_K·Q8_K dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`] and **bit-identical** to it: each super-block is reduced to the same
//!   two integers (`Σ sc·(q·q8)` and `Σ m·bsum`, exact), then the scalar code's float
//!   expression is evaluated in its order.
//! - `vec_dot_n::<N>(w: &[BlockQ4K], a: [&[BlockQ8K]; N]) -> [f32; N]` — one weight row
//!   against N activation rows (prefill tiles), each super-block unpacked once; column `t`
//!   equals `vec_dot(w, a[t])` bit for bit. N = 4 keeps the accumulators in registers.
//! - `vec_dot_rows::<R>(w: [&[BlockQ4K]; R], a: &[BlockQ8K]) -> [f32; R]` — R ≤ 4 weight
//!   rows against one activation row (decode matvec): each activation super-block (quants and
//!   `bsums` pairs) is loaded once for all rows; the rows' integer sums are reduced together
//!   by one transposing reduction, and the float expression evaluated for the 4 rows in one
//!   vector (same operations, no FMA). Row `r` equals `vec_dot(w[r], a)` bit for bit.
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): the 6-bit scales and mins unpacked with
//! 32-bit masks, scales widened to i16 and broadcast per sub-block with `_mm256_shuffle_epi8`;
//! nibbles by and/shift, `_mm256_maddubs_epi16` against the activations (unsigned × signed),
//! `_mm256_madd_epi16` with the sub-block scale to i32; the mins through the activations'
//! `bsums` (pairs summed with `hadd`, one `madd`).
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ4K;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::simd_x86::{
    broadcast_i16_mask, f16_to_f32, f16x8_to_f32, group_prefetch_ahead, halves4, hsum4_i32x4, hsum4_i32x8, hsum_i32x4,
    hsum_i32x8, k4_scales_mins, load_i16x16_at, load_i8x32_at, load_u8x32_at, prefetch_ahead, prefetch_rows_ahead,
    MATVEC_ROWS,
};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ4K], a: [&[BlockQ8K]; N]) -> [f32; N] {
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
            // Sub-block scales as i16 in both 128-bit lanes, for the per-sub-block broadcasts.
            let sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales));
            let mins16 = _mm_cvtepu8_epi16(mins);
            let mut sumi = [_mm256_setzero_si256(); N];
            for j in 0..4 {
                let bits = load_u8x32_at(&x.qs, 32 * j);
                let lo = _mm256_and_si256(bits, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
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
                // Σ_j m_j·(bsums[2j] + bsums[2j+1]): pairs summed by hadd (|pair| ≤ 4096 fits i16).
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

/// `R ≤ 4` consecutive weight rows (`w`: `R·a.len()` blocks) against one activation row;
/// see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_rows<const R: usize>(w: &[BlockQ4K], a: &[BlockQ8K]) -> [f32; R] {
    const { assert!(R >= 1 && R <= MATVEC_ROWS) };
    debug_assert_eq!(w.len(), R * a.len());
    let row_len = w.len() / R;
    let nb = row_len.min(a.len());
    let a = &a[..nb];
    let w: [&[BlockQ4K]; R] = std::array::from_fn(|r| &w[r * row_len..r * row_len + nb]);
    let base = w[0].as_ptr().cast::<u8>();
    let ahead = group_prefetch_ahead(row_len * size_of::<BlockQ4K>(), R);
    const STEP: usize = size_of::<BlockQ4K>();
    // SAFETY: features guaranteed by the caller; loads are bounds-checked windows of the
    // blocks' arrays, `get_unchecked(i)` has i < nb ≤ every slice's length.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        // Lane r: row r's running sum (rows ≥ R stay 0).
        let mut sum = _mm_setzero_ps();
        for i in 0..nb {
            prefetch_rows_ahead(base, ahead, i * STEP * R, STEP * R);
            let y = a.get_unchecked(i);
            // Σ_j m_j·(bsums[2j] + bsums[2j+1]): the pairs once (|pair| ≤ 4096 fits i16).
            let bs = load_i16x16_at(&y.bsums, 0);
            let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256::<1>(bs));
            let mut sc16 = [_mm256_setzero_si256(); R];
            let mut summs = [_mm_setzero_si128(); MATVEC_ROWS];
            for r in 0..R {
                let (scales, mins) = k4_scales_mins(&w[r].get_unchecked(i).scales);
                sc16[r] = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales));
                summs[r] = _mm_madd_epi16(_mm_cvtepu8_epi16(mins), pairs);
            }
            let mut sumi = [_mm256_setzero_si256(); MATVEC_ROWS];
            for j in 0..4 {
                let y_lo = load_i8x32_at(&y.qs, 64 * j);
                let y_hi = load_i8x32_at(&y.qs, 64 * j + 32);
                for r in 0..R {
                    let bits = load_u8x32_at(&w[r].get_unchecked(i).qs, 32 * j);
                    let lo = _mm256_and_si256(bits, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                    let sc_lo = _mm256_shuffle_epi8(sc16[r], broadcast_i16_mask(2 * j));
                    let sc_hi = _mm256_shuffle_epi8(sc16[r], broadcast_i16_mask(2 * j + 1));
                    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y_lo), sc_lo);
                    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y_hi), sc_hi);
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p_lo, p_hi));
                }
            }
            let isum = _mm_cvtepi32_ps(hsum4_i32x8(sumi));
            let summs = _mm_cvtepi32_ps(hsum4_i32x4(summs));
            // [d_0..d_3 | dmin_0..dmin_3], then the scalar expression
            // `(d·y.d)·isum − (dmin·y.d)·summs` lane by lane.
            let dd =
                f16x8_to_f32(halves4::<R>(|r| w[r].get_unchecked(i).d), halves4::<R>(|r| w[r].get_unchecked(i).dmin));
            let yd = _mm_set1_ps(y.d);
            let scaled = _mm_mul_ps(_mm_mul_ps(_mm256_castps256_ps128(dd), yd), isum);
            let mins = _mm_mul_ps(_mm_mul_ps(_mm256_extractf128_ps::<1>(dd), yd), summs);
            sum = _mm_add_ps(sum, _mm_sub_ps(scaled, mins));
        }
        let mut lanes = [0.0f32; 4];
        _mm_storeu_ps(lanes.as_mut_ptr(), sum);
        std::array::from_fn(|r| lanes[r])
    }
}
