//! Q6_K x8 groups (layout: [`super::x8`]) against one Q8_K activation row with AVX-512
//! VNNI (the scheme: [`crate::quant::x8_avx512`]).
//!
//! Per sub-block `j` (16 elements × 8 rows, 96 bytes `V_0 V_1 V_2`): one 512-bit load holds
//! `V_0 | V_1`, whose low six bits are the quants of elements 0..4 | 4..8; the second
//! register is `V_2`'s low six bits | the fourth chunk rebuilt from the three top-bit pairs
//! (one per-half shift of `V_0 | V_1`, a fold, and `V_2`'s pair). Each register meets its
//! paired activation words in one `vpdpbusd` (4 products per lane, |Σ| ≤ 4·63·128 = 32256:
//! also an exact i16), and one `vpdpwssd` against the sub-block's scale spread as the i16
//! pair `(scale, 0)` adds `scale·Σ` into the row's sum. The halves add to the scalar code's
//! `Σ_j sc_j·Σ q·a`; the `−32·Σ sc·bsum` offset and the float steps are the AVX2 kernel's,
//! so each row equals [`super::avx2_x8::dot_x8`] (and the scalar `vec_dot`) bit for bit.

#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::avx2_x8::PREFETCH_AHEAD;
use super::x8::{GROUP_BLOCK_BYTES, QUANTS_AT, SCALES_AT, SUB_BLOCK_BYTES};
use crate::quant::q8_k::BlockQ8K;
use crate::quant::x8_avx512::{fold_halves, word_pairs};

/// Prefetch-hint spacing inside a group-block, as in the AVX2 kernel: two per sub-block.
const HINT_STRIDE: usize = GROUP_BLOCK_BYTES / 16;

/// The 8 rows of one x8 group against one activation row: the bits
/// [`super::avx2_x8::dot_x8`] gives (same contract).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI, AVX2, FMA and F16C
/// ([`crate::quant::x8_avx512::available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8K]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = a.len().min(group.len() / GROUP_BLOCK_BYTES);
    // SAFETY: features guaranteed by the caller. Every load reads inside group-block `i` of
    // `group` (a sub-block's 96 bytes at `QUANTS_AT + 96j`, j < 16, scales at
    // `SCALES_AT + 16p`, p < 8; i < nb ≤ group.len() / GROUP_BLOCK_BYTES) or inside the
    // fields of `a[i]`; prefetches never fault.
    unsafe {
        let low6 = _mm512_set1_epi8(0x3F);
        let top2 = _mm512_set1_epi8(0xC0u8 as i8);
        let low16 = _mm512_set1_epi32(0xFFFF);
        // V_0's top pairs to bits 0..2, V_1's to bits 2..4 (masked first: no bit leaves
        // its byte).
        let top_shift = _mm512_set_epi64(4, 4, 4, 4, 6, 6, 6, 6);
        let mut acc = _mm256_setzero_ps();
        for (i, y) in a[..nb].iter().enumerate() {
            let gb = group.as_ptr().add(i * GROUP_BLOCK_BYTES);
            let qs = y.qs.as_ptr();
            let bsums = y.bsums.as_ptr();
            let mut isum = _mm512_setzero_si512();
            let mut offset = _mm256_setzero_si256();
            for p in 0..8 {
                // i16 [sc[r][2p], sc[r][2p+1]] in lane r, in both halves.
                let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(gb.add(SCALES_AT + 16 * p).cast()));
                let bs = _mm256_set1_epi32(bsums.add(2 * p).cast::<i32>().read_unaligned());
                offset = _mm256_add_epi32(offset, _mm256_madd_epi16(sc, bs));
                let scz = _mm512_broadcast_i64x4(sc);
                let scale = [_mm512_and_si512(scz, low16), _mm512_srli_epi32::<16>(scz)];
                // Activation words of sub-blocks 2p (pairs 0, 1) and 2p + 1 (pairs 2, 3).
                let words = word_pairs(_mm256_loadu_si256(qs.add(32 * p).cast()));
                for (h, &scale_h) in scale.iter().enumerate() {
                    let j = 2 * p + h;
                    let pf = gb.wrapping_add(PREFETCH_AHEAD + HINT_STRIDE * j);
                    _mm_prefetch::<_MM_HINT_T0>(pf.cast());
                    _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(HINT_STRIDE / 2).cast());
                    let v = gb.add(QUANTS_AT + SUB_BLOCK_BYTES * j);
                    let b01 = _mm512_loadu_si512(v.cast());
                    let b2 = _mm256_loadu_si256(v.add(64).cast());
                    let q01 = _mm512_and_si512(b01, low6);
                    let tops = fold_or(_mm512_srlv_epi64(_mm512_and_si512(b01, top2), top_shift));
                    let q3 = _mm256_or_si256(
                        tops,
                        _mm256_srli_epi16::<2>(_mm256_and_si256(b2, _mm512_castsi512_si256(top2))),
                    );
                    let q23 = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_and_si256(b2, _mm512_castsi512_si256(low6))),
                        q3,
                    );
                    let s01 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q01, words[2 * h]);
                    let s23 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q23, words[2 * h + 1]);
                    isum = _mm512_dpwssd_epi32(isum, s01, scale_h);
                    isum = _mm512_dpwssd_epi32(isum, s23, scale_h);
                }
            }
            let isum = _mm256_sub_epi32(fold_halves(isum), _mm256_slli_epi32::<5>(offset));
            // The scalar code's `(d·d_a)·isum`, added to the running sum.
            let d = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            let dd = _mm256_mul_ps(d, _mm256_set1_ps(y.d));
            acc = _mm256_add_ps(acc, _mm256_mul_ps(dd, _mm256_cvtepi32_ps(isum)));
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }
}

/// The two 256-bit halves of `v` OR-ed.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn fold_or(v: __m512i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_or_si256(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q6_k::avx2_x8;
    use crate::quant::q6_k::x8::test_data::{constant_activations, constant_blocks, interleaved};
    use crate::quant::x8_avx512::testing::{assert_same_bits, can_run, check_format};
    use crate::quant::BlockFormat;

    #[test]
    fn avx512_x8_gives_the_avx2_bits() {
        if can_run("q6_k::avx512_x8") {
            let fixtures = ["q6_k_real.bin", "q6_k_random_blocks.bin"];
            check_format(BlockFormat::Q6_K, &fixtures, dot_x8, avx2_x8::dot_x8);
        }
    }

    /// Every quant 63 (and 0) and scale ±127/−128 against activations of −128 and 127: the
    /// 4-product sums stay exact i16, the scaled sums exact i32.
    #[test]
    fn avx512_x8_is_exact_at_the_extremes() {
        if !can_run("q6_k::avx512_x8") {
            return;
        }
        let nb = 2;
        for (q, sc) in [(63u8, 127i8), (63, -128), (0, -128), (0, 127)] {
            let group = interleaved(&constant_blocks(8, nb, q, sc), nb);
            for v in [-128i8, 127] {
                let a = constant_activations(nb, v);
                let want = nb as f32 * 0.5 * (sc as f32 * (q as f32 - 32.0) * v as f32 * 256.0);
                // SAFETY: `can_run` checked the features.
                assert_eq!(unsafe { dot_x8(&group, &a) }, [want; 8], "q {q}, sc {sc}, a {v}");
                assert_same_bits(&group, &a, dot_x8, avx2_x8::dot_x8, &format!("q {q}, sc {sc}, a {v}"));
            }
        }
    }
}
