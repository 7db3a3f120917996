//! Q5_0 x8 groups (layout: [`super::x8`]) against one Q8_0 activation row with AVX-512
//! VNNI (the scheme: [`crate::quant::x8_avx512`]).
//!
//! Per group-block: chunks 0–1 and 2–3 in one register each. The fifth-bit planes are loaded
//! into both halves and shifted per 64-bit lane so that the half holding chunk `c` brings
//! plane `2c` (low nibbles) or `2c + 1` (high nibbles) to bit 4 of every byte — the AVX2
//! kernel's byte-local shifts, two planes at once — and one `vpternlogd` merges them with
//! the nibbles into the unsigned 5-bit quants. 4 `vpdpbusd` against the paired activation
//! words give `Σq·a`; 4 more with the constant 16 give `16·Σa` (split over the lanes the
//! same way), and the halves' difference is the scalar block sum `Σ(q − 16)·a` of each
//! row, exactly. Then the AVX2 kernel's float steps (`d·d8`, one FMA), so each row equals
//! [`super::avx2_x8::dot_x8`] bit for bit.

#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::avx2_x8::PREFETCH_AHEAD;
use super::x8::{GROUP_BLOCK_BYTES, QH_OFFSET, QS_OFFSET};
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::x8_avx512::{constant_dot, fold_halves, quant_dot, word_pairs};

/// Shift counts per 64-bit lane (4 lanes a half) that bring plane `lo_plane` (low half) and
/// `hi_plane` (high half) to bit 4: left by `4 − j` for `j < 4`, right by `j − 4` above.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn plane_bits(planes: __m512i, lo_plane: i64, hi_plane: i64) -> __m512i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let count = |j: i64| if j < 4 { 4 - j } else { 0 };
        let left = _mm512_set_epi64(
            count(hi_plane),
            count(hi_plane),
            count(hi_plane),
            count(hi_plane),
            count(lo_plane),
            count(lo_plane),
            count(lo_plane),
            count(lo_plane),
        );
        let count = |j: i64| if j < 4 { 0 } else { j - 4 };
        let right = _mm512_set_epi64(
            count(hi_plane),
            count(hi_plane),
            count(hi_plane),
            count(hi_plane),
            count(lo_plane),
            count(lo_plane),
            count(lo_plane),
            count(lo_plane),
        );
        // Within a byte, bit 4 comes from bit 4 − left + right ≤ 7 of the same byte: the
        // 64-bit shifts carry bits across bytes only into positions the caller's mask drops.
        _mm512_srlv_epi64(_mm512_sllv_epi64(planes, left), right)
    }
}

/// `nibbles | (plane_bits & 0x10)`: the 5-bit quants.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn merge(nibbles: __m512i, bits: __m512i) -> __m512i {
    // A | (B & C): 0xF0 | (0xCC & 0xAA).
    // SAFETY: register-only intrinsics.
    unsafe { _mm512_ternarylogic_epi32::<0xF8>(nibbles, bits, _mm512_set1_epi8(0x10)) }
}

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
    let base = group.as_ptr();
    // SAFETY: features guaranteed by the caller. Group-block `b < nb` spans bytes
    // `b·GROUP_BLOCK_BYTES .. (b + 1)·GROUP_BLOCK_BYTES <= group.len()`, and every load stays
    // within it (scales 0..16, planes 16..48, chunks 48..176); activation block
    // `b < nb <= a.len()`. Prefetches never fault.
    unsafe {
        let low4 = _mm512_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let gb = base.add(b * GROUP_BLOCK_BYTES);
            let ahead = gb.wrapping_add(PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
            let y = a.get_unchecked(b);
            // Words 0..4 meet the low nibbles of chunks 0..4, words 4..8 the high ones.
            let words = word_pairs(_mm256_loadu_si256(y.qs.as_ptr().cast()));
            let planes = _mm512_broadcast_i64x4(_mm256_loadu_si256(gb.add(QH_OFFSET).cast()));
            let v01 = _mm512_loadu_si512(gb.add(QS_OFFSET).cast());
            let v23 = _mm512_loadu_si512(gb.add(QS_OFFSET + 64).cast());
            let lo01 = merge(_mm512_and_si512(v01, low4), plane_bits(planes, 0, 2));
            let hi01 = merge(_mm512_and_si512(_mm512_srli_epi16::<4>(v01), low4), plane_bits(planes, 1, 3));
            let lo23 = merge(_mm512_and_si512(v23, low4), plane_bits(planes, 4, 6));
            let hi23 = merge(_mm512_and_si512(_mm512_srli_epi16::<4>(v23), low4), plane_bits(planes, 5, 7));
            let isum = quant_dot([lo01, hi01, lo23, hi23], &words);
            let isum = fold_halves(_mm512_sub_epi32(isum, constant_dot(16, &words)));
            let dy = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(y.d)));
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
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
    use crate::quant::q5_0::{avx2_x8, BlockQ5_0};
    use crate::quant::q8_0::QK8_0;
    use crate::quant::x8_avx512::testing::{assert_same_bits, can_run, check_format, group_of};
    use crate::quant::BlockFormat;

    #[test]
    fn avx512_x8_gives_the_avx2_bits() {
        if can_run("q5_0::avx512_x8") {
            check_format(BlockFormat::Q5_0, &["q5_0_real.bin", "q5_0_random_blocks.bin"], dot_x8, avx2_x8::dot_x8);
        }
    }

    /// Every quant 31 (and 0) against activations of −128 and 127: nothing may saturate.
    #[test]
    fn avx512_x8_is_exact_at_the_extremes() {
        if !can_run("q5_0::avx512_x8") {
            return;
        }
        let nb = 3;
        for (qs, qh, code) in [(0xFFu8, 0xFFu8, 31.0f32), (0, 0, 0.0)] {
            let blk = BlockQ5_0 { d: crate::quant::f32_to_f16(1.0), qh: [qh; 4], qs: [qs; 16] };
            let rows: Vec<BlockQ5_0> = vec![blk; 8 * nb];
            let group = group_of(BlockFormat::Q5_0, bytemuck::cast_slice(&rows), nb);
            for q in [-128i8, 127] {
                let a = vec![BlockQ8_0 { d: crate::quant::f32_to_f16(1.0), qs: [q; QK8_0] }; nb];
                let want = nb as f32 * ((code - 16.0) * 32.0 * q as f32);
                // SAFETY: `can_run` checked the features.
                assert_eq!(unsafe { dot_x8(&group, &a) }, [want; 8], "extreme {q}, code {code}");
                assert_same_bits(&group, &a, dot_x8, avx2_x8::dot_x8, &format!("extreme {q}, code {code}"));
            }
        }
    }
}
