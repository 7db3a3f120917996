//! The Q5_0 x8 layout change ([`super::x8`]) with AVX2: one group-block (8 blocks, 176 bytes)
//! per step in registers, for [`super::x8::interleave`] (model load) and
//! [`super::x8::deinterleave`] (every prefill matmul call).
//!
//! The nibble bytes are a 4×8 transpose of 32-bit words (row r's `qs[4c..4c+4]` ↔ chunk c,
//! lane r): rows r and r + 4 share a register (one per 128-bit half, as the chunks hold rows
//! 0-3 and 4-7 in their halves), then two rounds of `unpack{lo,hi}` within the halves. The
//! fifth bits: the 8 rows' `qh` words sit in the 8 lanes of one register, which the layout
//! already stores lane r at bytes `4r..4r+4` of the plane bytes, so the bit permutation of
//! [`super::x8::qh_to_planes`] runs on all 8 rows at once with the same four delta swaps.
//! Results are byte-identical to [`super::x8::interleave_portable`] /
//! [`super::x8::deinterleave_portable`] (tested below).
//!
//! Every load and store stays inside one block or group-block: the 16-byte loads of a block
//! start at its byte 0 (scale, `qh`, `qs[0..10]`) and byte 6 (`qs`), both within its 22 bytes.

// Register-only intrinsics are safe inside `#[target_feature]` functions from Rust 1.87 on,
// which makes some of the `unsafe` blocks below redundant there: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::{GROUP_BLOCK_BYTES, QH_OFFSET, QH_TO_PLANES, QS_OFFSET};
use super::BlockQ5_0;
use crate::quant::simd_x86::{load_halves, transpose_words_4x4_halves};

const BLOCK: usize = size_of::<BlockQ5_0>();
/// Offset of `qs` in a row-major block (`qh` is at 2).
const QS_IN_BLOCK: usize = 6;

/// [`super::x8::delta_swap`] on each 32-bit lane (mask `m`, shift `S`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn delta_swap<const S: i32>(x: __m256i, m: u32) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let t = _mm256_and_si256(_mm256_xor_si256(_mm256_srli_epi32::<S>(x), x), _mm256_set1_epi32(m as i32));
        _mm256_xor_si256(_mm256_xor_si256(x, t), _mm256_slli_epi32::<S>(t))
    }
}

// The shifts are immediates, so [`qh_to_planes`] and [`planes_to_qh`] spell them out.
const _: () =
    assert!(QH_TO_PLANES[0].1 == 15 && QH_TO_PLANES[1].1 == 8 && QH_TO_PLANES[2].1 == 14 && QH_TO_PLANES[3].1 == 2);

/// [`super::x8::qh_to_planes`] on each 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn qh_to_planes(x: __m256i) -> __m256i {
    let [a, b, c, d] = QH_TO_PLANES;
    // SAFETY: register-only.
    unsafe { delta_swap::<2>(delta_swap::<14>(delta_swap::<8>(delta_swap::<15>(x, a.0), b.0), c.0), d.0) }
}

/// [`super::x8::planes_to_qh`] on each 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn planes_to_qh(x: __m256i) -> __m256i {
    let [a, b, c, d] = QH_TO_PLANES;
    // SAFETY: register-only.
    unsafe { delta_swap::<15>(delta_swap::<8>(delta_swap::<14>(delta_swap::<2>(x, d.0), c.0), b.0), a.0) }
}

/// [`super::x8::interleave`] with AVX2.
///
/// # Safety
/// The CPU has AVX2.
///
/// # Panics
/// If `src` or `dst` is not `nb · GROUP_BLOCK_BYTES` bytes long.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn interleave(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q5_0 x8 interleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q5_0 x8 interleave: destination length");
    let row_bytes = nb * BLOCK;
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    // Per 128-bit half: a block's `qh` to bytes 0..4, its scale to bytes 4..6, zeros above.
    let header = _mm256_setr_epi8(
        2, 3, 4, 5, 0, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
        2, 3, 4, 5, 0, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    for b in 0..nb {
        // SAFETY: for r < 8 and b < nb, block (r, b) is bytes `r·row_bytes + b·BLOCK ..
        // + BLOCK` of `src` (8·row_bytes = src.len(), asserted), and group-block b is bytes
        // `b·GROUP_BLOCK_BYTES .. + GROUP_BLOCK_BYTES` of `dst`; every access below stays
        // within one of them (module header).
        unsafe {
            let blk = |r: usize| sp.add(r * row_bytes + b * BLOCK);
            let gb = dp.add(b * GROUP_BLOCK_BYTES);

            // Nibbles: q_r = row r | row r + 4, 4 words each; transposed to chunk c, lane r.
            let pairs = std::array::from_fn(|r| load_halves(blk(r).add(QS_IN_BLOCK), blk(r + 4).add(QS_IN_BLOCK)));
            let qs = gb.add(QS_OFFSET);
            for (c, chunk) in transpose_words_4x4_halves(pairs).into_iter().enumerate() {
                _mm256_storeu_si256(qs.add(32 * c).cast(), chunk);
            }

            // Scales and fifth bits: h_r = (qh, d) of rows r | r + 4 in words 0, 1.
            let h0 = _mm256_shuffle_epi8(load_halves(blk(0), blk(4)), header);
            let h1 = _mm256_shuffle_epi8(load_halves(blk(1), blk(5)), header);
            let h2 = _mm256_shuffle_epi8(load_halves(blk(2), blk(6)), header);
            let h3 = _mm256_shuffle_epi8(load_halves(blk(3), blk(7)), header);
            let s0 = _mm256_unpacklo_epi32(h0, h1); // qh0 qh1 d0 d1
            let s1 = _mm256_unpacklo_epi32(h2, h3); // qh2 qh3 d2 d3
            let qh = _mm256_unpacklo_epi64(s0, s1);
            _mm256_storeu_si256(gb.add(QH_OFFSET).cast(), qh_to_planes(qh));
            // The scales, zero-extended to 32 bits, narrow without saturating.
            let d = _mm256_unpackhi_epi64(s0, s1);
            let d = _mm_packus_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256::<1>(d));
            _mm_storeu_si128(gb.cast(), d);
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
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q5_0 x8 deinterleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q5_0 x8 deinterleave: destination length");
    let row_bytes = nb * BLOCK;
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for b in 0..nb {
        // SAFETY: as in `interleave`, with the roles of `src` and `dst` exchanged.
        unsafe {
            let gb = sp.add(b * GROUP_BLOCK_BYTES);
            let blk = |r: usize| dp.add(r * row_bytes + b * BLOCK);

            // Scale and `qh` of row r as one 64-bit word `d | qh << 16` (top 2 bytes zero),
            // words (0, 1, 4, 5) in `w01`, (2, 3, 6, 7) in `w23`.
            let qh = planes_to_qh(_mm256_loadu_si256(gb.add(QH_OFFSET).cast()));
            let d = _mm256_cvtepu16_epi32(_mm_loadu_si128(gb.cast()));
            let lo = _mm256_or_si256(d, _mm256_slli_epi32::<16>(qh));
            let hi = _mm256_srli_epi32::<16>(qh);
            let w01 = _mm256_unpacklo_epi32(lo, hi);
            let w23 = _mm256_unpackhi_epi32(lo, hi);
            // Written first: their top 2 bytes (`qs[0..2]`) are overwritten by the nibbles.
            for (w, r) in [(w01, 0), (w23, 2)] {
                let (l, h) = (_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                blk(r).cast::<i64>().write_unaligned(_mm_cvtsi128_si64(l));
                blk(r + 1).cast::<i64>().write_unaligned(_mm_extract_epi64::<1>(l));
                blk(r + 4).cast::<i64>().write_unaligned(_mm_cvtsi128_si64(h));
                blk(r + 5).cast::<i64>().write_unaligned(_mm_extract_epi64::<1>(h));
            }

            // Nibbles: chunk c, lane r → u_r = row r | row r + 4, 4 words each.
            let qs = gb.add(QS_OFFSET);
            let chunks = std::array::from_fn(|c| _mm256_loadu_si256(qs.add(32 * c).cast()));
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
    use crate::quant::q5_0::x8;

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

    /// The immediates spelled out in [`qh_to_planes`] / [`planes_to_qh`] are those of
    /// [`QH_TO_PLANES`]: every single bit moves as the scalar permutation moves it.
    #[test]
    fn vector_bit_permutation_matches_scalar() {
        if !is_x86_feature_detected!("avx2") {
            eprintln!("skipped: no AVX2");
            return;
        }
        for lane0 in 0..32 {
            let words: [u32; 8] = std::array::from_fn(|l| (1u32 << ((lane0 + 5 * l) % 32)) | (l as u32 * 0x0101_0000));
            let mut fwd = [0u32; 8];
            let mut inv = [0u32; 8];
            // SAFETY: AVX2 checked above; the arrays are 32 bytes.
            unsafe {
                let v = _mm256_loadu_si256(words.as_ptr().cast());
                _mm256_storeu_si256(fwd.as_mut_ptr().cast(), qh_to_planes(v));
                _mm256_storeu_si256(inv.as_mut_ptr().cast(), planes_to_qh(v));
            }
            for l in 0..8 {
                assert_eq!(fwd[l], x8::qh_to_planes(words[l]), "forward {:#x}", words[l]);
                assert_eq!(inv[l], x8::planes_to_qh(words[l]), "inverse {:#x}", words[l]);
            }
        }
    }
}
