//! IQ4_XS with AVX2 + FMA + F16C: the IQ4_XS·Q8_K dot product.
//!
//! For the dispatch table (every function: `# Safety` = the CPU has avx2, fma and f16c):
//! - `vec_dot(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32` — same contract as the scalar
//!   [`super::vec_dot`] and **bit-identical** to it: each super-block is reduced to the same
//!   integer `Σ ls·(T[q]·q8)` (exact), then the scalar code's float expression is evaluated.
//! - `vec_dot_n::<N>(w: &[BlockIQ4XS], a: [&[BlockQ8K]; N]) -> [f32; N]` — one weight row
//!   against N activation rows, each super-block unpacked once; column `t` equals
//!   `vec_dot(w, a[t])` bit for bit.
//!
//! Recipe (after ggml `ggml-cpu/arch/x86/quants.c`): per sub-block of 32, nibbles unpacked by a
//! broadcast load, shift and mask and mapped through [`KVALUES_IQ4NL`] with
//! `_mm256_shuffle_epi8`; signed×signed products via `_mm256_sign_epi8` +
//! `_mm256_maddubs_epi16` (|pair| ≤ 2·127·127 fits i16), then `_mm256_madd_epi16` with the
//! sub-block scale. Activations must come from our Q8_K quantizer (quants in -127..=127):
//! the sign trick would turn a -128 against a negative weight into a wrong product.
//!
//! Lengths as in the scalar code: debug-asserted; in release builds cut to the shorter side.

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockIQ4XS;
use crate::quant::iq4_nl::KVALUES_IQ4NL;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::simd_x86::{f16_to_f32, hsum_i32x8, load_i8x16, load_i8x32_at, nibbles_32_at, prefetch_ahead};

/// Σ w·a over a row; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    // SAFETY: same features as this function.
    unsafe { vec_dot_n::<1>(w, [a])[0] }
}

/// One weight row against `N` activation rows; see the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_n<const N: usize>(w: &[BlockIQ4XS], a: [&[BlockQ8K]; N]) -> [f32; N] {
    debug_assert!(a.iter().all(|a| a.len() == w.len()));
    let nb = a.iter().fold(w.len(), |n, a| n.min(a.len()));
    let mut sum = [0.0f32; N];
    // SAFETY: features guaranteed by the caller; loads are bounds-checked windows of the
    // blocks' arrays, `get_unchecked(i)` has i < nb ≤ every slice's length.
    unsafe {
        // The 16 non-linear values in both 128-bit lanes (`_mm256_shuffle_epi8` is per lane).
        let table = _mm256_broadcastsi128_si256(load_i8x16(&KVALUES_IQ4NL));
        for i in 0..nb {
            let x = w.get_unchecked(i);
            prefetch_ahead(x, 1);
            let high = u16::from_le_bytes(x.scales_h);
            let mut sumi = [_mm256_setzero_si256(); N];
            for ib in 0..8 {
                let ls =
                    ((x.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) as i16 | ((((high >> (2 * ib)) & 3) as i16) << 4);
                let ls = _mm256_set1_epi16(ls - 32);
                let q = _mm256_shuffle_epi8(table, nibbles_32_at(&x.qs, 16 * ib));
                let abs_q = _mm256_sign_epi8(q, q);
                for t in 0..N {
                    let y = load_i8x32_at(&a[t].get_unchecked(i).qs, 32 * ib);
                    let p = _mm256_maddubs_epi16(abs_q, _mm256_sign_epi8(y, q));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, ls));
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
