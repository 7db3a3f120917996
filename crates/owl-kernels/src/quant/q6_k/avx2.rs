//! Q6_K with AVX2 + FMA + F16C: the Q6_K·Q8_K dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`] and **bit-identical** to it: each super-block is reduced to the same
//!   integer `Σ sc·((q − 32)·q8)` (exact), then the scalar code's float expression is
//!   evaluated in its order.
//! - `vec_dot_n::<N>(w: &[BlockQ6K], a: [&[BlockQ8K]; N]) -> [f32; N]` — one weight row
//!   against N activation rows (prefill tiles), each super-block unpacked once; column `t`
//!   equals `vec_dot(w, a[t])` bit for bit. N = 4 keeps the accumulators in registers.
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): per 128 elements, 64 bytes of low nibbles
//! and 32 bytes of 2-bit high parts; the high parts moved to bits 4–5 with 16-bit shifts and a
//! 0x30 mask (no bits cross a byte boundary under that mask), OR-ed onto the nibbles; the −32
//! offset as `maddubs(q, y) − maddubs(32, y)` in i16 (exact: |pair| ≤ 16128); the signed
//! sub-block scales as `[s_k ×8 | s_k+1 ×8]` i16 vectors into `_mm256_madd_epi16`.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ6K;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::simd_x86::{
    f16_to_f32, hsum_i32x8, load_i8x16, load_i8x32_at, load_u8x32_at, prefetch_ahead, sub16_scale_pair,
};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ6K], a: [&[BlockQ8K]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let mut sum = [0.0f32; N];
    // SAFETY: features guaranteed by the caller; loads are bounds-checked windows of the
    // blocks' arrays, `get_unchecked(i)` has i < nb ≤ every slice's length.
    unsafe {
        let (m4, m30, m32) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30), _mm256_set1_epi8(32));
        for i in 0..nb {
            let x = w.get_unchecked(i);
            prefetch_ahead(x, 1);
            let scales = load_i8x16(&x.scales);
            let mut sumi = [_mm256_setzero_si256(); N];
            for n in 0..2 {
                let ql1 = load_u8x32_at(&x.ql, 64 * n);
                let ql2 = load_u8x32_at(&x.ql, 64 * n + 32);
                let qh = load_u8x32_at(&x.qh, 32 * n);
                // Element 128n + 32k + l: low nibble from ql1/ql2 (k even/odd, nibble k/2),
                // high two bits = bits 2k..2k+2 of qh[l], moved to bits 4–5.
                let q = [
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30)),
                    _mm256_or_si256(_mm256_and_si256(ql2, m4), _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4), _mm256_and_si256(qh, m30)),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql2), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                    ),
                ];
                for (k, &qk) in q.iter().enumerate() {
                    let sc = sub16_scale_pair(scales, 8 * n + 2 * k);
                    for t in 0..N {
                        let y = load_i8x32_at(&a[t].get_unchecked(i).qs, 128 * n + 32 * k);
                        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(qk, y), _mm256_maddubs_epi16(m32, y));
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
