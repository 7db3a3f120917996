//! Q4_0 x8 groups (layout: [`super::x8`]) against one Q8_0 activation row with AVX-512
//! VNNI (the scheme: [`crate::quant::x8_avx512`]).
//!
//! Per group-block: chunks 0–1 and 2–3 in one register each; their nibbles (0..=15, the
//! unsigned operand as stored) against the paired activation words, 4 `vpdpbusd` for
//! `Σq·a` and 4 with the constant 8 for `8·Σa`; the halves' difference is the scalar block
//! sum `Σ(q − 8)·a` of each row, exactly. Then the AVX2 kernel's float steps (`d·d8`, one
//! FMA), so each row equals [`super::avx2_x8::dot_x8`] bit for bit.

#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::GROUP_BLOCK_BYTES;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::simd_x86::PREFETCH_BYTES;
use crate::quant::x8_avx512::{constant_dot, fold_halves, nibble_dot, word_pairs};

/// Offset of the nibble chunks in a group-block (after the 8 rows' f16 scales).
const QS_OFFSET: usize = 16;

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
    // `b·144 .. (b + 1)·144` and activation block `b`, both in bounds by the choice of `nb`.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let g = group.as_ptr().add(b * GROUP_BLOCK_BYTES);
            let ahead = g.wrapping_add(PREFETCH_BYTES);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
            let y = a.get_unchecked(b);
            // Words 0..4 meet the low nibbles of chunks 0..4, words 4..8 the high ones.
            let words = word_pairs(_mm256_loadu_si256(y.qs.as_ptr().cast()));
            let v01 = _mm512_loadu_si512(g.add(QS_OFFSET).cast());
            let v23 = _mm512_loadu_si512(g.add(QS_OFFSET + 64).cast());
            let isum = fold_halves(_mm512_sub_epi32(nibble_dot(v01, v23, &words), constant_dot(8, &words)));
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
    use crate::quant::q4_0::avx2_x8;
    use crate::quant::x8_avx512::testing::{can_run, check_format};
    use crate::quant::BlockFormat;

    #[test]
    fn avx512_x8_gives_the_avx2_bits() {
        if can_run("q4_0::avx512_x8") {
            check_format(BlockFormat::Q4_0, &["q4_0_random_blocks.bin"], dot_x8, avx2_x8::dot_x8);
        }
    }
}
