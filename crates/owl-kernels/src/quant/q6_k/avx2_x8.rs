//! Q6_K decode matvec over 8 interleaved rows with AVX2 + FMA + F16C (layout: [`super::x8`]).
//!
//! For the dispatch table: `dot_x8(group: &[u8], a: &[BlockQ8K]) -> [f32; 8]`, same contract
//! as the portable [`super::x8::dot_x8`] and **bit-identical** to it (and so to the scalar
//! [`super::vec_dot`] of each row): per super-block the same exact integer
//! `Σ_j sc_j·Σ (q − 32)·a` per row, then the scalar code's `sum += (d·d_a)·isum` in f32 with
//! separate multiplies and add (an FMA would save one instruction per 8 rows and 256
//! columns, not measurable, and give up the bit-identity).
//!
//! Per sub-block of 16 elements and 8 rows (96 bytes): three loads, 11 operations rebuild
//! four vectors of 8 rows × 4 unsigned 6-bit quants (lane `r` = row `r`), each multiplied by
//! the 4 matching activation bytes broadcast (`_mm256_maddubs_epi16`: |pair| ≤ 2·63·128 =
//! 16128, so two of them add in i16 without overflow), then `_mm256_madd_epi16` against the
//! rows' sub-block scale in both i16 halves of each lane (i32, at most 2·32256·128 each).
//! The −32 offset is taken once per super-block from the Q8_K `bsums` (16 elements each,
//! exactly Q6_K's sub-blocks): `isum = Σ sc·Σ q·a − 32·Σ_j sc_j·bsum_j`, exact in i32
//! (|Σ sc·q·a| ≤ 256·128·63·128 < 2^31). No horizontal sums anywhere.
//!
//! Software prefetch: the group is one linear stream; hints [`PREFETCH_AHEAD`] bytes ahead,
//! two per sub-block (one per 52–53 bytes of group-block, so every cache line gets one).

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::{GROUP_BLOCK_BYTES, QUANTS_AT, SCALES_AT, SUB_BLOCK_BYTES};
use crate::quant::q8_k::BlockQ8K;

/// How far ahead of the sub-block being read the kernel asks for cache lines (about two
/// group-blocks). Measured on 4096 × 4096 streamed from DRAM, 1 thread, AMD EPYC (noisy
/// shared machine; best of 30–60 calls, 4 runs; % of the read bandwidth measured in the same
/// run): no hints 61–84 %, 2 KiB 82–107 %, 2.5 KiB 83–104 %, 3 KiB 86–107 %, 3.5 KiB
/// 82–105 %, 4 KiB 81–108 %, 8 KiB 83–97 %. Between 2 and 4 KiB the differences are within
/// the noise; 3 KiB was at or near the top in every run.
pub const PREFETCH_AHEAD: usize = 3072;

/// Prefetch-hint spacing inside a group-block: 1680 / 16 sub-blocks = 105 bytes per
/// sub-block, two hints 52 and 53 bytes apart.
const HINT_STRIDE: usize = GROUP_BLOCK_BYTES / 16;

/// The 8 rows of `group` against `a`; see the module header.
///
/// Lengths: `group.len() == a.len() * GROUP_BLOCK_BYTES` (debug-asserted; in release builds
/// cut to the shorter side, never reading outside either slice).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8K]) -> [f32; 8] {
    // SAFETY: same features as this function.
    unsafe { dot_x8_ahead::<PREFETCH_AHEAD>(group, a) }
}

/// [`dot_x8`] with the prefetch distance as a parameter (0: no hints), for measurements.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8_ahead<const AHEAD: usize>(group: &[u8], a: &[BlockQ8K]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = a.len().min(group.len() / GROUP_BLOCK_BYTES);
    let mut out = [0.0f32; 8];
    // SAFETY: features guaranteed by the caller. Every load reads inside group-block `i` of
    // `group` (offsets < GROUP_BLOCK_BYTES, i < nb ≤ group.len() / GROUP_BLOCK_BYTES) or
    // inside the fields of `a[i]`; prefetches never fault, so their addresses may run past
    // the end.
    unsafe {
        let low6 = _mm256_set1_epi8(0x3F);
        let top2 = _mm256_set1_epi8(0xC0u8 as i8);
        // In-lane byte shuffles of `[sc_2p, sc_2p+1]` (i16 pair in 32-bit lane r) to
        // `[sc_2p, sc_2p]` and `[sc_2p+1, sc_2p+1]`.
        #[rustfmt::skip]
        let dup = [
            _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13,
                             0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13),
            _mm256_setr_epi8(2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15,
                             2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15),
        ];
        let mut acc = _mm256_setzero_ps();
        for (i, y) in a[..nb].iter().enumerate() {
            let gb = group.as_ptr().add(i * GROUP_BLOCK_BYTES);
            let qs = y.qs.as_ptr();
            let bsums = y.bsums.as_ptr();
            let mut isum = _mm256_setzero_si256();
            let mut offset = _mm256_setzero_si256();
            for p in 0..8 {
                // i16 [sc[r][2p], sc[r][2p+1]] in lane r.
                let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(gb.add(SCALES_AT + 16 * p).cast()));
                let bs = _mm256_set1_epi32(bsums.add(2 * p).cast::<i32>().read_unaligned());
                offset = _mm256_add_epi32(offset, _mm256_madd_epi16(sc, bs));
                for (h, &dup_h) in dup.iter().enumerate() {
                    let j = 2 * p + h;
                    if AHEAD > 0 {
                        let pf = gb.wrapping_add(AHEAD + HINT_STRIDE * j);
                        _mm_prefetch::<_MM_HINT_T0>(pf.cast());
                        _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(HINT_STRIDE / 2).cast());
                    }
                    let v = gb.add(QUANTS_AT + SUB_BLOCK_BYTES * j);
                    let b0 = _mm256_loadu_si256(v.cast());
                    let b1 = _mm256_loadu_si256(v.add(32).cast());
                    let b2 = _mm256_loadu_si256(v.add(64).cast());
                    // Elements 0..4, 4..8, 8..12 of the sub-block: bits 0..6; elements 12..16:
                    // the three top bit pairs (masked first, so the 16-bit shifts move no bits
                    // across bytes).
                    let q0 = _mm256_and_si256(b0, low6);
                    let q1 = _mm256_and_si256(b1, low6);
                    let q2 = _mm256_and_si256(b2, low6);
                    let q3 = _mm256_or_si256(
                        _mm256_or_si256(
                            _mm256_srli_epi16::<6>(_mm256_and_si256(b0, top2)),
                            _mm256_srli_epi16::<4>(_mm256_and_si256(b1, top2)),
                        ),
                        _mm256_srli_epi16::<2>(_mm256_and_si256(b2, top2)),
                    );
                    let act = |c: usize| _mm256_set1_epi32(qs.add(16 * j + 4 * c).cast::<i32>().read_unaligned());
                    let p01 = _mm256_add_epi16(_mm256_maddubs_epi16(q0, act(0)), _mm256_maddubs_epi16(q1, act(1)));
                    let p23 = _mm256_add_epi16(_mm256_maddubs_epi16(q2, act(2)), _mm256_maddubs_epi16(q3, act(3)));
                    let s = _mm256_shuffle_epi8(sc, dup_h);
                    isum =
                        _mm256_add_epi32(isum, _mm256_add_epi32(_mm256_madd_epi16(p01, s), _mm256_madd_epi16(p23, s)));
                }
            }
            isum = _mm256_sub_epi32(isum, _mm256_slli_epi32::<5>(offset));
            // The scalar code's `(d·d_a)·isum`, added to the running sum.
            let d = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            let dd = _mm256_mul_ps(d, _mm256_set1_ps(y.d));
            acc = _mm256_add_ps(acc, _mm256_mul_ps(dd, _mm256_cvtepi32_ps(isum)));
        }
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
    }
    out
}

/// The 8 rows of `group` against `T` activation rows: for each token the integers and float
/// operations of [`dot_x8`], so each token's results are the bits a [`dot_x8`] call gives it
/// (a batch-invariant decode step of several sequences). Each sub-block's 6-bit quants are
/// rebuilt, and its scales spread, once for all `T` tokens.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8_tokens<const T: usize>(group: &[u8], a: [&[BlockQ8K]; T]) -> [[f32; 8]; T] {
    debug_assert!(a.iter().all(|a| group.len() == a.len() * GROUP_BLOCK_BYTES));
    let nb = a.iter().fold(group.len() / GROUP_BLOCK_BYTES, |n, a| n.min(a.len()));
    // SAFETY: as in `dot_x8_ahead`, for every token: every load reads inside group-block
    // `i < nb` of `group` or inside the fields of `a[t][i]`; prefetches never fault.
    unsafe {
        let low6 = _mm256_set1_epi8(0x3F);
        let top2 = _mm256_set1_epi8(0xC0u8 as i8);
        #[rustfmt::skip]
        let dup = [
            _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13,
                             0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13),
            _mm256_setr_epi8(2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15,
                             2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15),
        ];
        let mut acc = [_mm256_setzero_ps(); T];
        for i in 0..nb {
            let gb = group.as_ptr().add(i * GROUP_BLOCK_BYTES);
            let mut isum = [_mm256_setzero_si256(); T];
            let mut offset = [_mm256_setzero_si256(); T];
            for p in 0..8 {
                let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(gb.add(SCALES_AT + 16 * p).cast()));
                for t in 0..T {
                    let bsums = a[t].get_unchecked(i).bsums.as_ptr();
                    let bs = _mm256_set1_epi32(bsums.add(2 * p).cast::<i32>().read_unaligned());
                    offset[t] = _mm256_add_epi32(offset[t], _mm256_madd_epi16(sc, bs));
                }
                for (h, &dup_h) in dup.iter().enumerate() {
                    let j = 2 * p + h;
                    let pf = gb.wrapping_add(PREFETCH_AHEAD + HINT_STRIDE * j);
                    _mm_prefetch::<_MM_HINT_T0>(pf.cast());
                    _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(HINT_STRIDE / 2).cast());
                    let v = gb.add(QUANTS_AT + SUB_BLOCK_BYTES * j);
                    let b0 = _mm256_loadu_si256(v.cast());
                    let b1 = _mm256_loadu_si256(v.add(32).cast());
                    let b2 = _mm256_loadu_si256(v.add(64).cast());
                    let q0 = _mm256_and_si256(b0, low6);
                    let q1 = _mm256_and_si256(b1, low6);
                    let q2 = _mm256_and_si256(b2, low6);
                    let q3 = _mm256_or_si256(
                        _mm256_or_si256(
                            _mm256_srli_epi16::<6>(_mm256_and_si256(b0, top2)),
                            _mm256_srli_epi16::<4>(_mm256_and_si256(b1, top2)),
                        ),
                        _mm256_srli_epi16::<2>(_mm256_and_si256(b2, top2)),
                    );
                    let s = _mm256_shuffle_epi8(sc, dup_h);
                    for t in 0..T {
                        let qs = a[t].get_unchecked(i).qs.as_ptr().add(16 * j);
                        let act = |c: usize| _mm256_set1_epi32(qs.add(4 * c).cast::<i32>().read_unaligned());
                        let p01 = _mm256_add_epi16(_mm256_maddubs_epi16(q0, act(0)), _mm256_maddubs_epi16(q1, act(1)));
                        let p23 = _mm256_add_epi16(_mm256_maddubs_epi16(q2, act(2)), _mm256_maddubs_epi16(q3, act(3)));
                        isum[t] = _mm256_add_epi32(
                            isum[t],
                            _mm256_add_epi32(_mm256_madd_epi16(p01, s), _mm256_madd_epi16(p23, s)),
                        );
                    }
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            for t in 0..T {
                let isum = _mm256_sub_epi32(isum[t], _mm256_slli_epi32::<5>(offset[t]));
                let dd = _mm256_mul_ps(d, _mm256_set1_ps(a[t].get_unchecked(i).d));
                acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(dd, _mm256_cvtepi32_ps(isum)));
            }
        }
        let mut out = [[0.0f32; 8]; T];
        for t in 0..T {
            _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::x8::{self, test_data::*};
    use super::*;

    fn avx2() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }

    /// The kernel against the portable reference, bit for bit (tolerance 0: both evaluate the
    /// same exact integers and the same float expression in the same order).
    fn check(rows: &[u8], nb: usize, a: &[BlockQ8K], what: &str) {
        let g = interleaved(rows, nb);
        let want = x8::dot_x8(&g, a);
        // SAFETY: the callers checked the CPU features.
        let got = unsafe { dot_x8(&g, a) };
        let no_prefetch = unsafe { dot_x8_ahead::<0>(&g, a) };
        for r in 0..8 {
            assert_eq!(got[r].to_bits(), want[r].to_bits(), "{what} row {r}: {} vs {}", got[r], want[r]);
            assert_eq!(no_prefetch[r].to_bits(), want[r].to_bits(), "{what} row {r} (no prefetch)");
        }
        // And the scalar row-major kernel, as a check of the reference itself.
        assert_eq!(want.map(f32::to_bits), row_dots(rows, nb, a).map(f32::to_bits), "{what}");
    }

    #[test]
    fn dot_x8_matches_reference_on_random_data() {
        if !avx2() {
            eprintln!("skipped: CPU lacks avx2/fma/f16c");
            return;
        }
        for (nb, seed) in [(1, 41), (2, 42), (3, 43), (16, 44)] {
            let a = activations(nb, seed + 100);
            check(&quantized_rows(8, nb, seed), nb, &a, &format!("quantized nb {nb}"));
            check(&random_blocks(8, nb, seed + 200), nb, &a, &format!("random bytes nb {nb}"));
        }
    }

    #[test]
    fn dot_x8_matches_reference_at_the_extremes() {
        if !avx2() {
            eprintln!("skipped: CPU lacks avx2/fma/f16c");
            return;
        }
        // Largest i16 pair sums (63·±128 twice) and largest scales of both signs.
        for (q, sc, v) in [(63u8, -128i8, 127i8), (63, -128, -128), (0, 127, -128), (63, 127, 127), (0, -128, 127)] {
            check(&constant_blocks(8, 3, q, sc), 3, &constant_activations(3, v), &format!("q {q} sc {sc} a {v}"));
        }
    }

    /// Real Q6_K blocks (64 of a demo model's tensor) and the fixture's random blocks, as
    /// 8 rows each.
    #[test]
    fn dot_x8_matches_reference_on_fixture_blocks() {
        if !avx2() {
            eprintln!("skipped: CPU lacks avx2/fma/f16c");
            return;
        }
        for name in ["quants/q6_k_real.bin", "quants/q6_k_random_blocks.bin"] {
            let path = owl_test::fixture(name);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let nb = bytes.len() / GROUP_BLOCK_BYTES;
            assert!(nb >= 1, "{name}: fewer than 8 blocks");
            let rows = &bytes[..nb * GROUP_BLOCK_BYTES];
            check(rows, nb, &activations(nb, 77), name);
        }
    }

    #[test]
    fn dot_x8_uses_only_whole_blocks_of_both_sides() {
        if !avx2() {
            eprintln!("skipped: CPU lacks avx2/fma/f16c");
            return;
        }
        let nb = 2;
        let rows = quantized_rows(8, nb, 51);
        let g = interleaved(&rows, nb);
        let a = activations(nb, 52);
        // SAFETY: CPU features checked above.
        let zero = unsafe { dot_x8(&[], &[]) };
        assert_eq!(zero, [0.0; 8]);
        let one = unsafe { dot_x8(&g[..GROUP_BLOCK_BYTES], &a[..1]) };
        assert_eq!(one.map(f32::to_bits), x8::dot_x8(&g[..GROUP_BLOCK_BYTES], &a[..1]).map(f32::to_bits));
    }
}
