//! Q4_1 x8 groups (layout: [`super::x8`]) against one Q8_1 activation row with AVX-512
//! VNNI (the scheme: [`crate::quant::x8_avx512`]).
//!
//! Per group-block: chunks 0–1 and 2–3 in one register each; their low and high nibbles
//! (0..=15, `vpdpbusd`'s unsigned operand as stored) against the paired activation words,
//! 4 `vpdpbusd` into i32 lanes whose two halves add to the scalar block sum `Σq·a` of each
//! row. Then the AVX2 kernel's float steps per row: `d·d8` (one multiply), one FMA into the
//! sum, one FMA of `m·s8` into the min sum, the two sums added at the end — so each row
//! equals [`super::avx2_x8::dot_x8`] bit for bit.

#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::avx2_x8::PREFETCH_AHEAD;
use super::x8::{GROUP_BLOCK_BYTES, M_OFFSET, QS_OFFSET};
use crate::quant::q8_1::BlockQ8_1;
use crate::quant::x8_avx512::{fold_halves, nibble_dot, word_pairs};

/// The 8 rows of one x8 group against one activation row: the bits
/// [`super::avx2_x8::dot_x8`] gives (same contract).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI, AVX2, FMA and F16C
/// ([`crate::quant::x8_avx512::available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8_1]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = a.len().min(group.len() / GROUP_BLOCK_BYTES);
    let base = group.as_ptr();
    // SAFETY: features guaranteed by the caller. Group-block `b < nb` spans bytes
    // `b·GROUP_BLOCK_BYTES .. (b + 1)·GROUP_BLOCK_BYTES <= group.len()`, and every load stays
    // within it (scales 0..32, chunks 32..160); activation block `b < nb <= a.len()`.
    // Prefetches never fault.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut macc = _mm256_setzero_ps();
        for b in 0..nb {
            let gb = base.add(b * GROUP_BLOCK_BYTES);
            let ahead = gb.wrapping_add(PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
            let y = a.get_unchecked(b);
            // Words 0..4 meet the low nibbles of chunks 0..4, words 4..8 the high ones.
            let words = word_pairs(_mm256_loadu_si256(y.qs.as_ptr().cast()));
            let v01 = _mm512_loadu_si512(gb.add(QS_OFFSET).cast());
            let v23 = _mm512_loadu_si512(gb.add(QS_OFFSET + 64).cast());
            let isum = fold_halves(nibble_dot(v01, v23, &words));
            // [d8, s8] repeated: one conversion, then each spread to all lanes.
            let ds = _mm256_cvtph_ps(_mm_set1_epi32((y as *const BlockQ8_1).cast::<i32>().read_unaligned()));
            let (dy, sy) = (_mm256_moveldup_ps(ds), _mm256_movehdup_ps(ds));
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            let mw = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(M_OFFSET).cast()));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(isum), acc);
            macc = _mm256_fmadd_ps(mw, sy, macc);
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(acc, macc));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q4_1::{avx2_x8, BlockQ4_1};
    use crate::quant::q8_1::QK8_1;
    use crate::quant::x8_avx512::testing::{assert_same_bits, can_run, check_format, group_of};
    use crate::quant::BlockFormat;

    #[test]
    fn avx512_x8_gives_the_avx2_bits() {
        if can_run("q4_1::avx512_x8") {
            check_format(BlockFormat::Q4_1, &["q4_1_real.bin", "q4_1_random_blocks.bin"], dot_x8, avx2_x8::dot_x8);
        }
    }

    /// Every nibble 15 against activations of −128 and 127: nothing may saturate.
    #[test]
    fn avx512_x8_is_exact_at_the_extremes() {
        if !can_run("q4_1::avx512_x8") {
            return;
        }
        let nb = 3;
        let blk = BlockQ4_1 { d: crate::quant::f32_to_f16(1.0), m: crate::quant::f32_to_f16(0.5), qs: [0xFF; 16] };
        let rows: Vec<BlockQ4_1> = vec![blk; 8 * nb];
        let group = group_of(BlockFormat::Q4_1, bytemuck::cast_slice(&rows), nb);
        for q in [-128i8, 127] {
            let d = crate::quant::f32_to_f16(1.0);
            let a = vec![BlockQ8_1 { d, s: crate::quant::f32_to_f16(2.0), qs: [q; QK8_1] }; nb];
            let want = nb as f32 * (15.0 * 32.0 * q as f32 + 0.5 * 2.0);
            // SAFETY: `can_run` checked the features.
            assert_eq!(unsafe { dot_x8(&group, &a) }, [want; 8], "extreme {q}");
            assert_same_bits(&group, &a, dot_x8, avx2_x8::dot_x8, &format!("extreme {q}"));
        }
    }
}
