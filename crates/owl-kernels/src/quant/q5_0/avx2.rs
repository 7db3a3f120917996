//! Q5_0 with AVX2 + FMA + F16C: the Q5_0·Q8_0 dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`]; equal to it up to float reassociation of the per-block scaling
//!   (integer block sums are exact; tests: ≤ 2e-6 · Σ|w·a|).
//! - `vec_dot_n::<N>(w: &[BlockQ5_0], a: [&[BlockQ8_0]; N]) -> [f32; N]` — one weight row against N
//!   activation rows (prefill tiles), each weight block loaded and unpacked once. Column `t` is
//!   bit-identical to `vec_dot(w, a[t])`, so a token's result does not depend on its tile.
//!   N = 4 keeps everything in registers.
//! - `vec_dot_rows::<R>(w: [&[BlockQ5_0]; R], a: &[BlockQ8_0]) -> [f32; R]` — R ≤ 4 weight
//!   rows against one activation row (decode matvec): each activation block is loaded once
//!   and its offset sum `16·Σy` computed once for all rows, the f16 scales of all rows' block
//!   pair converted with one `vcvtph2ps`. Row `r` is bit-identical to `vec_dot(w[r], a)`.
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): nibbles unpacked with a
//! broadcast load, shift and mask; the 32 fifth bits spread to a byte mask
//! (`bits_to_byte_mask`) and OR-ed in as 0x10; (q − 16)·y as `maddubs(q, y) − maddubs(16, y)`
//! in i16 (exact), pairs to i32 by `_mm256_madd_epi16`, converted and scaled with FMA. The f16 scales of a block pair
//! are converted together (`f16x4_to_f32`); two blocks per iteration into one FMA
//! accumulator per row (two, as in Q4_0, ran out of ymm registers in the 4-row kernel).
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side,
//! never read out of bounds.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ5_0;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::simd_x86::{
    dot_offset_u8i8x32, dot_u8i8x32, f16_to_f32, f16x4_to_f32, f16x8_to_f32, five_bit_codes_32, group_prefetch_ahead,
    halves4, hsum_f32x8, load_i8x32, pair_scales, prefetch_ahead, prefetch_rows_ahead, MATVEC_ROWS,
};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ5_0], a: [&[BlockQ8_0]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let w = &w[..nb];
    // SAFETY: features guaranteed by the caller. Every index is below `nb`, the length of `w`
    // after the re-slicing above and at most the length of every `a[t]`.
    unsafe {
        let sixteen = _mm256_set1_epi8(16);
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut i = 0;
        while i + 1 < nb {
            let (x0, x1) = (w.get_unchecked(i), w.get_unchecked(i + 1));
            prefetch_ahead(x0, 2);
            let (q0, q1) = (five_bit_codes_32(&x0.qs, x0.qh), five_bit_codes_32(&x1.qs, x1.qh));
            for t in 0..N {
                let (y0, y1) = (a[t].get_unchecked(i), a[t].get_unchecked(i + 1));
                let (d0, d1) = pair_scales(x0.d, x1.d, y0.d, y1.d);
                let p0 = _mm256_cvtepi32_ps(dot_offset_u8i8x32(q0, sixteen, load_i8x32(&y0.qs)));
                let p1 = _mm256_cvtepi32_ps(dot_offset_u8i8x32(q1, sixteen, load_i8x32(&y1.qs)));
                acc0[t] = _mm256_fmadd_ps(d0, p0, acc0[t]);
                acc0[t] = _mm256_fmadd_ps(d1, p1, acc0[t]);
            }
            i += 2;
        }
        if i < nb {
            let x0 = w.get_unchecked(i);
            let q0 = five_bit_codes_32(&x0.qs, x0.qh);
            for t in 0..N {
                let y0 = a[t].get_unchecked(i);
                let d0 = _mm256_set1_ps(f16_to_f32(x0.d) * f16_to_f32(y0.d));
                acc0[t] = _mm256_fmadd_ps(
                    d0,
                    _mm256_cvtepi32_ps(dot_offset_u8i8x32(q0, sixteen, load_i8x32(&y0.qs))),
                    acc0[t],
                );
            }
        }
        let mut out = [0.0f32; N];
        for t in 0..N {
            out[t] = hsum_f32x8(acc0[t]);
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
pub unsafe fn vec_dot_rows<const R: usize>(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> [f32; R] {
    const { assert!(R >= 1 && R <= MATVEC_ROWS) };
    debug_assert_eq!(w.len(), R * a.len());
    let row_len = w.len() / R;
    let nb = row_len.min(a.len());
    let a = &a[..nb];
    let w: [&[BlockQ5_0]; R] = std::array::from_fn(|r| &w[r * row_len..r * row_len + nb]);
    let base = w[0].as_ptr().cast::<u8>();
    let ahead = group_prefetch_ahead(row_len * size_of::<BlockQ5_0>(), R);
    const STEP: usize = 2 * size_of::<BlockQ5_0>();
    // SAFETY: features guaranteed by the caller. Every index is below `nb`, the length of `a`
    // and of every `w[r]` after the slicing above.
    unsafe {
        let sixteen = _mm256_set1_epi8(16);
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut d = [0.0f32; 8];
        let mut i = 0;
        while i + 1 < nb {
            prefetch_rows_ahead(base, ahead, i / 2 * STEP * R, STEP * R);
            let (y0, y1) = (a.get_unchecked(i), a.get_unchecked(i + 1));
            let dx =
                f16x8_to_f32(halves4::<R>(|r| w[r].get_unchecked(i).d), halves4::<R>(|r| w[r].get_unchecked(i + 1).d));
            let dy = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(f16x4_to_f32([y0.d, y1.d, [0, 0], [0, 0]])),
                _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
            );
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_mul_ps(dx, dy));
            // (q − 16)·y = q·y − 16·y: the offset part once per activation block.
            let (ay0, ay1) = (load_i8x32(&y0.qs), load_i8x32(&y1.qs));
            let (off0, off1) = (dot_u8i8x32(sixteen, ay0), dot_u8i8x32(sixteen, ay1));
            for r in 0..R {
                let x0 = w[r].get_unchecked(i);
                let p0 = _mm256_sub_epi32(dot_u8i8x32(five_bit_codes_32(&x0.qs, x0.qh), ay0), off0);
                acc0[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[r]), _mm256_cvtepi32_ps(p0), acc0[r]);
            }
            for r in 0..R {
                let x1 = w[r].get_unchecked(i + 1);
                let p1 = _mm256_sub_epi32(dot_u8i8x32(five_bit_codes_32(&x1.qs, x1.qh), ay1), off1);
                acc0[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[4 + r]), _mm256_cvtepi32_ps(p1), acc0[r]);
            }
            i += 2;
        }
        if i < nb {
            let y0 = a.get_unchecked(i);
            let ay0 = load_i8x32(&y0.qs);
            let off0 = dot_u8i8x32(sixteen, ay0);
            let dy0 = f16_to_f32(y0.d);
            for r in 0..R {
                let x0 = w[r].get_unchecked(i);
                let d0 = _mm256_set1_ps(f16_to_f32(x0.d) * dy0);
                let p0 = _mm256_sub_epi32(dot_u8i8x32(five_bit_codes_32(&x0.qs, x0.qh), ay0), off0);
                acc0[r] = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(p0), acc0[r]);
            }
        }
        let mut out = [0.0f32; R];
        for r in 0..R {
            out[r] = hsum_f32x8(acc0[r]);
        }
        out
    }
}
