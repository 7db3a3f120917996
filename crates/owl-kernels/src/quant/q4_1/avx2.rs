//! Q4_1 with AVX2 + FMA + F16C: the Q4_1·Q8_1 dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`]; equal to it up to float reassociation of the per-block scaling
//!   (integer block sums are exact; tests: ≤ 2e-6 · Σ|w·a|).
//! - `vec_dot_n::<N>(w: &[BlockQ4_1], a: [&[BlockQ8_1]; N]) -> [f32; N]` — one weight row against N
//!   activation rows (prefill tiles), each weight block loaded and unpacked once. Column `t` is
//!   bit-identical to `vec_dot(w, a[t])`, so a token's result does not depend on its tile.
//!   N = 4 keeps everything in registers.
//! - `vec_dot_rows::<R>(w: [&[BlockQ4_1]; R], a: &[BlockQ8_1]) -> [f32; R]` — R ≤ 4 weight
//!   rows against one activation row (decode matvec): each activation block is loaded once for
//!   all rows, the scales and minimums of all rows' block pair converted with three `vcvtph2ps`
//!   and the min terms `m·s` of the rows formed in one vector multiply. Row `r` is
//!   bit-identical to `vec_dot(w[r], a)` (same integer sums, same float operations and order).
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): nibbles unpacked with a
//! broadcast load, shift and mask (unsigned 0..=15, so `_mm256_maddubs_epi16` takes them
//! directly against the signed activations), pairs to i32 by `_mm256_madd_epi16`, converted
//! and scaled with FMA; the minimum enters as `m·s` per block (`s` = the activation block's
//! `d·Σq`), converted with the scales. The f16 scales of a block pair
//! are converted together (`f16x8_to_f32`); two blocks per iteration, one FMA accumulator
//! each.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ4_1;
use crate::quant::q8_1::BlockQ8_1;
use crate::quant::simd_x86::{
    dot_u8i8x32, f16_to_f32, f16x4_to_f32, f16x8_to_f32, group_prefetch_ahead, halves4, hsum_f32x8, load_i8x32,
    nibbles_32, prefetch_ahead, prefetch_rows_ahead, MATVEC_ROWS,
};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ4_1], a: [&[BlockQ8_1]; N]) -> [f32; N] {
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
            let (q0, q1) = (nibbles_32(&x0.qs), nibbles_32(&x1.qs));
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
            let q0 = nibbles_32(&x0.qs);
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

/// `R ≤ 4` consecutive weight rows (`w`: `R·a.len()` blocks) against one activation row;
/// see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_rows<const R: usize>(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> [f32; R] {
    const { assert!(R >= 1 && R <= MATVEC_ROWS) };
    debug_assert_eq!(w.len(), R * a.len());
    let row_len = w.len() / R;
    let nb = row_len.min(a.len());
    let a = &a[..nb];
    let w: [&[BlockQ4_1]; R] = std::array::from_fn(|r| &w[r * row_len..r * row_len + nb]);
    let base = w[0].as_ptr().cast::<u8>();
    let ahead = group_prefetch_ahead(row_len * size_of::<BlockQ4_1>(), R);
    const STEP: usize = 2 * size_of::<BlockQ4_1>();
    // SAFETY: features guaranteed by the caller. Every index is below `nb`, the length of `a`
    // and of every `w[r]` after the slicing above.
    unsafe {
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        // Min terms of the even and odd blocks, lane r = row r (as `vec_dot` keeps them apart).
        let (mut m_even, mut m_odd) = (_mm_setzero_ps(), _mm_setzero_ps());
        let mut d = [0.0f32; 8];
        let mut i = 0;
        while i + 1 < nb {
            prefetch_rows_ahead(base, ahead, i / 2 * STEP * R, STEP * R);
            let (y0, y1) = (a.get_unchecked(i), a.get_unchecked(i + 1));
            let dx =
                f16x8_to_f32(halves4::<R>(|r| w[r].get_unchecked(i).d), halves4::<R>(|r| w[r].get_unchecked(i + 1).d));
            let mx =
                f16x8_to_f32(halves4::<R>(|r| w[r].get_unchecked(i).m), halves4::<R>(|r| w[r].get_unchecked(i + 1).m));
            // [dy0, dy1, s0, s1] spread to [dy0 ×4 | dy1 ×4] and [s0 ×4 | s1 ×4].
            let ys = _mm256_castps128_ps256(f16x4_to_f32([y0.d, y1.d, y0.s, y1.s]));
            let dy = _mm256_permutevar8x32_ps(ys, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
            let sy = _mm256_permutevar8x32_ps(ys, _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3));
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_mul_ps(dx, dy));
            let ms = _mm256_mul_ps(mx, sy);
            m_even = _mm_add_ps(m_even, _mm256_castps256_ps128(ms));
            m_odd = _mm_add_ps(m_odd, _mm256_extractf128_ps::<1>(ms));
            let (ay0, ay1) = (load_i8x32(&y0.qs), load_i8x32(&y1.qs));
            for r in 0..R {
                let x0 = w[r].get_unchecked(i);
                let p0 = _mm256_cvtepi32_ps(dot_u8i8x32(nibbles_32(&x0.qs), ay0));
                acc0[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[r]), p0, acc0[r]);
            }
            for r in 0..R {
                let p1 = _mm256_cvtepi32_ps(dot_u8i8x32(nibbles_32(&w[r].get_unchecked(i + 1).qs), ay1));
                acc1[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[4 + r]), p1, acc1[r]);
            }
            i += 2;
        }
        let mut m = [0.0f32; 4];
        _mm_storeu_ps(m.as_mut_ptr(), _mm_add_ps(m_even, m_odd));
        let mut m_tail = [0.0f32; R];
        if i < nb {
            let y0 = a.get_unchecked(i);
            let ay0 = load_i8x32(&y0.qs);
            let (dy0, sy0) = (f16_to_f32(y0.d), f16_to_f32(y0.s));
            for r in 0..R {
                let x0 = w[r].get_unchecked(i);
                let d0 = _mm256_set1_ps(f16_to_f32(x0.d) * dy0);
                acc0[r] = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(dot_u8i8x32(nibbles_32(&x0.qs), ay0)), acc0[r]);
                m_tail[r] = f16_to_f32(x0.m) * sy0;
            }
        }
        let mut out = [0.0f32; R];
        for r in 0..R {
            out[r] = hsum_f32x8(_mm256_add_ps(acc0[r], acc1[r])) + (m[r] + m_tail[r]);
        }
        out
    }
}
