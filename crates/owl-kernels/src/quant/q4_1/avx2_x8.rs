//! Q4_1 x8 groups (layout: [`super::x8`]) against one Q8_1 activation row with AVX2 + FMA +
//! F16C: the decode matvec kernel over 8 interleaved rows.
//!
//! Per group-block: each 32-byte quant chunk `c` holds 4 bytes of each of the 8 rows; its low
//! and high nibbles (unsigned 0..=15, the `_mm256_maddubs_epi16` operand as stored) meet the
//! activation bytes `qs[4c..4c+4]` and `qs[16+4c..16+4c+4]` broadcast to all lanes, so
//! `maddubs` leaves row r's pair sums in i16 lanes `2r, 2r+1`. The 8 products of a block are
//! summed in i16 (each pair within ±15·128·2 = ±3840, 8 of them within ±30720: exact) and
//! widened once by `_mm256_madd_epi16` to one i32 per row — the scalar code's block sum
//! `Σq·a`. Then `d·d8` for the 8 rows (one `vcvtph2ps`, one multiply: the scalar
//! `x.d() * y.d()`), one FMA into the sum, and one more FMA for the min terms `m·s8`, kept in
//! their own accumulator. No horizontal sums: lane r is row r. Results equal
//! [`super::x8::dot_x8`] up to float reassociation (the min terms are summed apart).
//!
//! The group is one linear stream (and the next group follows it), so a software prefetch
//! [`PREFETCH_AHEAD`] bytes ahead, three hints (192 bytes) per group-block, keeps DRAM
//! busy. Measured on Zen 3, 4096×4096 streamed from DRAM, kernel alone, % of the read
//! bandwidth of a plain AVX2 sum loop in the same run (noisy, shared machine): no prefetch
//! 65-89 %, 1 KiB 75-102 %, 2-4 KiB 81-113 % (no consistent difference within 2-4 KiB).
//!
//! Lengths: debug-asserted; in release builds cut to the shorter side, never read out of
//! bounds.

// Register-only intrinsics are safe inside `#[target_feature]` functions from Rust 1.87 on,
// which makes some of the `unsafe` blocks below redundant there: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::{GROUP_BLOCK_BYTES, M_OFFSET, QS_OFFSET};
use crate::quant::q8_1::BlockQ8_1;

/// Distance of the software prefetch ahead of the group-block being read, in bytes.
pub const PREFETCH_AHEAD: usize = 2048;

/// The 8 rows of one x8 group against one activation row; see the module header and
/// [`super::x8::dot_x8`] (same contract).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8_1]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = a.len().min(group.len() / GROUP_BLOCK_BYTES);
    let base = group.as_ptr();
    // SAFETY: features guaranteed by the caller. Group-block `b < nb` spans bytes
    // `b·GROUP_BLOCK_BYTES .. (b + 1)·GROUP_BLOCK_BYTES <= group.len()`, and every load below
    // stays within its group-block (scales 0..32, chunks 32..160); activation block `b < nb
    // <= a.len()`. Prefetches never fault, so their addresses may run past the end.
    unsafe {
        let low4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut macc = _mm256_setzero_ps();
        for b in 0..nb {
            let gb = base.add(b * GROUP_BLOCK_BYTES);
            let ahead = gb.wrapping_add(PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
            let y = a.get_unchecked(b);
            let yq = y.qs.as_ptr();
            let mut s16 = _mm256_setzero_si256();
            for c in 0..4 {
                let v = _mm256_loadu_si256(gb.add(QS_OFFSET + 32 * c).cast());
                let lo = _mm256_and_si256(v, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
                let alo = _mm256_set1_epi32(yq.add(4 * c).cast::<i32>().read_unaligned());
                let ahi = _mm256_set1_epi32(yq.add(16 + 4 * c).cast::<i32>().read_unaligned());
                s16 = _mm256_add_epi16(
                    s16,
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, alo), _mm256_maddubs_epi16(hi, ahi)),
                );
            }
            let isum = _mm256_madd_epi16(s16, ones);
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

/// The 8 rows of one x8 group against `T` activation rows: for each token exactly the
/// operations of [`dot_x8`], in the same order, so each token's 8 results are the same bits
/// a [`dot_x8`] call gives (what a batch-invariant decode step needs). Each weight chunk is
/// loaded and split into nibbles once for all `T` tokens, and the block's scales converted
/// once, instead of once per token.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8_tokens<const T: usize>(group: &[u8], a: [&[BlockQ8_1]; T]) -> [[f32; 8]; T] {
    let nb = a.iter().fold(group.len() / GROUP_BLOCK_BYTES, |n, a| n.min(a.len()));
    debug_assert!(a.iter().all(|a| group.len() == a.len() * GROUP_BLOCK_BYTES));
    let base = group.as_ptr();
    // SAFETY: as in `dot_x8`, for every token: group-block `b < nb` lies within `group`,
    // activation block `b < nb <= a[t].len()`.
    unsafe {
        let low4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        let mut macc = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let gb = base.add(b * GROUP_BLOCK_BYTES);
            let ahead = gb.wrapping_add(PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
            let mut s16 = [_mm256_setzero_si256(); T];
            for c in 0..4 {
                let v = _mm256_loadu_si256(gb.add(QS_OFFSET + 32 * c).cast());
                let lo = _mm256_and_si256(v, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
                for t in 0..T {
                    let yq = a[t].get_unchecked(b).qs.as_ptr();
                    let alo = _mm256_set1_epi32(yq.add(4 * c).cast::<i32>().read_unaligned());
                    let ahi = _mm256_set1_epi32(yq.add(16 + 4 * c).cast::<i32>().read_unaligned());
                    s16[t] = _mm256_add_epi16(
                        s16[t],
                        _mm256_add_epi16(_mm256_maddubs_epi16(lo, alo), _mm256_maddubs_epi16(hi, ahi)),
                    );
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            let mw = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(M_OFFSET).cast()));
            for t in 0..T {
                let y = a[t].get_unchecked(b);
                let isum = _mm256_madd_epi16(s16[t], ones);
                let ds = _mm256_cvtph_ps(_mm_set1_epi32((y as *const BlockQ8_1).cast::<i32>().read_unaligned()));
                let (dy, sy) = (_mm256_moveldup_ps(ds), _mm256_movehdup_ps(ds));
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(isum), acc[t]);
                macc[t] = _mm256_fmadd_ps(mw, sy, macc[t]);
            }
        }
        let mut out = [[0.0f32; 8]; T];
        for t in 0..T {
            _mm256_storeu_ps(out[t].as_mut_ptr(), _mm256_add_ps(acc[t], macc[t]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q4_1::x8::{self, interleave, tests::random_case};
    use crate::quant::q4_1::BlockQ4_1;
    use crate::quant::q8_1::{self, QK8_1};
    use crate::quant::test_values;

    /// Σ over blocks of |d·d8·Σq·a| + |m·s8| for each row: the scale of the float rounding.
    fn magnitudes(group: &[u8], a: &[BlockQ8_1]) -> [f32; 8] {
        let mut mag = [0.0f32; 8];
        for (b, y) in a.iter().enumerate() {
            let gb = &group[b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
            let one = std::slice::from_ref(y);
            let t = x8::dot_x8(gb, one);
            // Split the block's value into its two terms to bound both.
            for (r, m) in mag.iter_mut().enumerate() {
                let mw = crate::quant::f16_to_f32([gb[M_OFFSET + 2 * r], gb[M_OFFSET + 2 * r + 1]]);
                let min_term = mw * y.s();
                *m += (t[r] - min_term).abs() + min_term.abs();
            }
        }
        mag
    }

    fn check(group: &[u8], a: &[BlockQ8_1], what: &str) {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")) {
            eprintln!("skipped: no AVX2/FMA/F16C");
            return;
        }
        let want = x8::dot_x8(group, a);
        // SAFETY: features checked above.
        let got = unsafe { dot_x8(group, a) };
        let mag = magnitudes(group, a);
        for r in 0..8 {
            let tol = 1e-6 * mag[r];
            assert!((got[r] - want[r]).abs() <= tol, "{what} row {r}: {} vs {} (tol {tol})", got[r], want[r]);
        }
    }

    #[test]
    fn avx2_x8_matches_scalar_x8_on_random_rows() {
        for (nb, seed) in [(1, 31), (2, 37), (5, 41), (16, 43), (128, 47)] {
            let (w, a) = random_case(nb, seed);
            let mut group = vec![0u8; w.len()];
            interleave(&w, nb, &mut group);
            check(&group, &a, &format!("nb {nb}"));
        }
    }

    /// The fixtures' real (model) blocks and random-bit blocks as 8 rows each, against a
    /// random activation row.
    #[test]
    fn avx2_x8_matches_scalar_x8_on_fixture_blocks() {
        for name in ["q4_1_real.bin", "q4_1_random_blocks.bin"] {
            let bytes = std::fs::read(owl_test::fixture(&format!("quants/{name}"))).expect("fixture");
            assert_eq!(bytes.len() % GROUP_BLOCK_BYTES, 0, "{name}: whole groups");
            let nb = bytes.len() / GROUP_BLOCK_BYTES;
            let blocks: &[BlockQ4_1] = bytemuck::cast_slice(&bytes);
            assert!(blocks.iter().all(|b| b.d().is_finite() && b.m().is_finite()), "{name}");
            let act = test_values(nb * QK8_1, 53, 0.5, 2.0);
            let mut a = vec![BlockQ8_1 { d: [0; 2], s: [0; 2], qs: [0; QK8_1] }; nb];
            q8_1::quantize(&act, &mut a);
            let mut group = vec![0u8; bytes.len()];
            interleave(&bytes, nb, &mut group);
            check(&group, &a, name);
        }
    }

    /// Several tokens at once give each token the bits of a one-token call.
    #[test]
    fn tokens_kernel_is_bit_identical_to_dot_x8() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")) {
            eprintln!("skipped: no AVX2/FMA/F16C");
            return;
        }
        for nb in [1, 3, 18] {
            let (w, _) = random_case(nb, 59);
            let mut group = vec![0u8; w.len()];
            interleave(&w, nb, &mut group);
            let acts: Vec<Vec<BlockQ8_1>> = (0..4).map(|t| random_case(nb, 61 + t).1).collect();
            // SAFETY: features checked above.
            let one: Vec<[f32; 8]> = acts.iter().map(|a| unsafe { dot_x8(&group, a) }).collect();
            let bits = |v: &[[f32; 8]]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
            // SAFETY: features checked above.
            let four = unsafe { dot_x8_tokens::<4>(&group, [&acts[0], &acts[1], &acts[2], &acts[3]]) };
            assert_eq!(bits(&four), bits(&one), "nb {nb}, 4 tokens");
            // SAFETY: features checked above.
            let two = unsafe { dot_x8_tokens::<2>(&group, [&acts[2], &acts[0]]) };
            assert_eq!(bits(&two), bits(&[one[2], one[0]]), "nb {nb}, 2 tokens");
        }
    }

    /// The extremes: every nibble 15 against activations of -128 (beyond the quantizer's
    /// range, still exact in i16) and 127: the integer sums must not saturate.
    #[test]
    fn avx2_x8_is_exact_at_the_extremes() {
        let nb = 3;
        let blk = BlockQ4_1 { d: crate::quant::f32_to_f16(1.0), m: crate::quant::f32_to_f16(0.5), qs: [0xFF; 16] };
        let rows: Vec<BlockQ4_1> = vec![blk; 8 * nb];
        let w: &[u8] = bytemuck::cast_slice(&rows);
        let mut group = vec![0u8; w.len()];
        interleave(w, nb, &mut group);
        for q in [-128i8, 127] {
            let a =
                vec![
                    BlockQ8_1 { d: crate::quant::f32_to_f16(1.0), s: crate::quant::f32_to_f16(2.0), qs: [q; QK8_1] };
                    nb
                ];
            let want = nb as f32 * (15.0 * 32.0 * q as f32 + 0.5 * 2.0);
            assert_eq!(x8::dot_x8(&group, &a), [want; 8]);
            check(&group, &a, &format!("extreme {q}"));
        }
    }
}
