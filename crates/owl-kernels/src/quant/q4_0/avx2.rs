//! Q4_0 with AVX2 + FMA + F16C: the Q4_0·Q8_0 dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`]; equal to it up to float reassociation of the per-block scaling
//!   (integer block sums are exact; tests: ≤ 2e-6 · Σ|w·a|).
//! - `vec_dot_n::<N>(w: &[BlockQ4_0], a: [&[BlockQ8_0]; N]) -> [f32; N]` — one weight row against N
//!   activation rows (prefill tiles), each weight block loaded and unpacked once. Column `t` is
//!   bit-identical to `vec_dot(w, a[t])`, so a token's result does not depend on its tile.
//!   N = 4 keeps everything in registers.
//! - `vec_dot_rows::<R>(w: [&[BlockQ4_0]; R], a: &[BlockQ8_0]) -> [f32; R]` — R ≤ 4 weight
//!   rows against one activation row (decode matvec): each activation block is loaded once
//!   and its offset sum `8·Σy` computed once for all rows, the f16 scales of all rows' block
//!   pair converted with one `vcvtph2ps`. Row `r` is bit-identical to `vec_dot(w[r], a)`
//!   (same integer sums, same float operations in the same order).
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): nibbles unpacked with a
//! broadcast load, shift and mask into 32 bytes (low nibbles = elements 0..16, high = 16..32);
//! (q − 8)·y as `maddubs(q, y) − maddubs(8, y)` in i16 (exact, no sign trick), pairs to i32
//! by `_mm256_madd_epi16`, converted and scaled with FMA. The f16 scales of a block pair
//! are converted together (`f16x4_to_f32`); two blocks per iteration, one FMA accumulator
//! each.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ4_0;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::simd_x86::{
    dot_offset_u8i8x32, dot_u8i8x32, f16_to_f32, f16x4_to_f32, f16x8_to_f32, group_prefetch_ahead, halves4, hsum_f32x8,
    load_i8x32, nibbles_32, pair_scales, prefetch_ahead, prefetch_rows_ahead, MATVEC_ROWS,
};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ4_0], a: [&[BlockQ8_0]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let w = &w[..nb];
    // SAFETY: features guaranteed by the caller. Every index is below `nb`, the length of `w`
    // after the re-slicing above and at most the length of every `a[t]`.
    unsafe {
        let eight = _mm256_set1_epi8(8);
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        let mut i = 0;
        while i + 1 < nb {
            let (x0, x1) = (w.get_unchecked(i), w.get_unchecked(i + 1));
            prefetch_ahead(x0, 2);
            let (q0, q1) = (nibbles_32(&x0.qs), nibbles_32(&x1.qs));
            for t in 0..N {
                let (y0, y1) = (a[t].get_unchecked(i), a[t].get_unchecked(i + 1));
                let (d0, d1) = pair_scales(x0.d, x1.d, y0.d, y1.d);
                let p0 = _mm256_cvtepi32_ps(dot_offset_u8i8x32(q0, eight, load_i8x32(&y0.qs)));
                let p1 = _mm256_cvtepi32_ps(dot_offset_u8i8x32(q1, eight, load_i8x32(&y1.qs)));
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
                acc0[t] =
                    _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(dot_offset_u8i8x32(q0, eight, load_i8x32(&y0.qs))), acc0[t]);
            }
        }
        let mut out = [0.0f32; N];
        for t in 0..N {
            out[t] = hsum_f32x8(_mm256_add_ps(acc0[t], acc1[t]));
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
pub unsafe fn vec_dot_rows<const R: usize>(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> [f32; R] {
    const { assert!(R >= 1 && R <= MATVEC_ROWS) };
    debug_assert_eq!(w.len(), R * a.len());
    let row_len = w.len() / R;
    let nb = row_len.min(a.len());
    let a = &a[..nb];
    let w: [&[BlockQ4_0]; R] = std::array::from_fn(|r| &w[r * row_len..r * row_len + nb]);
    let base = w[0].as_ptr().cast::<u8>();
    let ahead = group_prefetch_ahead(row_len * size_of::<BlockQ4_0>(), R);
    // SAFETY: features guaranteed by the caller. Every index is below `nb`, the length of `a`
    // and of every `w[r]` after the slicing above.
    unsafe {
        let eight = _mm256_set1_epi8(8);
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        let mut d = [0.0f32; 8];
        let mut i = 0;
        while i + 1 < nb {
            const STEP: usize = 2 * size_of::<BlockQ4_0>();
            prefetch_rows_ahead(base, ahead, i / 2 * STEP * R, STEP * R);
            let (y0, y1) = (a.get_unchecked(i), a.get_unchecked(i + 1));
            // d[r] = dx_r(i)·dy(i), d[4 + r] = dx_r(i+1)·dy(i+1): the scalar code's products.
            let dx =
                f16x8_to_f32(halves4::<R>(|r| w[r].get_unchecked(i).d), halves4::<R>(|r| w[r].get_unchecked(i + 1).d));
            let dy = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(f16x4_to_f32([y0.d, y1.d, [0, 0], [0, 0]])),
                _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
            );
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_mul_ps(dx, dy));
            // (q − 8)·y = q·y − 8·y: the offset part once per activation block.
            let (ay0, ay1) = (load_i8x32(&y0.qs), load_i8x32(&y1.qs));
            let (off0, off1) = (dot_u8i8x32(eight, ay0), dot_u8i8x32(eight, ay1));
            for r in 0..R {
                let p0 = _mm256_sub_epi32(dot_u8i8x32(nibbles_32(&w[r].get_unchecked(i).qs), ay0), off0);
                acc0[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[r]), _mm256_cvtepi32_ps(p0), acc0[r]);
            }
            for r in 0..R {
                let p1 = _mm256_sub_epi32(dot_u8i8x32(nibbles_32(&w[r].get_unchecked(i + 1).qs), ay1), off1);
                acc1[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[4 + r]), _mm256_cvtepi32_ps(p1), acc1[r]);
            }
            i += 2;
        }
        if i < nb {
            let y0 = a.get_unchecked(i);
            let ay0 = load_i8x32(&y0.qs);
            let off0 = dot_u8i8x32(eight, ay0);
            let dy0 = f16_to_f32(y0.d);
            for r in 0..R {
                let x0 = w[r].get_unchecked(i);
                let d0 = _mm256_set1_ps(f16_to_f32(x0.d) * dy0);
                let p0 = _mm256_sub_epi32(dot_u8i8x32(nibbles_32(&x0.qs), ay0), off0);
                acc0[r] = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(p0), acc0[r]);
            }
        }
        let mut out = [0.0f32; R];
        for r in 0..R {
            out[r] = hsum_f32x8(_mm256_add_ps(acc0[r], acc1[r]));
        }
        out
    }
}
