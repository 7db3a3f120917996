//! Q3_K with AVX2 + FMA + F16C: the Q3_K·Q8_K dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`] and **bit-identical** to it: each super-block is reduced to the same
//!   integer `Σ sc·(q·q8)` (exact), then the scalar code's float expression is evaluated.
//! - `vec_dot_n::<N>(w: &[BlockQ3K], a: [&[BlockQ8K]; N]) -> [f32; N]` — one weight row
//!   against N activation rows, each super-block unpacked once; column `t` equals
//!   `vec_dot(w, a[t])` bit for bit.
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): the 16 six-bit scales unpacked with
//! 32-bit masks (ggml's `aux` trick) and offset by −32; per 32 elements the 2-bit low parts by
//! shift and mask, and the quant `low − 4·(high bit clear)` as
//! `maddubs(low, y) − maddubs(4·clear, y)` in i16 (exact); sub-block scales as
//! `[s_k ×8 | s_k+1 ×8]` into `_mm256_madd_epi16`.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ3K;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::simd_x86::{f16_to_f32, hsum_i32x8, load_i8x32_at, load_u8x32_at, prefetch_ahead, sub16_scale_pair};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ3K], a: [&[BlockQ8K]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let mut sum = [0.0f32; N];
    // SAFETY: features guaranteed by the caller; loads are bounds-checked windows of the
    // blocks' arrays, `get_unchecked(i)` has i < nb ≤ every slice's length.
    unsafe {
        let (m3, four, zero) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4), _mm256_setzero_si256());
        for i in 0..nb {
            let x = w.get_unchecked(i);
            prefetch_ahead(x, 1);
            let scales = q3k_scales(&x.scales);
            let hmask = load_u8x32_at(&x.hmask, 0);
            let mut sumi = [_mm256_setzero_si256(); N];
            for n in 0..2 {
                let bits = load_u8x32_at(&x.qs, 32 * n);
                // Element 128n + 32j + l: bits 2j..2j+2 of qs[32n + l].
                let low = [
                    _mm256_and_si256(bits, m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(bits), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(bits), m3),
                ];
                for (j, &lo) in low.iter().enumerate() {
                    // 4 where the high bit (bit 4n + j of hmask[l]) is clear: q = low − 4.
                    let b = _mm256_set1_epi8((1u8 << (4 * n + j)) as i8);
                    let minus4 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hmask, b), zero), four);
                    let sc = sub16_scale_pair(scales, 8 * n + 2 * j);
                    for t in 0..N {
                        let y = load_i8x32_at(&a[t].get_unchecked(i).qs, 128 * n + 32 * j);
                        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(lo, y), _mm256_maddubs_epi16(minus4, y));
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, sc));
                    }
                }
            }
            let d = f16_to_f32(x.d);
            for t in 0..N {
                let y = a[t].get_unchecked(i);
                sum[t] += (d * y.d) * hsum_i32x8(sumi[t]) as f32;
            }
        }
    }
    sum
}

/// The 16 sub-block scales (−32..=31) as signed bytes: low nibbles from bytes 0..8 (sub-blocks
/// 0..8 low nibble, 8..16 high nibble), top two bits of scale `k` at bits `2(k/4)` of byte
/// `8 + k%4` — four 32-bit mask expressions, one per 4 scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_scales(s: &[u8; 12]) -> __m128i {
    let word = |k: usize| u32::from_le_bytes([s[4 * k], s[4 * k + 1], s[4 * k + 2], s[4 * k + 3]]);
    let (a0, a1, a2) = (word(0), word(1), word(2));
    let (low, top) = (0x0f0f_0f0f, 0x0303_0303);
    let s0 = (a0 & low) | ((a2 & top) << 4);
    let s1 = (a1 & low) | (((a2 >> 2) & top) << 4);
    let s2 = ((a0 >> 4) & low) | (((a2 >> 4) & top) << 4);
    let s3 = ((a1 >> 4) & low) | (((a2 >> 6) & top) << 4);
    // SAFETY: register-only intrinsics.
    unsafe { _mm_sub_epi8(_mm_set_epi32(s3 as i32, s2 as i32, s1 as i32, s0 as i32), _mm_set1_epi8(32)) }
}
