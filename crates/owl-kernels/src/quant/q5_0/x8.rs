//! Q5_0 weights repacked 8 rows at a time for the decode matvec ("x8" layout), and the
//! portable reference dot product over one such group.
//!
//! Why: the row-major kernels ([`super::avx2`]) spend their time on per-row horizontal sums,
//! scale shuffles and the per-row expansion of the fifth bits, and stay compute-bound below
//! the machine's read bandwidth. With 8 rows interleaved per block, one 256-bit register holds
//! 4 consecutive quant bytes of each of the 8 rows, so a broadcast activation chunk times that
//! register gives the 8 rows' partial sums in the 8 i32 lanes (lane r = row r), the 8 rows'
//! scales convert with one `vcvtph2ps` and one FMA per block applies them: no horizontal sum.
//! The idea is ggml's `block_q4_0x8` repacking (`ggml-cpu/repack.cpp`); the layout below,
//! in particular the bit-plane order of the fifth bits, is our own.
//!
//! Layout. A matrix of `rows` (a multiple of 8) rows of `nb` blocks is stored as `rows / 8`
//! consecutive groups; a group is `nb` group-blocks of [`GROUP_BLOCK_BYTES`] = 176 bytes
//! (8 × `BlockQ5_0`, so sizes and byte counts equal the row-major ones). Group-block `b`
//! holds block `b` of the group's rows `r = 0..8`:
//!
//! | bytes    | content                                                                   |
//! |----------|---------------------------------------------------------------------------|
//! | 0..16    | `d` of row r at `2r` (f16 LE)                                             |
//! | 16..48   | fifth bits: bit `2c + h` of byte `16 + 4r + k` = bit 4 of row r's element `16h + 4c + k` (c, k < 4, h < 2) |
//! | 48..176  | low nibbles: byte `48 + 32c + 4r + k` = row r's `qs[4c + k]`              |
//!
//! Quant chunk `c` (32 bytes) holds row r's elements `4c..4c+4` (low nibbles, `h = 0`) and
//! `16+4c..16+4c+4` (high nibbles, `h = 1`) in bytes `4r..4r+4`, matching the activation
//! bytes `qs[4c..4c+4]` and `qs[16+4c..16+4c+4]` broadcast to all lanes. The fifth bits of
//! the register for `(c, h)` are bit plane `2c + h` of the 32 fifth-bit bytes, byte for byte
//! in the same lane order, so the kernel gets them as 0x10 with one shift and one mask of
//! the whole 32-byte plane register (instead of spreading a 32-bit word to bytes).

use crate::quant::q8_0::BlockQ8_0;
use crate::quant::util::f16_to_f32;

use super::BlockQ5_0;

/// Bytes of one group-block: block `b` of 8 rows.
pub const GROUP_BLOCK_BYTES: usize = 8 * size_of::<BlockQ5_0>();

const BLOCK: usize = size_of::<BlockQ5_0>();
/// Offset of the fifth-bit planes in a group-block.
pub(crate) const QH_OFFSET: usize = 16;
/// Offset of the nibble chunks in a group-block.
pub(crate) const QS_OFFSET: usize = 48;

crate::quant::interleave::simd_group_movers!("Q5_0");

/// Exchanges the bits of `x` under `mask` with the bits `shift` places above them (a
/// "delta swap": `mask` and `mask << shift` must not overlap).
#[inline(always)]
pub(crate) const fn delta_swap(x: u32, mask: u32, shift: u32) -> u32 {
    let t = ((x >> shift) ^ x) & mask;
    x ^ t ^ (t << shift)
}

/// The delta swaps that turn one row's `qh` word into its 4 fifth-bit plane bytes, as
/// `(mask, shift)`, applied in order (the inverse applies them in reverse: each is its own
/// inverse).
///
/// Bit `i = 16h + 4c + k` of `qh` goes to bit `o = 8k + 2c + h` of the little-endian plane
/// word: writing bit indices in binary, `i = [h c1 c0 k1 k0]` becomes `o = [k1 k0 c1 c0 h]`,
/// a permutation of the 5 index bits. Exchanging index bits `p < q` is one delta swap
/// (shift `2^q − 2^p`, mask: the bit positions whose index has bit p set and bit q clear),
/// and four exchanges of index-bit positions do it: (0 4) moves `h` home to 0, then (3 4)
/// `k0` to 3, (1 4) `k1` to 4, and (1 2) swaps `c1`, `c0` into 2, 1.
pub(crate) const QH_TO_PLANES: [(u32, u32); 4] =
    [(0x0000_AAAA, 15), (0x0000_FF00, 8), (0x0000_CCCC, 14), (0x0C0C_0C0C, 2)];

/// One row's `qh` word → its 4 plane bytes (bytes `16 + 4r .. + 4` of the group-block) as a
/// little-endian word.
#[inline(always)]
pub(crate) const fn qh_to_planes(qh: u32) -> u32 {
    let [a, b, c, d] = QH_TO_PLANES;
    delta_swap(delta_swap(delta_swap(delta_swap(qh, a.0, a.1), b.0, b.1), c.0, c.1), d.0, d.1)
}

/// The inverse of [`qh_to_planes`].
#[inline(always)]
pub(crate) const fn planes_to_qh(planes: u32) -> u32 {
    let [a, b, c, d] = QH_TO_PLANES;
    delta_swap(delta_swap(delta_swap(delta_swap(planes, d.0, d.1), c.0, c.1), b.0, b.1), a.0, a.1)
}

/// Copies 4 bytes from `src[from..]` to `dst[to..]` (a fixed-size copy the optimizer turns
/// into one 32-bit load and store; with array arguments and constant offsets, no bounds
/// check survives).
#[inline(always)]
fn copy4(src: &[u8], from: usize, dst: &mut [u8], to: usize) {
    dst[to..to + 4].copy_from_slice(&src[from..from + 4]);
}

/// Portable [`interleave`]: word-level field copies and the fifth bits moved by
/// [`qh_to_planes`]. The reference for the AVX2 version.
pub(crate) fn interleave_portable(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q5_0 x8 interleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q5_0 x8 interleave: destination length");
    let blocks: &[[u8; BLOCK]] = src.as_chunks().0;
    for (b, gb) in dst.as_chunks_mut::<GROUP_BLOCK_BYTES>().0.iter_mut().enumerate() {
        for r in 0..8 {
            let blk = &blocks[r * nb + b];
            gb[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            gb[QH_OFFSET + 4 * r..QH_OFFSET + 4 * r + 4].copy_from_slice(&qh_to_planes(qh).to_le_bytes());
            for c in 0..4 {
                copy4(blk, 6 + 4 * c, gb, QS_OFFSET + 32 * c + 4 * r);
            }
        }
    }
}

/// Portable [`deinterleave`], the exact inverse of [`interleave_portable`].
pub(crate) fn deinterleave_portable(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q5_0 x8 deinterleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q5_0 x8 deinterleave: destination length");
    let blocks: &mut [[u8; BLOCK]] = dst.as_chunks_mut().0;
    for (b, gb) in src.as_chunks::<GROUP_BLOCK_BYTES>().0.iter().enumerate() {
        for r in 0..8 {
            let blk = &mut blocks[r * nb + b];
            blk[0..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
            let p = QH_OFFSET + 4 * r;
            let planes = u32::from_le_bytes([gb[p], gb[p + 1], gb[p + 2], gb[p + 3]]);
            blk[2..6].copy_from_slice(&planes_to_qh(planes).to_le_bytes());
            for c in 0..4 {
                copy4(gb, QS_OFFSET + 32 * c + 4 * r, blk, 6 + 4 * c);
            }
        }
    }
}

/// The 8 rows of one group (`group.len() == a.len() · GROUP_BLOCK_BYTES`) against one
/// activation row: `out[r]` = row r · a, bit-identical to the scalar [`super::vec_dot`] of
/// row r (same integer block sums `Σ(q − 16)·a`, same float operations in the same order:
/// `(d·d8)·sumi` per block, added to the row's sum).
///
/// # Panics
/// If the lengths do not match.
pub fn dot_x8(group: &[u8], a: &[BlockQ8_0]) -> [f32; 8] {
    assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES, "Q5_0 x8 dot: group length");
    let mut out = [0.0f32; 8];
    for (gb, y) in group.chunks_exact(GROUP_BLOCK_BYTES).zip(a) {
        let dy = y.d();
        for (r, sum) in out.iter_mut().enumerate() {
            let d = f16_to_f32([gb[2 * r], gb[2 * r + 1]]);
            let mut sumi = 0i32;
            for c in 0..4 {
                for k in 0..4 {
                    let q = gb[QS_OFFSET + 32 * c + 4 * r + k];
                    let plane = gb[QH_OFFSET + 4 * r + k];
                    let q0 = (q & 0x0F) | (((plane >> (2 * c)) & 1) << 4);
                    let q1 = (q >> 4) | (((plane >> (2 * c + 1)) & 1) << 4);
                    sumi += (q0 as i32 - 16) * y.qs[4 * c + k] as i32;
                    sumi += (q1 as i32 - 16) * y.qs[16 + 4 * c + k] as i32;
                }
            }
            *sum += (d * dy) * sumi as f32;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::interleave::mover_tests::{assert_movers_equal, assert_round_trip};
    use crate::quant::q8_0::{self, QK8_0};
    use crate::quant::{quantize_row, test_values, BlockFormat};

    /// 8 random Q5_0 rows of `nb` blocks (reference quantizer) as row-major bytes, and a Q8_0
    /// activation row; `seed` varies the data.
    pub(crate) fn random_case(nb: usize, seed: u64) -> (Vec<u8>, Vec<BlockQ8_0>) {
        let cols = nb * QK8_0;
        let x = test_values(8 * cols, seed, 0.4, 2.0);
        let mut w = vec![0u8; 8 * nb * BLOCK];
        let rb = nb * BLOCK;
        for r in 0..8 {
            quantize_row(BlockFormat::Q5_0, &x[r * cols..][..cols], &mut w[r * rb..][..rb]).expect("quantize");
        }
        let act = test_values(cols, seed ^ 0x9e37_79b9, 0.5, 3.0);
        let mut a = vec![BlockQ8_0 { d: [0; 2], qs: [0; QK8_0] }; nb];
        q8_0::quantize(&act, &mut a);
        (w, a)
    }

    /// The straightforward per-bit [`interleave`] the fast versions replaced, kept as the
    /// reference they must equal byte for byte.
    fn interleave_reference(src: &[u8], nb: usize, dst: &mut [u8]) {
        for (b, gb) in dst.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
            let (scales, rest) = gb.split_at_mut(QH_OFFSET);
            let (planes, quants) = rest.split_at_mut(QS_OFFSET - QH_OFFSET);
            planes.fill(0);
            for r in 0..8 {
                let blk: &BlockQ5_0 = bytemuck::from_bytes(&src[(r * nb + b) * BLOCK..][..BLOCK]);
                scales[2 * r..2 * r + 2].copy_from_slice(&blk.d);
                let qh = blk.qh();
                for c in 0..4 {
                    for k in 0..4 {
                        quants[32 * c + 4 * r + k] = blk.qs[4 * c + k];
                        for h in 0..2 {
                            let bit = (qh >> (16 * h + 4 * c + k)) & 1;
                            planes[4 * r + k] |= (bit as u8) << (2 * c + h);
                        }
                    }
                }
            }
        }
    }

    /// The straightforward per-bit [`deinterleave`] (see [`interleave_reference`]).
    fn deinterleave_reference(src: &[u8], nb: usize, dst: &mut [u8]) {
        for (b, gb) in src.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
            for r in 0..8 {
                let blk: &mut BlockQ5_0 = bytemuck::from_bytes_mut(&mut dst[(r * nb + b) * BLOCK..][..BLOCK]);
                blk.d.copy_from_slice(&gb[2 * r..2 * r + 2]);
                let mut qh = 0u32;
                for c in 0..4 {
                    for k in 0..4 {
                        blk.qs[4 * c + k] = gb[QS_OFFSET + 32 * c + 4 * r + k];
                        let plane = gb[QH_OFFSET + 4 * r + k];
                        for h in 0..2 {
                            qh |= (((plane >> (2 * c + h)) & 1) as u32) << (16 * h + 4 * c + k);
                        }
                    }
                }
                blk.qh = qh.to_le_bytes();
            }
        }
    }

    /// Portable and dispatched (AVX2 where present) versions equal the per-bit reference on
    /// random bytes, in both directions, over several group widths.
    #[test]
    fn fast_versions_equal_the_per_bit_reference() {
        assert_movers_equal(
            (interleave_reference, deinterleave_reference),
            &[("portable", interleave_portable, deinterleave_portable), ("dispatched", interleave, deinterleave)],
            GROUP_BLOCK_BYTES,
            &[(1, 61), (2, 67), (3, 71), (9, 73), (128, 79)],
        );
    }

    /// The word-level bit permutation moves every single bit where the layout says.
    #[test]
    fn qh_to_planes_moves_each_bit_as_the_header_says() {
        for h in 0..2 {
            for c in 0..4 {
                for k in 0..4 {
                    let (i, o) = (16 * h + 4 * c + k, 8 * k + 2 * c + h);
                    assert_eq!(qh_to_planes(1 << i), 1 << o, "qh bit {i}");
                    assert_eq!(planes_to_qh(1 << o), 1 << i, "plane bit {o}");
                }
            }
        }
    }

    #[test]
    fn interleave_round_trip_is_byte_exact() {
        assert_round_trip(interleave, deinterleave, GROUP_BLOCK_BYTES, &[(1, 3), (2, 5), (7, 11), (128, 13)]);
    }

    /// One set fifth bit lands on the plane bit and byte the header gives.
    #[test]
    fn interleave_puts_fifth_bits_where_the_header_says() {
        let nb = 2;
        for (r, e) in [(0, 0), (3, 5), (6, 16 + 9), (7, 31)] {
            let mut src = vec![0u8; nb * GROUP_BLOCK_BYTES];
            let b = 1;
            let at = (r * nb + b) * BLOCK + 2;
            src[at..at + 4].copy_from_slice(&(1u32 << e).to_le_bytes());
            let mut group = vec![0u8; src.len()];
            interleave(&src, nb, &mut group);
            let (h, c, k) = (e / 16, e % 16 / 4, e % 4);
            let mut want = vec![0u8; src.len()];
            want[b * GROUP_BLOCK_BYTES + QH_OFFSET + 4 * r + k] = 1 << (2 * c + h);
            assert_eq!(group, want, "row {r} element {e}");
        }
    }

    #[test]
    fn dot_x8_is_bit_identical_to_scalar_vec_dot() {
        for (nb, seed) in [(1, 7), (3, 17), (16, 23), (128, 29)] {
            let (w, a) = random_case(nb, seed);
            let mut group = vec![0u8; w.len()];
            interleave(&w, nb, &mut group);
            let got = dot_x8(&group, &a);
            for (r, &g) in got.iter().enumerate() {
                let row: &[BlockQ5_0] = bytemuck::cast_slice(&w[r * nb * BLOCK..][..nb * BLOCK]);
                let want = super::super::vec_dot(row, &a);
                assert_eq!(g.to_bits(), want.to_bits(), "nb {nb} row {r}: {g} vs {want}");
            }
        }
    }
}
