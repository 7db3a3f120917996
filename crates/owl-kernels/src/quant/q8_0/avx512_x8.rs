//! Q8_0 x8 groups (layout: [`super::x8`]) against one Q8_0 activation row with AVX-512
//! VNNI (the scheme: [`crate::quant::x8_avx512`]).
//!
//! Per group-block: the 8 chunks in pairs, 4 registers. `vpdpbusd` multiplies an unsigned
//! operand by a signed one, so the signed weights are flipped to `w + 128` (one XOR of the
//! sign bits) against the paired activation words, and 4 more `vpdpbusd` with the constant
//! 128 give `128·Σa`: the halves' difference is the scalar block sum `Σw·a` of each row,
//! exactly (for every byte value, where the AVX2 sign trick needs activations above −128).
//! Then the AVX2 kernel's float steps (`d·d8`, one FMA), so each row equals
//! [`super::avx2_x8::dot_x8`] bit for bit.

#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::GROUP_BLOCK_BYTES;
use super::BlockQ8_0;
use crate::quant::simd_x86::PREFETCH_BYTES;
use crate::quant::x8_avx512::{constant_dot, fold_halves, word_pairs};

/// The 8 rows of one x8 group against one activation row: the bits
/// [`super::avx2_x8::dot_x8`] gives (same contract).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI, AVX2, FMA and F16C
/// ([`crate::quant::x8_avx512::available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8_0]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = a.len().min(group.len() / GROUP_BLOCK_BYTES);
    // SAFETY: features guaranteed by the caller. Block `b < nb` reads group bytes
    // `b·272 .. (b + 1)·272` and activation block `b`, both in bounds by the choice of `nb`.
    unsafe {
        let sign = _mm512_set1_epi8(-128);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let g = group.as_ptr().add(b * GROUP_BLOCK_BYTES);
            let ahead = g.wrapping_add(PREFETCH_BYTES);
            for line in 0..5 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line).cast());
            }
            let y = a.get_unchecked(b);
            let words = word_pairs(_mm256_loadu_si256(y.qs.as_ptr().cast()));
            let mut isum = _mm512_setzero_si512();
            for (p, &w) in words.iter().enumerate() {
                let v = _mm512_xor_si512(_mm512_loadu_si512(g.add(16 + 64 * p).cast()), sign);
                isum = _mm512_dpbusd_epi32(isum, v, w);
            }
            let isum = fold_halves(_mm512_sub_epi32(isum, constant_dot(-128, &words)));
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(g.cast()));
            let dy = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(y.d)));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(isum), acc);
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q8_0::{avx2_x8, QK8_0};
    use crate::quant::x8_avx512::testing::{assert_same_bits, can_run, case, check_format};
    use crate::quant::BlockFormat;

    #[test]
    fn avx512_x8_gives_the_avx2_bits() {
        if can_run("q8_0::avx512_x8") {
            check_format(BlockFormat::Q8_0, &["q8_0_real.bin", "q8_0_random_blocks.bin"], dot_x8, avx2_x8::dot_x8);
        }
    }

    /// Weights −128 and 127 against activations −127 and 127 (the AVX2 kernel's range): the
    /// flipped weights and the offset stay exact.
    #[test]
    fn avx512_x8_is_exact_at_the_extremes() {
        if !can_run("q8_0::avx512_x8") {
            return;
        }
        let nb = 3;
        let (mut group, _) = case(BlockFormat::Q8_0, nb, 61, None);
        for w in [-128i8, 127] {
            for gb in group.chunks_exact_mut(GROUP_BLOCK_BYTES) {
                gb[..16].copy_from_slice(&[crate::quant::f32_to_f16(1.0); 8].concat());
                gb[16..].fill(w as u8);
            }
            for q in [-127i8, 127] {
                let a = vec![BlockQ8_0 { d: crate::quant::f32_to_f16(1.0), qs: [q; QK8_0] }; nb];
                let want = nb as f32 * (w as f32 * q as f32 * 32.0);
                // SAFETY: `can_run` checked the features.
                assert_eq!(unsafe { dot_x8(&group, &a) }, [want; 8], "w {w}, a {q}");
                assert_same_bits(&group, &a, dot_x8, avx2_x8::dot_x8, &format!("w {w}, a {q}"));
            }
        }
    }
}
