//! Q4_1 weights repacked 8 rows at a time for the decode matvec ("x8" layout), and the
//! portable reference dot product over one such group.
//!
//! Why: the row-major kernels ([`super::avx2`]) spend their time on per-row horizontal sums
//! and scale shuffles and stay compute-bound below the machine's read bandwidth. With 8 rows
//! interleaved per block, one 256-bit register holds 4 consecutive quant bytes of each of the
//! 8 rows, so a broadcast activation chunk times that register gives the 8 rows' partial sums
//! in the 8 i32 lanes (lane r = row r), the 8 rows' scales and minimums convert with one
//! `vcvtph2ps` each, and one FMA per block applies them: no horizontal sum at all. The idea
//! is ggml's `block_q4_0x8` repacking (`ggml-cpu/repack.cpp`); the layout below is our own.
//!
//! Layout. A matrix of `rows` (a multiple of 8) rows of `nb` blocks is stored as `rows / 8`
//! consecutive groups; a group is `nb` group-blocks of [`GROUP_BLOCK_BYTES`] = 160 bytes
//! (8 × `BlockQ4_1`, so sizes and byte counts equal the row-major ones). Group-block `b`
//! holds block `b` of the group's rows `r = 0..8`:
//!
//! | bytes      | content                                                              |
//! |------------|----------------------------------------------------------------------|
//! | 0..16      | `d` of row r at `2r` (f16 LE)                                        |
//! | 16..32     | `m` of row r at `16 + 2r` (f16 LE)                                   |
//! | 32..160    | quants: byte `32 + 32c + 4r + k` = row r's `qs[4c + k]`, c, k < 4    |
//!
//! So quant chunk `c` (32 bytes) holds row r's elements `4c..4c+4` (low nibbles) and
//! `16+4c..16+4c+4` (high nibbles) in bytes `4r..4r+4`, matching the activation bytes
//! `qs[4c..4c+4]` and `qs[16+4c..16+4c+4]` broadcast to all lanes.

use crate::quant::q8_1::BlockQ8_1;
use crate::quant::util::f16_to_f32;

use super::BlockQ4_1;

/// Bytes of one group-block: block `b` of 8 rows.
pub const GROUP_BLOCK_BYTES: usize = 8 * size_of::<BlockQ4_1>();

const BLOCK: usize = size_of::<BlockQ4_1>();
/// Offset of the minimums in a group-block.
pub(crate) const M_OFFSET: usize = 16;
/// Offset of the quant chunks in a group-block.
pub(crate) const QS_OFFSET: usize = 32;

crate::quant::interleave::simd_group_movers!("Q4_1");

/// Copies `N` bytes from `src[from..]` to `dst[to..]` (a fixed-size copy the optimizer turns
/// into one load and store; with array arguments and constant offsets, no bounds check
/// survives).
#[inline(always)]
fn copy<const N: usize>(src: &[u8], from: usize, dst: &mut [u8], to: usize) {
    dst[to..to + N].copy_from_slice(&src[from..from + N]);
}

/// Portable [`interleave`]: each row's block is 6 word copies (scale, minimum, 4 quant
/// words). The reference for the AVX2 version.
pub(crate) fn interleave_portable(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q4_1 x8 interleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q4_1 x8 interleave: destination length");
    let blocks: &[[u8; BLOCK]] = src.as_chunks().0;
    for (b, gb) in dst.as_chunks_mut::<GROUP_BLOCK_BYTES>().0.iter_mut().enumerate() {
        for r in 0..8 {
            let blk = &blocks[r * nb + b];
            copy::<2>(blk, 0, gb, 2 * r);
            copy::<2>(blk, 2, gb, M_OFFSET + 2 * r);
            for c in 0..4 {
                copy::<4>(blk, 4 + 4 * c, gb, QS_OFFSET + 32 * c + 4 * r);
            }
        }
    }
}

/// Portable [`deinterleave`], the exact inverse of [`interleave_portable`].
pub(crate) fn deinterleave_portable(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q4_1 x8 deinterleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q4_1 x8 deinterleave: destination length");
    let blocks: &mut [[u8; BLOCK]] = dst.as_chunks_mut().0;
    for (b, gb) in src.as_chunks::<GROUP_BLOCK_BYTES>().0.iter().enumerate() {
        for r in 0..8 {
            let blk = &mut blocks[r * nb + b];
            copy::<2>(gb, 2 * r, blk, 0);
            copy::<2>(gb, M_OFFSET + 2 * r, blk, 2);
            for c in 0..4 {
                copy::<4>(gb, QS_OFFSET + 32 * c + 4 * r, blk, 4 + 4 * c);
            }
        }
    }
}

/// The 8 rows of one group (`group.len() == a.len() · GROUP_BLOCK_BYTES`) against one
/// activation row: `out[r]` = row r · a, bit-identical to the scalar [`super::vec_dot`] of
/// row r (same integer block sums, same float operations in the same order:
/// `(d·d8)·Σq·a + m·s8` per block, added to the row's sum).
///
/// # Panics
/// If the lengths do not match.
pub fn dot_x8(group: &[u8], a: &[BlockQ8_1]) -> [f32; 8] {
    assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES, "Q4_1 x8 dot: group length");
    let mut out = [0.0f32; 8];
    for (gb, y) in group.chunks_exact(GROUP_BLOCK_BYTES).zip(a) {
        let (dy, sy) = (y.d(), y.s());
        for (r, sum) in out.iter_mut().enumerate() {
            let d = f16_to_f32([gb[2 * r], gb[2 * r + 1]]);
            let m = f16_to_f32([gb[M_OFFSET + 2 * r], gb[M_OFFSET + 2 * r + 1]]);
            let mut sumi = 0i32;
            for c in 0..4 {
                for k in 0..4 {
                    let q = gb[QS_OFFSET + 32 * c + 4 * r + k];
                    sumi += (q & 0x0F) as i32 * y.qs[4 * c + k] as i32;
                    sumi += (q >> 4) as i32 * y.qs[16 + 4 * c + k] as i32;
                }
            }
            *sum += (d * dy) * sumi as f32 + m * sy;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::interleave::mover_tests::{assert_movers_equal, assert_round_trip};
    use crate::quant::q8_1::{self, QK8_1};
    use crate::quant::{quantize_row, test_values, BlockFormat};

    /// 8 random Q4_1 rows of `nb` blocks (reference quantizer) as row-major bytes, and a Q8_1
    /// activation row; `seed` varies the data.
    pub(crate) fn random_case(nb: usize, seed: u64) -> (Vec<u8>, Vec<BlockQ8_1>) {
        let cols = nb * QK8_1;
        // Off-centre values, so the minimums are non-trivial (negative and positive).
        let x = test_values(8 * cols, seed, 0.3, 2.0);
        let mut w = vec![0u8; 8 * nb * BLOCK];
        let rb = nb * BLOCK;
        for r in 0..8 {
            quantize_row(BlockFormat::Q4_1, &x[r * cols..][..cols], &mut w[r * rb..][..rb]).expect("quantize");
        }
        let act = test_values(cols, seed ^ 0x9e37_79b9, 0.5, 3.0);
        let mut a = vec![BlockQ8_1 { d: [0; 2], s: [0; 2], qs: [0; QK8_1] }; nb];
        q8_1::quantize(&act, &mut a);
        (w, a)
    }

    /// Where byte `j` of row `r`'s block lands inside the group-block (the layout above).
    fn position(r: usize, j: usize) -> usize {
        match j {
            0..2 => 2 * r + j,
            2..4 => M_OFFSET + 2 * r + (j - 2),
            _ => {
                let q = j - 4;
                QS_OFFSET + 32 * (q / 4) + 4 * r + q % 4
            }
        }
    }

    /// The straightforward per-byte [`interleave`] the fast versions replaced, kept as the
    /// reference they must equal byte for byte.
    fn interleave_reference(src: &[u8], nb: usize, dst: &mut [u8]) {
        for (b, gb) in dst.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
            for r in 0..8 {
                let blk = &src[(r * nb + b) * BLOCK..][..BLOCK];
                for (j, &byte) in blk.iter().enumerate() {
                    gb[position(r, j)] = byte;
                }
            }
        }
    }

    /// The straightforward per-byte [`deinterleave`] (see [`interleave_reference`]).
    fn deinterleave_reference(src: &[u8], nb: usize, dst: &mut [u8]) {
        for (b, gb) in src.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
            for r in 0..8 {
                let blk = &mut dst[(r * nb + b) * BLOCK..][..BLOCK];
                for (j, byte) in blk.iter_mut().enumerate() {
                    *byte = gb[position(r, j)];
                }
            }
        }
    }

    /// Portable and dispatched (AVX2 where present) versions equal the per-byte reference on
    /// random bytes, in both directions, over several group widths.
    #[test]
    fn fast_versions_equal_the_per_byte_reference() {
        assert_movers_equal(
            (interleave_reference, deinterleave_reference),
            &[("portable", interleave_portable, deinterleave_portable), ("dispatched", interleave, deinterleave)],
            GROUP_BLOCK_BYTES,
            &[(1, 61), (2, 67), (3, 71), (9, 73), (128, 79)],
        );
    }

    #[test]
    fn interleave_round_trip_is_byte_exact() {
        assert_round_trip(interleave, deinterleave, GROUP_BLOCK_BYTES, &[(1, 3), (2, 5), (7, 11), (128, 13)]);
    }

    #[test]
    fn interleave_puts_row_fields_where_the_header_says() {
        let nb = 3;
        let src: Vec<u8> = (0..nb * GROUP_BLOCK_BYTES).map(|i| (i % 251) as u8).collect();
        let mut group = vec![0u8; src.len()];
        interleave(&src, nb, &mut group);
        let (r, b) = (5, 2);
        let blk = &src[(r * nb + b) * BLOCK..][..BLOCK];
        let gb = &group[b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
        assert_eq!(&gb[2 * r..2 * r + 2], &blk[0..2], "d");
        assert_eq!(&gb[16 + 2 * r..16 + 2 * r + 2], &blk[2..4], "m");
        assert_eq!(gb[32 + 32 * 3 + 4 * r + 1], blk[4 + 13], "qs[13]");
    }

    #[test]
    fn dot_x8_is_bit_identical_to_scalar_vec_dot() {
        for (nb, seed) in [(1, 7), (3, 17), (16, 23), (128, 29)] {
            let (w, a) = random_case(nb, seed);
            let mut group = vec![0u8; w.len()];
            interleave(&w, nb, &mut group);
            let got = dot_x8(&group, &a);
            for (r, &g) in got.iter().enumerate() {
                let row: &[BlockQ4_1] = bytemuck::cast_slice(&w[r * nb * BLOCK..][..nb * BLOCK]);
                let want = super::super::vec_dot(row, &a);
                assert_eq!(g.to_bits(), want.to_bits(), "nb {nb} row {r}: {g} vs {want}");
            }
        }
    }
}
