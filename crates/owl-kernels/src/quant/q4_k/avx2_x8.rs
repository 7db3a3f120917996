//! Q4_K 8-row interleaved decode kernel with AVX2 + FMA + F16C (layout: [`super::x8`]).
//!
//! Per group-block (8 rows × one super-block, 1152 bytes) and pair `j` of sub-blocks, the 8
//! 32-byte registers of quants are split into low nibbles (sub-block `2j`) and high nibbles
//! (sub-block `2j + 1`); each is multiplied by a broadcast 4-byte chunk of the activations
//! with `_mm256_maddubs_epi16` (unsigned quants × signed Q8_K, lane `r` = row `r`) and the 8
//! products of a sub-block summed in i16: |sum| ≤ 8 · 2 · 15 · 128 = 30720 < 2¹⁵, exact.
//! `_mm256_madd_epi16` against the rows' sub-block scales (an i16 pair per lane) gives the
//! scaled i32 per row. The mins go through the activations' `bsums` the same way (each
//! `bsums` pair against the min in both halves, so no i16 pair sum can wrap). The two
//! integers per row are those of the scalar [`super::vec_dot`], exactly, and the float
//! expression `(d·d₈)·isum − (dmin·d₈)·summs` is evaluated lane-wise in the scalar code's order
//! (no FMA), so row `r` of the result equals `vec_dot` of that row **bit for bit**.
//!
//! The 128 six-bit scales and mins of a group-block unpack with a few masks and shifts into
//! four registers (scales of sub-blocks 0..4, 4..8, mins likewise); one `_mm256_shuffle_epi8`
//! per sub-block spreads a sub-block's 8 values into the i16 pairs.
//!
//! Prefetch: the kernel streams one linear run of memory (the group, and after it the next
//! group of the matrix), so one hint per cache line, [`PREFETCH_AHEAD`] bytes ahead, keeps
//! DRAM busy: without it a 4096 × 4096 matvec streamed from DRAM ran at 54–61 % of the read
//! bandwidth, with it at 81–101 % (measured, Zen 3, one thread).

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::{GROUP_BLOCK_BYTES, QS_OFF};
use crate::quant::q8_k::BlockQ8K;

/// Bytes ahead of the group-block being read that the kernel prefetches. Measured on Zen 3
/// (4096 × 4096 streamed from DRAM, one thread, 2–16 KiB swept): 8 KiB was the best in every
/// round (92–101 % of a plain read loop over the same copies), 2 KiB 67–90 %, 16 KiB and more
/// lose again. Spreading the hints over the group-block instead of issuing them together made
/// no difference.
pub const PREFETCH_AHEAD: usize = 8192;

/// `_mm256_shuffle_epi8` masks: mask `s` takes, in each 128-bit lane, byte `4·s + r`
/// (`r < 4`) into both i16 halves of 32-bit lane `r` (high bytes zero): sub-block `s`'s
/// values (of four consecutive sub-blocks) for the lane's four rows, as the i16 pairs
/// `_mm256_madd_epi16` multiplies.
const PAIR_MASKS: [[u8; 32]; 4] = {
    let mut m = [[0x80u8; 32]; 4];
    let mut s = 0;
    while s < 4 {
        let mut b = 0;
        while b < 32 {
            if b % 2 == 0 {
                m[s][b] = (4 * s + (b % 16) / 4) as u8;
            }
            b += 1;
        }
        s += 1;
    }
    m
};

/// [`PAIR_MASKS`] as registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn pair_masks() -> [__m256i; 4] {
    // SAFETY: loads of 32-byte constant arrays.
    unsafe { PAIR_MASKS.map(|m| _mm256_loadu_si256(m.as_ptr().cast())) }
}

/// The 128 six-bit values of the group-block at `gb` (layout table in `x8`): the scales of
/// sub-blocks 0..4 and 4..8, then the mins likewise, each 128-bit lane one half of the rows.
/// Low nibbles of values v and v + 64 share byte v, top bits of v, v + 32, v + 64, v + 96
/// share byte v.
///
/// # Safety
/// AVX2; `gb` valid for a group-block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn scales_and_mins(gb: *const u8) -> [__m256i; 4] {
    // SAFETY: loads of bytes 32..128 of the group-block, the caller's contract.
    unsafe {
        let (m4, m6hi) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
        let lo0 = _mm256_loadu_si256(gb.add(32).cast());
        let lo1 = _mm256_loadu_si256(gb.add(64).cast());
        let hi = _mm256_loadu_si256(gb.add(96).cast());
        [
            _mm256_or_si256(_mm256_and_si256(lo0, m4), _mm256_and_si256(_mm256_slli_epi16::<4>(hi), m6hi)),
            _mm256_or_si256(_mm256_and_si256(lo1, m4), _mm256_and_si256(_mm256_slli_epi16::<2>(hi), m6hi)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(lo0), m4), _mm256_and_si256(hi, m6hi)),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(lo1), m4),
                _mm256_and_si256(_mm256_srli_epi16::<2>(hi), m6hi),
            ),
        ]
    }
}

/// The 8 sub-blocks' mins spread into the i16 pairs of [`PAIR_MASKS`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn spread_mins(mn_a: __m256i, mn_b: __m256i, masks: &[__m256i; 4]) -> [__m256i; 8] {
    // SAFETY: register-only intrinsics.
    unsafe {
        [
            _mm256_shuffle_epi8(mn_a, masks[0]),
            _mm256_shuffle_epi8(mn_a, masks[1]),
            _mm256_shuffle_epi8(mn_a, masks[2]),
            _mm256_shuffle_epi8(mn_a, masks[3]),
            _mm256_shuffle_epi8(mn_b, masks[0]),
            _mm256_shuffle_epi8(mn_b, masks[1]),
            _mm256_shuffle_epi8(mn_b, masks[2]),
            _mm256_shuffle_epi8(mn_b, masks[3]),
        ]
    }
}

/// Σ_s m·(bsums[2s] + bsums[2s+1]) per row, each product in i32 (exact for any bsums). The
/// pair (bsums[2s], bsums[2s+1]) is i32 element s of the bsums, spread from one 128-bit half
/// by a dword shuffle.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn mins_sum(mins: &[__m256i; 8], y: &BlockQ8K) -> __m256i {
    // SAFETY: a load of the 32-byte `bsums` array, then register-only intrinsics.
    unsafe {
        let bs = _mm256_loadu_si256(y.bsums.as_ptr().cast());
        let bs_a = _mm256_permute2x128_si256::<0x00>(bs, bs);
        let bs_b = _mm256_permute2x128_si256::<0x11>(bs, bs);
        let half = |m: &[__m256i], bs: __m256i| {
            _mm256_add_epi32(
                _mm256_add_epi32(
                    _mm256_madd_epi16(m[0], _mm256_shuffle_epi32::<0x00>(bs)),
                    _mm256_madd_epi16(m[1], _mm256_shuffle_epi32::<0x55>(bs)),
                ),
                _mm256_add_epi32(
                    _mm256_madd_epi16(m[2], _mm256_shuffle_epi32::<0xAA>(bs)),
                    _mm256_madd_epi16(m[3], _mm256_shuffle_epi32::<0xFF>(bs)),
                ),
            )
        };
        _mm256_add_epi32(half(&mins[..4], bs_a), half(&mins[4..], bs_b))
    }
}

/// The 8 rows of one group against one activation row; the contract of
/// [`super::x8::dot_x8`], which it equals bit for bit.
///
/// `group.len()` must be `a.len() · GROUP_BLOCK_BYTES` (debug-asserted; in release builds the
/// shorter side wins, nothing is read outside either slice).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8K]) -> [f32; 8] {
    // SAFETY: same features as this function.
    unsafe { dot_x8_ahead::<PREFETCH_AHEAD>(group, a) }
}

/// [`dot_x8`] with the prefetch distance `AHEAD` in bytes (0: no software prefetch).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8_ahead<const AHEAD: usize>(group: &[u8], a: &[BlockQ8K]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = (group.len() / GROUP_BLOCK_BYTES).min(a.len());
    let mut out = [0.0f32; 8];
    // SAFETY: features guaranteed by the caller. Every weight load reads 16 or 32 bytes at
    // `gb + off` with `off + len ≤ GROUP_BLOCK_BYTES` (offsets from the layout table), and
    // `gb = base + i·GROUP_BLOCK_BYTES` with `i < nb ≤ group.len() / GROUP_BLOCK_BYTES`;
    // activation reads are 4 bytes at offsets ≤ 252 of the 256-byte `qs` array and ≤ 28 of
    // the 32-byte `bsums` array of block `i < nb ≤ a.len()`. Prefetches never fault.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let masks = pair_masks();
        let base = group.as_ptr();
        let mut acc = _mm256_setzero_ps();
        for i in 0..nb {
            let gb = base.add(i * GROUP_BLOCK_BYTES);
            if AHEAD > 0 {
                let p = gb.wrapping_add(AHEAD);
                let mut line = 0;
                while line < GROUP_BLOCK_BYTES {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line).cast());
                    line += 64;
                }
            }
            let y = a.get_unchecked(i);
            let yq = y.qs.as_ptr();
            // A broadcast 4-byte chunk of the activations (a macro: closures would not
            // inherit this function's target features).
            macro_rules! act {
                ($off:expr) => {
                    _mm256_set1_epi32(yq.add($off).cast::<i32>().read_unaligned())
                };
            }

            let [sc_a, sc_b, mn_a, mn_b] = scales_and_mins(gb);
            let mins = spread_mins(mn_a, mn_b, &masks);
            let summs = mins_sum(&mins, y);

            // Σ_s sc·(q·q8) per row, for sub-blocks 2j (low nibbles) and 2j + 1 (high nibbles)
            // whose scales are values 2j % 4, 2j % 4 + 1 of `$sc` (a macro: fully unrolled).
            macro_rules! sub_block_pair {
                ($j:literal, $sc:ident) => {{
                    let q = gb.add(QS_OFF + 256 * $j);
                    let mut s_lo = _mm256_setzero_si256();
                    let mut s_hi = _mm256_setzero_si256();
                    for c in 0..8 {
                        let bits = _mm256_loadu_si256(q.add(32 * c).cast());
                        let lo = _mm256_and_si256(bits, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                        s_lo = _mm256_add_epi16(s_lo, _mm256_maddubs_epi16(lo, act!(64 * $j + 4 * c)));
                        s_hi = _mm256_add_epi16(s_hi, _mm256_maddubs_epi16(hi, act!(64 * $j + 32 + 4 * c)));
                    }
                    _mm256_add_epi32(
                        _mm256_madd_epi16(s_lo, _mm256_shuffle_epi8($sc, masks[(2 * $j) % 4])),
                        _mm256_madd_epi16(s_hi, _mm256_shuffle_epi8($sc, masks[(2 * $j + 1) % 4])),
                    )
                }};
            }
            let isum = _mm256_add_epi32(
                _mm256_add_epi32(sub_block_pair!(0, sc_a), sub_block_pair!(1, sc_a)),
                _mm256_add_epi32(sub_block_pair!(2, sc_b), sub_block_pair!(3, sc_b)),
            );

            // (d·d₈)·isum − (dmin·d₈)·summs, as the scalar code orders it.
            let d = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            let dmin = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(16).cast()));
            let yd = _mm256_set1_ps(y.d);
            let scaled = _mm256_mul_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(isum));
            let mins = _mm256_mul_ps(_mm256_mul_ps(dmin, yd), _mm256_cvtepi32_ps(summs));
            acc = _mm256_add_ps(acc, _mm256_sub_ps(scaled, mins));
        }
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
    }
    out
}

/// The 8 rows of one group against `T` activation rows: for each token the integers and
/// float operations of [`dot_x8`], so each token's results are the bits a [`dot_x8`] call
/// gives it (a batch-invariant decode step of several sequences). The scales and mins are
/// unpacked, and each 32-byte chunk of quants split into nibbles, once for all `T` tokens.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8_tokens<const T: usize>(group: &[u8], a: [&[BlockQ8K]; T]) -> [[f32; 8]; T] {
    debug_assert!(a.iter().all(|a| group.len() == a.len() * GROUP_BLOCK_BYTES));
    let nb = a.iter().fold(group.len() / GROUP_BLOCK_BYTES, |n, a| n.min(a.len()));
    // SAFETY: as in `dot_x8_ahead`, for every token: group-block `i < nb` lies within
    // `group`, activation block `i < nb <= a[t].len()`.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let masks = pair_masks();
        let base = group.as_ptr();
        let mut acc = [_mm256_setzero_ps(); T];
        for i in 0..nb {
            let gb = base.add(i * GROUP_BLOCK_BYTES);
            let p = gb.wrapping_add(PREFETCH_AHEAD);
            let mut line = 0;
            while line < GROUP_BLOCK_BYTES {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line).cast());
                line += 64;
            }
            let [sc_a, sc_b, mn_a, mn_b] = scales_and_mins(gb);
            // The mins per sub-block, spread once (the same for every token).
            let mins = spread_mins(mn_a, mn_b, &masks);
            let mut isum = [_mm256_setzero_si256(); T];
            for j in 0..4 {
                let sc = if j < 2 { sc_a } else { sc_b };
                let sc_lo = _mm256_shuffle_epi8(sc, masks[(2 * j) % 4]);
                let sc_hi = _mm256_shuffle_epi8(sc, masks[(2 * j + 1) % 4]);
                let q = gb.add(QS_OFF + 256 * j);
                let mut s_lo = [_mm256_setzero_si256(); T];
                let mut s_hi = [_mm256_setzero_si256(); T];
                for c in 0..8 {
                    let bits = _mm256_loadu_si256(q.add(32 * c).cast());
                    let lo = _mm256_and_si256(bits, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                    for t in 0..T {
                        let yq = a[t].get_unchecked(i).qs.as_ptr();
                        let alo = _mm256_set1_epi32(yq.add(64 * j + 4 * c).cast::<i32>().read_unaligned());
                        let ahi = _mm256_set1_epi32(yq.add(64 * j + 32 + 4 * c).cast::<i32>().read_unaligned());
                        s_lo[t] = _mm256_add_epi16(s_lo[t], _mm256_maddubs_epi16(lo, alo));
                        s_hi[t] = _mm256_add_epi16(s_hi[t], _mm256_maddubs_epi16(hi, ahi));
                    }
                }
                for t in 0..T {
                    let pair = _mm256_add_epi32(_mm256_madd_epi16(s_lo[t], sc_lo), _mm256_madd_epi16(s_hi[t], sc_hi));
                    isum[t] = _mm256_add_epi32(isum[t], pair);
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            let dmin = _mm256_cvtph_ps(_mm_loadu_si128(gb.add(16).cast()));
            for t in 0..T {
                let y = a[t].get_unchecked(i);
                let summs = mins_sum(&mins, y);
                let yd = _mm256_set1_ps(y.d);
                let scaled = _mm256_mul_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(isum[t]));
                let mins = _mm256_mul_ps(_mm256_mul_ps(dmin, yd), _mm256_cvtepi32_ps(summs));
                acc[t] = _mm256_add_ps(acc[t], _mm256_sub_ps(scaled, mins));
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
    use super::*;
    use crate::quant::q4_k::x8::{
        self,
        tests::{quantized_rows, random_bytes, reference},
    };
    use crate::quant::q8_k;
    use crate::quant::QK_K;

    fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }

    fn check(rows: &[u8], a: &[BlockQ8K], what: &str) {
        let mut group = vec![0u8; rows.len()];
        x8::interleave(rows, a.len(), &mut group);
        let want = x8::dot_x8(&group, a);
        // SAFETY: has_avx2() checked by the caller.
        let got = unsafe { dot_x8(&group, a) };
        // Same integer sums and float expression as the scalar code: exact.
        assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "{what}: {got:?} vs {want:?}");
        assert_eq!(got.map(f32::to_bits), reference(rows, a).map(f32::to_bits), "{what}: vs vec_dot");
        // SAFETY: as above.
        let no_prefetch = unsafe { dot_x8_ahead::<0>(&group, a) };
        assert_eq!(no_prefetch.map(f32::to_bits), want.map(f32::to_bits), "{what}: no prefetch");
    }

    #[test]
    fn dot_x8_equals_scalar_on_quantized_rows() {
        if !has_avx2() {
            return;
        }
        for (nb, seed) in [(1usize, 41u64), (2, 43), (5, 47), (16, 53)] {
            let (rows, a) = quantized_rows(nb, seed);
            check(&rows, &a, &format!("quantized nb = {nb}"));
        }
    }

    #[test]
    fn dot_x8_equals_scalar_on_extreme_values() {
        if !has_avx2() {
            return;
        }
        // Every nibble 15, every scale and min 63 (all bytes 0xFF but d/dmin), activations
        // all −128 or all 127 with arbitrary (inconsistent) bsums: the i16 bounds at their
        // limits and the bsums pairs beyond i16.
        let nb = 3;
        let mut rows = vec![0xFFu8; nb * GROUP_BLOCK_BYTES];
        for blk in rows.chunks_exact_mut(size_of::<super::super::BlockQ4K>()) {
            blk[0..2].copy_from_slice(&crate::quant::f32_to_f16(0.02));
            blk[2..4].copy_from_slice(&crate::quant::f32_to_f16(0.01));
        }
        for (q, bsum) in [(-128i8, i16::MIN), (127, i16::MAX)] {
            let a = vec![BlockQ8K { d: 0.5, qs: [q; QK_K], bsums: [bsum; QK_K / 16] }; nb];
            check(&rows, &a, &format!("extreme q8 = {q}"));
        }
    }

    #[test]
    fn dot_x8_equals_scalar_on_random_bits() {
        if !has_avx2() {
            return;
        }
        let nb = 7;
        let mut rows = random_bytes(nb * GROUP_BLOCK_BYTES, 59);
        for blk in rows.chunks_exact_mut(size_of::<super::super::BlockQ4K>()) {
            blk[0..2].copy_from_slice(&crate::quant::f32_to_f16(0.01));
            blk[2..4].copy_from_slice(&crate::quant::f32_to_f16(0.004));
        }
        let (_, a) = quantized_rows(nb, 61);
        check(&rows, &a, "random bits");
    }

    #[test]
    fn dot_x8_equals_scalar_on_fixture_blocks() {
        if !has_avx2() {
            return;
        }
        // Real blocks (gemma3 attn_output, 64) and random-bit blocks (32) from gguf-py's
        // fixtures: 8 rows of nb blocks each.
        for name in ["quants/q4_k_real.bin", "quants/q4_k_random_blocks.bin"] {
            let bytes = std::fs::read(owl_test::fixture(name)).expect("read fixture");
            let nb = bytes.len() / GROUP_BLOCK_BYTES;
            assert!(nb >= 4, "{name}: {} bytes", bytes.len());
            let rows = &bytes[..nb * GROUP_BLOCK_BYTES];
            let x = crate::quant::test_values(nb * QK_K, 67, 0.5, 2.0);
            let mut a = vec![BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] }; nb];
            q8_k::quantize(&x, &mut a);
            check(rows, &a, name);
        }
    }
}
