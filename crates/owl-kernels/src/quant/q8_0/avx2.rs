//! Q8_0 with AVX2 + FMA + F16C: the Q8_0·Q8_0 dot product and the Q8_0 activation quantizer.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`]; equal to it within float reassociation (tests: ≤ 2e-6 · Σ|w·a|).
//! - `vec_dot_n::<N>(w: &[BlockQ8_0], a: [&[BlockQ8_0]; N]) -> [f32; N]` — one weight row
//!   against N activation rows (prefill tiles), each weight block loaded once. Column `t`
//!   is bit-identical to `vec_dot(w, a[t])`, so a token's result does not depend on the tile
//!   it was computed in. N = 4 is the sweet spot (register pressure beyond 6).
//! - `vec_dot_rows::<R>(w: [&[BlockQ8_0]; R], a: &[BlockQ8_0]) -> [f32; R]` — R ≤ 4 weight
//!   rows against one activation row (decode over a row-major matrix, such as a tied output
//!   head); row `r` is bit-identical to `vec_dot(w[r], a)`.
//! - `quantize(src: &[f32], out: &mut [BlockQ8_0])` — bit-identical to the scalar
//!   [`super::quantize`] for every input (ties, NaN, ±inf, subnormals included).
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): signed×signed byte products via
//! `_mm256_sign_epi8` + `_mm256_maddubs_epi16` (weights may hold -128: |−128| = 128 as u8 still
//! fits), pairs to i32 by `_mm256_madd_epi16`, converted and scaled with FMA; the f16 scales of
//! a block pair are converted together; two blocks per iteration, one accumulator each.
//! Activations must come from our quantizers (quants in -127..=127): the sign trick would turn
//! a -128 activation against a negative weight into a wrong product.
//!
//! Lengths as in the scalar code: debug-asserted, and in release builds cut to the shorter
//! side, never read out of bounds.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::{BlockQ8_0, QK8_0};
use crate::quant::simd_x86::{
    dot_i8x32, f16_to_f32, f16x4_to_f32, f16x8_to_f32, f32_to_f16, group_prefetch_ahead, halves4, hsum_f32x8,
    load_f32x8_at, load_i8x32, max_abs, pack_i32_to_i8, pair_scales, prefetch_ahead, prefetch_rows_ahead,
    round_half_away, store_i8x32, MATVEC_ROWS,
};
use crate::quant::util::inverse_or_zero;

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockQ8_0], a: [&[BlockQ8_0]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let w = &w[..nb];
    // SAFETY: features guaranteed by the caller. Every index is below `nb`, the length of `w`
    // after the re-slicing above and at most the length of every `a[t]`.
    unsafe {
        let mut acc0 = [_mm256_setzero_ps(); N];
        let mut acc1 = [_mm256_setzero_ps(); N];
        let mut i = 0;
        while i + 1 < nb {
            let (x0, x1) = (w.get_unchecked(i), w.get_unchecked(i + 1));
            prefetch_ahead(x0, 2);
            let (q0, q1) = (load_i8x32(&x0.qs), load_i8x32(&x1.qs));
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
            let q0 = load_i8x32(&x0.qs);
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

/// `R ≤ 4` consecutive weight rows (`w`: `R·a.len()` blocks) against one activation row
/// (decode over a row-major Q8_0 matrix: the tied output heads, which stay as stored). Each
/// activation block is loaded once for all rows and the f16 scales of all rows' block pair
/// are converted with one `vcvtph2ps`. Row `r` is bit-identical to `vec_dot(w[r], a)`: the
/// same integer block sums, the same scale products (`dx·dy` in f32), the same FMA
/// accumulators and horizontal sum.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_rows<const R: usize>(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> [f32; R] {
    const { assert!(R >= 1 && R <= MATVEC_ROWS) };
    debug_assert_eq!(w.len(), R * a.len());
    let row_len = w.len() / R;
    let nb = row_len.min(a.len());
    let a = &a[..nb];
    let w: [&[BlockQ8_0]; R] = std::array::from_fn(|r| &w[r * row_len..r * row_len + nb]);
    let base = w[0].as_ptr().cast::<u8>();
    let ahead = group_prefetch_ahead(row_len * size_of::<BlockQ8_0>(), R);
    // SAFETY: features guaranteed by the caller. Every index is below `nb`, the length of `a`
    // and of every `w[r]` after the slicing above.
    unsafe {
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        let mut d = [0.0f32; 8];
        let mut i = 0;
        while i + 1 < nb {
            const STEP: usize = 2 * size_of::<BlockQ8_0>();
            prefetch_rows_ahead(base, ahead, i / 2 * STEP * R, STEP * R);
            let (y0, y1) = (a.get_unchecked(i), a.get_unchecked(i + 1));
            // d[r] = dx_r(i)·dy(i), d[4 + r] = dx_r(i+1)·dy(i+1): `pair_scales`' products.
            let dx =
                f16x8_to_f32(halves4::<R>(|r| w[r].get_unchecked(i).d), halves4::<R>(|r| w[r].get_unchecked(i + 1).d));
            let dy = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(f16x4_to_f32([y0.d, y1.d, [0, 0], [0, 0]])),
                _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
            );
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_mul_ps(dx, dy));
            let (ay0, ay1) = (load_i8x32(&y0.qs), load_i8x32(&y1.qs));
            for r in 0..R {
                let p0 = _mm256_cvtepi32_ps(dot_i8x32(load_i8x32(&w[r].get_unchecked(i).qs), ay0));
                acc0[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[r]), p0, acc0[r]);
            }
            for r in 0..R {
                let p1 = _mm256_cvtepi32_ps(dot_i8x32(load_i8x32(&w[r].get_unchecked(i + 1).qs), ay1));
                acc1[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[4 + r]), p1, acc1[r]);
            }
            i += 2;
        }
        if i < nb {
            let y0 = a.get_unchecked(i);
            let ay0 = load_i8x32(&y0.qs);
            let dy0 = f16_to_f32(y0.d);
            for r in 0..R {
                let x0 = w[r].get_unchecked(i);
                let d0 = _mm256_set1_ps(f16_to_f32(x0.d) * dy0);
                acc0[r] = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(dot_i8x32(load_i8x32(&x0.qs), ay0)), acc0[r]);
            }
        }
        let mut out = [0.0f32; R];
        for r in 0..R {
            out[r] = hsum_f32x8(_mm256_add_ps(acc0[r], acc1[r]));
        }
        out
    }
}

/// Quantizes f32 activations to Q8_0 exactly as the scalar [`super::quantize`] does.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize(src: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(src.len(), out.len() * QK8_0);
    for (x, b) in src.chunks_exact(QK8_0).zip(out.iter_mut()) {
        // SAFETY: features guaranteed by the caller; `x` is 32 floats long.
        unsafe {
            let v = [load_f32x8_at(x, 0), load_f32x8_at(x, 8), load_f32x8_at(x, 16), load_f32x8_at(x, 24)];
            let (d, q) = quantize_block(&v);
            b.d = f32_to_f16(d);
            store_i8x32(&mut b.qs, pack_i32_to_i8(q[0], q[1], q[2], q[3]));
        }
    }
}

/// The shared core of the Q8_0 and Q8_1 quantizers: `d = amax/127` and the 32 quants
/// `(x·(1/d)).round() as i8` as i32 lanes (already within -128..=127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_block(v: &[__m256; 4]) -> (f32, [__m256i; 4]) {
    // SAFETY: register-only work; features guaranteed by the caller.
    unsafe {
        let amax = max_abs(v);
        let d = amax / 127.0;
        let id = _mm256_set1_ps(inverse_or_zero(d));
        let q = v.map(|x| round_to_i8_lanes(_mm256_mul_ps(x, id)));
        (d, q)
    }
}

/// `f32::round` then Rust's saturating `as i8`, lane-wise: NaN → 0, clamped to -128..=127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_to_i8_lanes(x: __m256) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let r = round_half_away(x);
        let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
        let r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-128.0)), _mm256_set1_ps(127.0));
        _mm256_cvtps_epi32(r)
    }
}
