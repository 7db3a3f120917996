//! Q4_K x8 groups (layout: [`super::x8`]) against one Q8_K activation row with AVX-512
//! VNNI (the scheme: [`crate::quant::x8_avx512`]).
//!
//! Per group-block and sub-block pair `j`: the 8 quant chunks in 4 register pairs; low
//! nibbles (sub-block `2j`) and high nibbles (`2j + 1`) against the paired activation words,
//! `vpdpbusd` into i32 lanes. Each half of a lane then holds 16 products of one row and
//! sub-block, |Σ| ≤ 16·15·128 = 30720, so the i32 is also an exact i16 and one `vpdpwssd`
//! against the sub-block's scale spread as the i16 pair `(scale, 0)` adds `scale·Σ` into
//! the row's sum. The halves add to the scalar code's `Σ_s scale·(q·q8)` of each row; the
//! mins go through the AVX2 kernel's helpers unchanged, and the float expression
//! `(d·d₈)·isum − (dmin·d₈)·summs` is the AVX2 kernel's, so each row equals
//! [`super::avx2_x8::dot_x8`] (and the scalar `vec_dot`) bit for bit.

#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::avx2_x8::{mins_sum, pair_masks, scales_and_mins, spread_mins, PREFETCH_AHEAD};
use super::x8::{GROUP_BLOCK_BYTES, QS_OFF};
use crate::quant::q8_k::BlockQ8K;
use crate::quant::x8_avx512::{fold_halves, word_pairs};

/// `vpshufb` masks over a register holding the unpacked scales in both 256-bit halves: mask
/// `s` puts, in each 128-bit lane, byte `4·s + r` (`r < 4`) into the low byte of 32-bit lane
/// `r` and zeros the other three — sub-block `s`'s scale (of four consecutive sub-blocks) as
/// the i16 pair `(scale, 0)` of each row.
const SCALE_MASKS: [[u8; 64]; 4] = {
    let mut m = [[0x80u8; 64]; 4];
    let mut s = 0;
    while s < 4 {
        let mut b = 0;
        while b < 64 {
            if b % 4 == 0 {
                m[s][b] = (4 * s + (b % 16) / 4) as u8;
            }
            b += 1;
        }
        s += 1;
    }
    m
};

/// The 8 rows of one x8 group against one activation row: the bits
/// [`super::avx2_x8::dot_x8`] gives (same contract).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI, AVX2, FMA and F16C
/// ([`crate::quant::x8_avx512::available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8K]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = (group.len() / GROUP_BLOCK_BYTES).min(a.len());
    // SAFETY: features guaranteed by the caller. Every weight load reads 16, 32 or 64 bytes
    // at `gb + off` with `off + len ≤ GROUP_BLOCK_BYTES`, `gb` group-block `i < nb`;
    // activation reads are 32 bytes at offsets ≤ 224 of the 256-byte `qs` array and the
    // `bsums` array of block `i < nb ≤ a.len()`. Prefetches never fault.
    unsafe {
        let m4 = _mm512_set1_epi8(0x0F);
        let masks = pair_masks();
        let scale_masks = SCALE_MASKS.map(|m| _mm512_loadu_si512(m.as_ptr().cast()));
        let base = group.as_ptr();
        let mut acc = _mm256_setzero_ps();
        for i in 0..nb {
            let gb = base.add(i * GROUP_BLOCK_BYTES);
            let p = gb.wrapping_add(PREFETCH_AHEAD);
            let mut line = 0;
            while line < GROUP_BLOCK_BYTES {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line).cast());
                line += 64;
            }
            let y = a.get_unchecked(i);
            let yq = y.qs.as_ptr();
            let [sc_a, sc_b, mn_a, mn_b] = scales_and_mins(gb);
            let summs = mins_sum(&spread_mins(mn_a, mn_b, &masks), y);

            let mut isum = _mm512_setzero_si512();
            for j in 0..4 {
                let sc = _mm512_broadcast_i64x4(if j < 2 { sc_a } else { sc_b });
                let sc_lo = _mm512_shuffle_epi8(sc, scale_masks[(2 * j) % 4]);
                let sc_hi = _mm512_shuffle_epi8(sc, scale_masks[(2 * j + 1) % 4]);
                let w_lo = word_pairs(_mm256_loadu_si256(yq.add(64 * j).cast()));
                let w_hi = word_pairs(_mm256_loadu_si256(yq.add(64 * j + 32).cast()));
                let q = gb.add(QS_OFF + 256 * j);
                let mut s_lo = _mm512_setzero_si512();
                let mut s_hi = _mm512_setzero_si512();
                for p in 0..4 {
                    let bits = _mm512_loadu_si512(q.add(64 * p).cast());
                    s_lo = _mm512_dpbusd_epi32(s_lo, _mm512_and_si512(bits, m4), w_lo[p]);
                    s_hi = _mm512_dpbusd_epi32(s_hi, _mm512_and_si512(_mm512_srli_epi16::<4>(bits), m4), w_hi[p]);
                }
                isum = _mm512_dpwssd_epi32(isum, s_lo, sc_lo);
                isum = _mm512_dpwssd_epi32(isum, s_hi, sc_hi);
            }
            let isum = fold_halves(isum);

            // (d·d₈)·isum − (dmin·d₈)·summs, as the scalar code orders it.
            let d = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            let dmin = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(16).cast()));
            let yd = _mm256_set1_ps(y.d);
            let scaled = _mm256_mul_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(isum));
            let mins = _mm256_mul_ps(_mm256_mul_ps(dmin, yd), _mm256_cvtepi32_ps(summs));
            acc = _mm256_add_ps(acc, _mm256_sub_ps(scaled, mins));
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q4_k::avx2_x8;
    use crate::quant::x8_avx512::testing::{can_run, check_format};
    use crate::quant::BlockFormat;

    #[test]
    fn avx512_x8_gives_the_avx2_bits() {
        if can_run("q4_k::avx512_x8") {
            let fixtures = ["q4_k_real.bin", "q4_k_random_blocks.bin"];
            check_format(BlockFormat::Q4_K, &fixtures, dot_x8, avx2_x8::dot_x8);
        }
    }
}
