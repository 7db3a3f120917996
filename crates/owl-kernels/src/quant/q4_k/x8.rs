//! Q4_K weights interleaved in groups of 8 rows, for the decode matvec (one activation row).
//!
//! Why: the row-major kernels ([`super::avx2::vec_dot_rows`]) spend their time unpacking and
//! reducing horizontally, not waiting for memory. With 8 rows side by side, one 256-bit
//! register holds 4 consecutive quant bytes of each of the 8 rows (lane `r` = row `r`): each
//! 4-byte chunk of the activations is broadcast once and `_mm256_maddubs_epi16` leaves row
//! `r`'s partial sums in lane `r`, so there is no horizontal reduction at all, and the 8 rows'
//! scales are converted and applied with one instruction each. The idea is ggml's
//! (`ggml-cpu/repack.cpp`, `block_q4_Kx8`); the layout below is our own.
//!
//! # Layout
//!
//! A matrix of `rows` (a multiple of 8) rows of `nb` super-blocks is stored as `rows / 8`
//! consecutive groups; a group holds the 8 rows' super-block 0, then super-block 1, …: `nb`
//! group-blocks of exactly [`GROUP_BLOCK_BYTES`] = 8 × 144 = 1152 bytes (18 cache lines), the
//! same bytes as row-major. Inside a group-block (`r` = row 0..8 of the group):
//!
//! | bytes | content |
//! |---|---|
//! | `0..16` | `d` of row `r` at `2r` (f16 little-endian, as in [`BlockQ4K`]) |
//! | `16..32` | `dmin` of row `r` at `16 + 2r` |
//! | `32..96` | low nibbles of the 128 six-bit scales and mins: value `v` at byte `32 + v % 64`, nibble `v / 64` |
//! | `96..128` | their top two bits: value `v` at byte `96 + v % 32`, bits `2·(v / 32) ..+2` |
//! | `128..1152` | quants: byte `k < 4` of 32-bit lane `r` of the 32 bytes at `128 + 256·j + 32·c` is row `r`'s `qs[32·j + 4·c + k]` (`j < 4`, `c < 8`) |
//!
//! Value numbering (so that the unpacked 128 values are four registers the kernel uses as
//! they are): `v = 64·kind + 32·(s / 4) + 16·(r / 4) + 4·(s % 4) + r % 4` for sub-block `s < 8`,
//! `kind` 0 = scale, 1 = min. Each 128-bit lane of the unpacked register then holds one half
//! of the rows (0..4 or 4..8) for four sub-blocks, which a byte shuffle spreads into the
//! per-row i16 pairs `_mm256_madd_epi16` wants.
//!
//! The 12 packed bytes of a row hold exactly the 16 six-bit values (96 bits, every bit used
//! once by [`super::get_scale_min_k4`]), so the repacking is lossless for any bytes and
//! [`deinterleave`] restores them exactly.
//!
//! Quant element mapping (Q4_K, see [`super`]): element `64·j + 4·c + k` is the low nibble of
//! `qs[32·j + 4·c + k]` (sub-block `2j`), element `64·j + 32 + 4·c + k` its high nibble
//! (sub-block `2j + 1`); so one 32-byte register of a group-block serves two activation
//! chunks, `a.qs[64j + 4c ..+4]` (low nibbles) and `a.qs[64j + 32 + 4c ..+4]` (high nibbles).

use super::{BlockQ4K, K_SCALE_SIZE};
use crate::quant::q8_k::BlockQ8K;
use crate::quant::util::f16_to_f32;
use crate::quant::QK_K;

/// Bytes of one group-block: the same super-block of 8 rows.
pub const GROUP_BLOCK_BYTES: usize = 8 * size_of::<BlockQ4K>();

const BLOCK_BYTES: usize = size_of::<BlockQ4K>();
/// Offsets inside a group-block (see the layout table).
const D_OFF: usize = 0;
const DMIN_OFF: usize = 16;
const SCALE_LO_OFF: usize = 32;
const SCALE_HI_OFF: usize = 96;
pub(crate) const QS_OFF: usize = 128;
/// Offsets inside a row-major [`BlockQ4K`].
const BLOCK_SCALES_OFF: usize = 4;
const BLOCK_QS_OFF: usize = 4 + K_SCALE_SIZE;

/// Index `v < 128` of sub-block `s`'s scale (`kind` 0) or min (`kind` 1) of row `r`.
#[inline(always)]
const fn value_index(kind: usize, s: usize, r: usize) -> usize {
    64 * kind + 32 * (s / 4) + 16 * (r / 4) + 4 * (s % 4) + r % 4
}

/// Six-bit value `v` of a group-block.
#[inline(always)]
fn get_value(gb: &[u8], v: usize) -> u8 {
    let lo = (gb[SCALE_LO_OFF + v % 64] >> (4 * (v / 64))) & 0x0F;
    let hi = (gb[SCALE_HI_OFF + v % 32] >> (2 * (v / 32))) & 0x03;
    lo | (hi << 4)
}

/// Offset in a group-block of row `r`'s quant byte `qs[q]`.
#[inline(always)]
const fn qs_offset(r: usize, q: usize) -> usize {
    QS_OFF + 256 * (q / 32) + 32 * (q % 32 / 4) + 4 * r + q % 4
}

// How the scale bytes map, word by word (this is what makes the repacking cheap). Write
// `s' = s % 4` and look at one row `r`: the byte at `32 + 16·(r / 4) + 4·s' + r % 4` of
// each of the three 32-byte arrays at 32, 64 and 96 belongs to that row and `s'`, and
// - array `LO0` (32..64) holds `scale_lo(s') | min_lo(s') << 4`,
// - array `LO1` (64..96) holds `scale_lo(4 + s') | min_lo(4 + s') << 4`, which is exactly
//   row-major byte `8 + s'`,
// - array `HI` (96..128) holds the top two bits of `scale(s')`, `scale(4 + s')`,
//   `min(s')`, `min(4 + s')` in bits 0-1, 2-3, 4-5, 6-7,
// while row-major byte `s'` is `scale_lo(s') | scale_hi(s') << 4 | scale_hi(4 + s') << 6`
// = `LO0 & 0x0F | (HI & 0x0F) << 4` and byte `4 + s'` is `LO0 >> 4 | HI & 0xF0`. So with the
// row's four bytes of each array gathered into a u32 (`s'` = byte), the row's 12 bytes are
// three u32s of nibble masks and shifts, and back. The gather is a 4 × 4 byte transpose of
// each 16-byte half (rows 0..4, 4..8), which the AVX2 version does with one byte shuffle.

/// Mask of the low nibble of each byte of a u32.
const LOW_NIBBLES: u32 = 0x0F0F_0F0F;

/// Row-major scale words 0 and 1 (bytes `0..4`, `4..8` of the 12) from a row's gathered
/// `LO0` and `HI` words (see the comment above).
#[inline(always)]
const fn scale_words_from_groups(lo0: u32, hi: u32) -> (u32, u32) {
    ((lo0 & LOW_NIBBLES) | ((hi & LOW_NIBBLES) << 4), ((lo0 >> 4) & LOW_NIBBLES) | (hi & !LOW_NIBBLES))
}

/// The inverse of [`scale_words_from_groups`]: a row's `LO0` and `HI` words from row-major
/// scale words 0 and 1.
#[inline(always)]
const fn group_words_from_scales(w0: u32, w1: u32) -> (u32, u32) {
    ((w0 & LOW_NIBBLES) | ((w1 & LOW_NIBBLES) << 4), ((w0 >> 4) & LOW_NIBBLES) | (w1 & !LOW_NIBBLES))
}

/// Offset in a group-block's scale arrays of row `r`'s byte for `s' = 0` (then stride 4).
#[inline(always)]
const fn scale_row_offset(r: usize) -> usize {
    16 * (r / 4) + r % 4
}

#[inline(always)]
fn read_u32(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

crate::quant::interleave::simd_group_movers!("Q4_K");

/// [`interleave`] without SIMD: row by row, each block's fields moved as u32 words into
/// fixed-size arrays (no bounds checks left in the loop body).
///
/// # Panics
/// If either length is not `nb · GROUP_BLOCK_BYTES`.
pub(crate) fn interleave_portable(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q4_K interleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q4_K interleave: destination length");
    let (blocks, _) = src.as_chunks::<BLOCK_BYTES>();
    let (group_blocks, _) = dst.as_chunks_mut::<GROUP_BLOCK_BYTES>();
    for r in 0..8 {
        let row = &blocks[r * nb..(r + 1) * nb];
        let so = scale_row_offset(r);
        for (blk, gb) in row.iter().zip(group_blocks.iter_mut()) {
            gb[D_OFF + 2 * r..D_OFF + 2 * r + 2].copy_from_slice(&blk[0..2]);
            gb[DMIN_OFF + 2 * r..DMIN_OFF + 2 * r + 2].copy_from_slice(&blk[2..4]);
            let (lo0, hi) =
                group_words_from_scales(read_u32(blk, BLOCK_SCALES_OFF), read_u32(blk, BLOCK_SCALES_OFF + 4));
            let lo1 = read_u32(blk, BLOCK_SCALES_OFF + 8);
            for s in 0..4 {
                gb[SCALE_LO_OFF + so + 4 * s] = (lo0 >> (8 * s)) as u8;
                gb[SCALE_LO_OFF + 32 + so + 4 * s] = (lo1 >> (8 * s)) as u8;
                gb[SCALE_HI_OFF + so + 4 * s] = (hi >> (8 * s)) as u8;
            }
            for q in (0..QK_K / 2).step_by(4) {
                gb[qs_offset(r, q)..qs_offset(r, q) + 4].copy_from_slice(&blk[BLOCK_QS_OFF + q..BLOCK_QS_OFF + q + 4]);
            }
        }
    }
}

/// [`deinterleave`] without SIMD (see [`interleave_portable`]).
///
/// # Panics
/// If either length is not `nb · GROUP_BLOCK_BYTES`.
pub(crate) fn deinterleave_portable(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q4_K deinterleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q4_K deinterleave: destination length");
    let (group_blocks, _) = src.as_chunks::<GROUP_BLOCK_BYTES>();
    let (blocks, _) = dst.as_chunks_mut::<BLOCK_BYTES>();
    for r in 0..8 {
        let row = &mut blocks[r * nb..(r + 1) * nb];
        let so = scale_row_offset(r);
        for (gb, blk) in group_blocks.iter().zip(row.iter_mut()) {
            blk[0..2].copy_from_slice(&gb[D_OFF + 2 * r..D_OFF + 2 * r + 2]);
            blk[2..4].copy_from_slice(&gb[DMIN_OFF + 2 * r..DMIN_OFF + 2 * r + 2]);
            let gather =
                |off: usize| u32::from_le_bytes([gb[off + so], gb[off + so + 4], gb[off + so + 8], gb[off + so + 12]]);
            let (w0, w1) = scale_words_from_groups(gather(SCALE_LO_OFF), gather(SCALE_HI_OFF));
            blk[BLOCK_SCALES_OFF..BLOCK_SCALES_OFF + 4].copy_from_slice(&w0.to_le_bytes());
            blk[BLOCK_SCALES_OFF + 4..BLOCK_SCALES_OFF + 8].copy_from_slice(&w1.to_le_bytes());
            blk[BLOCK_SCALES_OFF + 8..BLOCK_QS_OFF].copy_from_slice(&gather(SCALE_LO_OFF + 32).to_le_bytes());
            for q in (0..QK_K / 2).step_by(4) {
                blk[BLOCK_QS_OFF + q..BLOCK_QS_OFF + q + 4].copy_from_slice(&gb[qs_offset(r, q)..qs_offset(r, q) + 4]);
            }
        }
    }
}

/// The 8 rows of one group against one activation row: `out[r]` = row `r` · `a`, computed
/// exactly as the scalar [`super::vec_dot`] does (the same two integer sums per super-block,
/// the same float expression in the same order), so it equals it bit for bit.
///
/// `group.len()` must be `a.len() · GROUP_BLOCK_BYTES` (debug-asserted; in release builds
/// the shorter side wins).
pub fn dot_x8(group: &[u8], a: &[BlockQ8K]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let mut sum = [0.0f32; 8];
    for (gb, y) in group.chunks_exact(GROUP_BLOCK_BYTES).zip(a) {
        for (r, sum) in sum.iter_mut().enumerate() {
            let (mut isum, mut summs) = (0i32, 0i32);
            for s in 0..8 {
                let (j, h) = (s / 2, s % 2);
                let mut isuml = 0i32;
                for l in 0..32 {
                    let q = (gb[qs_offset(r, 32 * j + l)] >> (4 * h)) & 0x0F;
                    isuml += q as i32 * y.qs[64 * j + 32 * h + l] as i32;
                }
                let sc = get_value(gb, value_index(0, s, r));
                let m = get_value(gb, value_index(1, s, r));
                isum += sc as i32 * isuml;
                summs += m as i32 * (y.bsums[2 * s] as i32 + y.bsums[2 * s + 1] as i32);
            }
            let d = f16_to_f32([gb[D_OFF + 2 * r], gb[D_OFF + 2 * r + 1]]);
            let dmin = f16_to_f32([gb[DMIN_OFF + 2 * r], gb[DMIN_OFF + 2 * r + 1]]);
            *sum += (d * y.d) * isum as f32 - (dmin * y.d) * summs as f32;
        }
    }
    sum
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::q4_k::{get_scale_min_k4, pack_scale_min_k4};
    use crate::quant::{q8_k, test_rows, test_values, BlockFormat};

    pub(crate) use crate::quant::interleave::mover_tests::random_bytes;
    use crate::quant::interleave::mover_tests::{assert_movers_equal, assert_round_trip};

    /// 8 rows of `nb` blocks quantized from random values, and an activation row.
    pub(crate) fn quantized_rows(nb: usize, seed: u64) -> (Vec<u8>, Vec<BlockQ8K>) {
        let cols = nb * QK_K;
        let src = test_values(8 * cols, seed, 0.5, 2.0);
        let (w, _) = test_rows(BlockFormat::Q4_K, &src, 8, cols);
        let x = test_values(cols, seed ^ 0x9e37, 0.5, 3.0);
        let mut a = vec![BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] }; nb];
        q8_k::quantize(&x, &mut a);
        (w, a)
    }

    /// Per-row scalar reference `vec_dot` over row-major rows.
    pub(crate) fn reference(rows: &[u8], a: &[BlockQ8K]) -> [f32; 8] {
        let w: &[BlockQ4K] = bytemuck::cast_slice(rows);
        let nb = a.len();
        std::array::from_fn(|r| super::super::vec_dot(&w[r * nb..(r + 1) * nb], a))
    }

    /// Stores six-bit value `x` as value `v` (the target bits must be zero).
    fn set_value(gb: &mut [u8], v: usize, x: u8) {
        gb[SCALE_LO_OFF + v % 64] |= (x & 0x0F) << (4 * (v / 64));
        gb[SCALE_HI_OFF + v % 32] |= (x >> 4) << (2 * (v / 32));
    }

    /// The straightforward value-by-value, byte-by-byte interleave the fast versions replace.
    fn interleave_reference(src: &[u8], nb: usize, dst: &mut [u8]) {
        for (i, gb) in dst.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
            gb[SCALE_LO_OFF..QS_OFF].fill(0);
            for r in 0..8 {
                let blk = &src[(r * nb + i) * BLOCK_BYTES..][..BLOCK_BYTES];
                gb[D_OFF + 2 * r..D_OFF + 2 * r + 2].copy_from_slice(&blk[0..2]);
                gb[DMIN_OFF + 2 * r..DMIN_OFF + 2 * r + 2].copy_from_slice(&blk[2..4]);
                let mut packed = [0u8; K_SCALE_SIZE];
                packed.copy_from_slice(&blk[BLOCK_SCALES_OFF..BLOCK_QS_OFF]);
                for s in 0..8 {
                    let (sc, m) = get_scale_min_k4(s, &packed);
                    set_value(gb, value_index(0, s, r), sc);
                    set_value(gb, value_index(1, s, r), m);
                }
                for (q, &b) in blk[BLOCK_QS_OFF..].iter().enumerate() {
                    gb[qs_offset(r, q)] = b;
                }
            }
        }
    }

    /// The straightforward inverse of [`interleave_reference`].
    fn deinterleave_reference(src: &[u8], nb: usize, dst: &mut [u8]) {
        for (i, gb) in src.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
            for r in 0..8 {
                let blk = &mut dst[(r * nb + i) * BLOCK_BYTES..][..BLOCK_BYTES];
                blk[0..2].copy_from_slice(&gb[D_OFF + 2 * r..D_OFF + 2 * r + 2]);
                blk[2..4].copy_from_slice(&gb[DMIN_OFF + 2 * r..DMIN_OFF + 2 * r + 2]);
                let ls: [u8; 8] = std::array::from_fn(|s| get_value(gb, value_index(0, s, r)));
                let lm: [u8; 8] = std::array::from_fn(|s| get_value(gb, value_index(1, s, r)));
                blk[BLOCK_SCALES_OFF..BLOCK_QS_OFF].copy_from_slice(&pack_scale_min_k4(&ls, &lm));
                for (q, b) in blk[BLOCK_QS_OFF..].iter_mut().enumerate() {
                    *b = gb[qs_offset(r, q)];
                }
            }
        }
    }

    #[test]
    fn fast_versions_equal_the_reference_on_random_bytes() {
        assert_movers_equal(
            (interleave_reference, deinterleave_reference),
            &[("dispatched", interleave, deinterleave), ("portable", interleave_portable, deinterleave_portable)],
            GROUP_BLOCK_BYTES,
            &[(1, 71), (2, 73), (5, 79), (16, 83), (57, 89)],
        );
    }

    #[test]
    fn fast_versions_equal_the_reference_on_extreme_bytes() {
        // All-zero and all-one blocks and single set bits: each bit lands where the
        // reference puts it.
        let nb = 2;
        let mut cases = vec![vec![0u8; nb * GROUP_BLOCK_BYTES], vec![0xFFu8; nb * GROUP_BLOCK_BYTES]];
        for bit in [0usize, 7, 33, 100, 127, 128 * 8 + 5, 143 * 8 + 7, 1151 * 8 + 6, 2303 * 8 + 7] {
            let mut v = vec![0u8; nb * GROUP_BLOCK_BYTES];
            v[bit / 8] = 1 << (bit % 8);
            cases.push(v);
        }
        for src in &cases {
            let mut want = vec![0u8; src.len()];
            interleave_reference(src, nb, &mut want);
            let mut want_rows = vec![0u8; src.len()];
            deinterleave_reference(src, nb, &mut want_rows);
            for (inter, deinter) in [
                (interleave as fn(&[u8], usize, &mut [u8]), deinterleave as fn(&[u8], usize, &mut [u8])),
                (interleave_portable, deinterleave_portable),
            ] {
                let mut got = vec![0x11u8; src.len()];
                inter(src, nb, &mut got);
                assert!(got == want);
                deinter(src, nb, &mut got);
                assert!(got == want_rows);
            }
        }
    }

    #[test]
    fn interleave_round_trip_is_byte_exact() {
        assert_round_trip(interleave, deinterleave, GROUP_BLOCK_BYTES, &[(1, 3), (2, 5), (3, 7), (16, 11)]);
    }

    #[test]
    fn interleave_places_documented_bytes() {
        // A few spot checks of the layout table against the row-major block fields.
        let nb = 2;
        let src = random_bytes(nb * GROUP_BLOCK_BYTES, 17);
        let mut group = vec![0u8; src.len()];
        interleave(&src, nb, &mut group);
        let blocks: &[BlockQ4K] = bytemuck::cast_slice(&src);
        for i in 0..nb {
            let gb = &group[i * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
            for r in 0..8 {
                let b = &blocks[r * nb + i];
                assert_eq!(gb[2 * r..2 * r + 2], b.d);
                assert_eq!(gb[16 + 2 * r..16 + 2 * r + 2], b.dmin);
                for s in 0..8 {
                    let (sc, m) = b.scale_min(s);
                    for (kind, want) in [(0, sc), (1, m)] {
                        // The numbering of the layout table, written out independently.
                        let v = 64 * kind + 32 * (s / 4) + 16 * (r / 4) + 4 * (s % 4) + r % 4;
                        let lo = (gb[32 + v % 64] >> (4 * (v / 64))) & 0x0F;
                        let hi = (gb[96 + v % 32] >> (2 * (v / 32))) & 0x03;
                        assert_eq!(lo | (hi << 4), want, "row {r} sub-block {s} kind {kind}");
                    }
                }
                // qs[32j + 4c + k] at 128 + 256j + 32c + 4r + k.
                assert_eq!(gb[128 + 256 * 3 + 32 * 5 + 4 * r + 2], b.qs[32 * 3 + 4 * 5 + 2]);
            }
        }
    }

    #[test]
    fn dot_x8_equals_scalar_vec_dot_bit_for_bit() {
        for (nb, seed) in [(1usize, 21u64), (3, 23), (8, 29)] {
            let (rows, a) = quantized_rows(nb, seed);
            let mut group = vec![0u8; rows.len()];
            interleave(&rows, nb, &mut group);
            let got = dot_x8(&group, &a);
            let want = reference(&rows, &a);
            // Same integer sums and float expression in the same order: exact.
            assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "nb = {nb}: {got:?} vs {want:?}");
        }
    }

    #[test]
    fn dot_x8_equals_scalar_on_random_bits() {
        // Arbitrary block bytes (every scale, min and nibble value), sane f16 d/dmin.
        let nb = 4;
        let mut rows = random_bytes(nb * GROUP_BLOCK_BYTES, 31);
        for blk in rows.chunks_exact_mut(BLOCK_BYTES) {
            blk[0..2].copy_from_slice(&crate::quant::f32_to_f16(0.01));
            blk[2..4].copy_from_slice(&crate::quant::f32_to_f16(0.003));
        }
        let (_, a) = quantized_rows(nb, 37);
        let mut group = vec![0u8; rows.len()];
        interleave(&rows, nb, &mut group);
        let got = dot_x8(&group, &a);
        let want = reference(&rows, &a);
        assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "{got:?} vs {want:?}");
    }
}
