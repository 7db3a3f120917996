//! The Q4_1 x8 layout change ([`super::x8`]) with AVX2: one group-block (8 blocks, 160 bytes)
//! per step in registers, for [`super::x8::interleave`] (model load) and
//! [`super::x8::deinterleave`] (every prefill matmul call).
//!
//! The quant bytes are a 4×8 transpose of 32-bit words (row r's `qs[4c..4c+4]` ↔ chunk c,
//! lane r): rows r and r + 4 share a register (one per 128-bit half, as the chunks hold rows
//! 0-3 and 4-7 in their halves), then two rounds of `unpack{lo,hi}` within the halves. The
//! scale and minimum of a row are its first 32-bit word `d | m << 16`; the 8 rows' words in
//! one register split into the 16 scale and 16 minimum bytes with one byte shuffle and one
//! 64-bit lane permute (both ways). Results are byte-identical to
//! [`super::x8::interleave_portable`] / [`super::x8::deinterleave_portable`] (tested below).
//!
//! Every load and store stays inside one block or group-block: the 16-byte loads of a block
//! start at its byte 0 (`d`, `m`, `qs[0..12]`) and byte 4 (`qs`), both within its 20 bytes.

// Register-only intrinsics are safe inside `#[target_feature]` functions from Rust 1.87 on,
// which makes some of the `unsafe` blocks below redundant there: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::{GROUP_BLOCK_BYTES, QS_OFFSET};
use super::BlockQ4_1;
use crate::quant::simd_x86::{load_halves, transpose_words_4x4_halves};

const BLOCK: usize = size_of::<BlockQ4_1>();
/// Offset of `qs` in a row-major block (`d` at 0, `m` at 2).
const QS_IN_BLOCK: usize = 4;
/// `_mm256_permute4x64_epi64` selector (0, 2, 1, 3): swaps the middle two 64-bit words; its
/// own inverse.
const SWAP_MIDDLE: i32 = 0b11_01_10_00;

/// [`super::x8::interleave`] with AVX2.
///
/// # Safety
/// The CPU has AVX2.
///
/// # Panics
/// If `src` or `dst` is not `nb · GROUP_BLOCK_BYTES` bytes long.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn interleave(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q4_1 x8 interleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q4_1 x8 interleave: destination length");
    let row_bytes = nb * BLOCK;
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    // Per 128-bit half: the 4 words `d | m << 16` → 4 scales, then 4 minimums.
    let split = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, //
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
    );
    for b in 0..nb {
        // SAFETY: for r < 8 and b < nb, block (r, b) is bytes `r·row_bytes + b·BLOCK ..
        // + BLOCK` of `src` (8·row_bytes = src.len(), asserted), and group-block b is bytes
        // `b·GROUP_BLOCK_BYTES .. + GROUP_BLOCK_BYTES` of `dst`; every access below stays
        // within one of them (module header).
        unsafe {
            let blk = |r: usize| sp.add(r * row_bytes + b * BLOCK);
            let gb = dp.add(b * GROUP_BLOCK_BYTES);

            // Quants: q_r = row r | row r + 4, 4 words each; transposed to chunk c, lane r.
            let pairs = std::array::from_fn(|r| load_halves(blk(r).add(QS_IN_BLOCK), blk(r + 4).add(QS_IN_BLOCK)));
            let qs = gb.add(QS_OFFSET);
            for (c, chunk) in transpose_words_4x4_halves(pairs).into_iter().enumerate() {
                _mm256_storeu_si256(qs.add(32 * c).cast(), chunk);
            }

            // Scales and minimums: word 0 of rows r | r + 4 → lane r of `dm`.
            let s0 = _mm256_unpacklo_epi32(load_halves(blk(0), blk(4)), load_halves(blk(1), blk(5)));
            let s1 = _mm256_unpacklo_epi32(load_halves(blk(2), blk(6)), load_halves(blk(3), blk(7)));
            let dm = _mm256_unpacklo_epi64(s0, s1);
            // Halves [d0..d3 m0..m3 | d4..d7 m4..m7] → [d0..d7 | m0..m7]: bytes 0..32.
            let dm = _mm256_permute4x64_epi64::<SWAP_MIDDLE>(_mm256_shuffle_epi8(dm, split));
            _mm256_storeu_si256(gb.cast(), dm);
        }
    }
}

/// [`super::x8::deinterleave`] with AVX2.
///
/// # Safety
/// The CPU has AVX2.
///
/// # Panics
/// If `src` or `dst` is not `nb · GROUP_BLOCK_BYTES` bytes long.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn deinterleave(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q4_1 x8 deinterleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q4_1 x8 deinterleave: destination length");
    let row_bytes = nb * BLOCK;
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    // Per 128-bit half: 4 scales then 4 minimums → the 4 words `d | m << 16`.
    let join = _mm256_setr_epi8(
        0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15, //
        0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
    );
    for b in 0..nb {
        // SAFETY: as in `interleave`, with the roles of `src` and `dst` exchanged.
        unsafe {
            let gb = sp.add(b * GROUP_BLOCK_BYTES);
            let blk = |r: usize| dp.add(r * row_bytes + b * BLOCK);

            let qs = gb.add(QS_OFFSET);
            let chunks: [__m256i; 4] = std::array::from_fn(|c| _mm256_loadu_si256(qs.add(32 * c).cast()));
            let c0 = chunks[0];

            // [d0..d7 | m0..m7] → [d0..d3 m0..m3 | d4..d7 m4..m7] → lane r = `d | m << 16`
            // of row r; next to chunk 0 that is each row's first 8 bytes (`d`, `m`,
            // `qs[0..4]`), words (0, 1, 4, 5) in `w01` and (2, 3, 6, 7) in `w23`.
            let dm = _mm256_permute4x64_epi64::<SWAP_MIDDLE>(_mm256_loadu_si256(gb.cast()));
            let dm = _mm256_shuffle_epi8(dm, join);
            let w01 = _mm256_unpacklo_epi32(dm, c0);
            let w23 = _mm256_unpackhi_epi32(dm, c0);
            for (w, r) in [(w01, 0), (w23, 2)] {
                let (l, h) = (_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                blk(r).cast::<i64>().write_unaligned(_mm_cvtsi128_si64(l));
                blk(r + 1).cast::<i64>().write_unaligned(_mm_extract_epi64::<1>(l));
                blk(r + 4).cast::<i64>().write_unaligned(_mm_cvtsi128_si64(h));
                blk(r + 5).cast::<i64>().write_unaligned(_mm_extract_epi64::<1>(h));
            }

            // Quants: chunk c, lane r → u_r = row r | row r + 4, 4 words each (rewriting
            // `qs[0..4]`, already in place, with the same bytes).
            let rows = transpose_words_4x4_halves(chunks);
            for (r, u) in rows.into_iter().enumerate() {
                _mm_storeu_si128(blk(r).add(QS_IN_BLOCK).cast(), _mm256_castsi256_si128(u));
                _mm_storeu_si128(blk(r + 4).add(QS_IN_BLOCK).cast(), _mm256_extracti128_si256::<1>(u));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::interleave::mover_tests::assert_movers_equal;
    use crate::quant::q4_1::x8;

    #[test]
    fn avx2_matches_portable_byte_for_byte() {
        if !is_x86_feature_detected!("avx2") {
            eprintln!("skipped: no AVX2");
            return;
        }
        assert_movers_equal(
            (x8::interleave_portable, x8::deinterleave_portable),
            // SAFETY (both): AVX2 checked above; the checks pass matching lengths.
            &[("avx2", |s, nb, d| unsafe { interleave(s, nb, d) }, |s, nb, d| unsafe { deinterleave(s, nb, d) })],
            GROUP_BLOCK_BYTES,
            &[(1, 41), (2, 43), (5, 47), (128, 53)],
        );
    }
}
