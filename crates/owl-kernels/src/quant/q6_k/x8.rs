//! Q6_K weights repacked for decode matvec: 8 rows interleaved per super-block ("group-block").
//!
//! Why: the row-major kernels reduce every row separately and end each super-block with a
//! horizontal sum, which leaves them compute-bound below the memory bandwidth. Here one
//! 256-bit register holds 4 consecutive quants of each of 8 rows (lane `r` = row `r`), the 4
//! matching activation bytes are broadcast, and `_mm256_maddubs_epi16` / `_mm256_madd_epi16`
//! leave per-row sums in the lanes: no horizontal sums at all, one f16 conversion and one
//! float update per super-block for 8 rows. (The idea of interleaving rows follows ggml's
//! `ggml-cpu/repack.cpp`, `block_q4_0x8`; the byte layout below is our own, chosen so that
//! the AVX2 kernel rebuilds the 6-bit quants with few operations.)
//!
//! # Layout
//!
//! A matrix of `rows` (a multiple of 8) rows of `nb` super-blocks is stored as `rows / 8`
//! consecutive groups; a group holds `nb` group-blocks of [`GROUP_BLOCK_BYTES`] = 8 · 210 =
//! 1680 bytes (super-block 0 of its 8 rows, then super-block 1, ...), so the total size is
//! the row-major size. With `q[r][e]` the unsigned 6-bit quant (0..=63) of element `e` of
//! row `r` and `sc[r][j]` its sub-block scales (ggml `block_q6_K`, see [`super`]), a
//! group-block is:
//!
//! | bytes | content |
//! |---|---|
//! | `0..16` | `d` of rows 0..8, f16 little-endian |
//! | `16..144` | scales: byte `16 + 16p + 2r + h` = `sc[r][2p + h]` (`p < 8`, `h < 2`) |
//! | `144..1680` | quants: sub-block `j < 16` at `144 + 96j`, three 32-byte vectors `V_i` |
//!
//! Byte `4r + k` of `V_i` (`i < 3`, `k < 4`) is `q[r][16j + 4i + k]` in bits 0..6 and bits
//! `2i..2i+2` of `q[r][16j + 12 + k]` in bits 6..8. So `V_i & 0x3F` are the quants of
//! elements `4i..4i+4` of the sub-block for all 8 rows, and the fourth chunk (elements
//! `12..16`) is `(V_0 >> 6) | (V_1 >> 6) << 2 | (V_2 >> 6) << 4` per byte: 11 vector
//! operations for 128 quants. The scales of a sub-block pair sign-extend (one
//! `vpmovsxbw`) to `[sc[r][2p], sc[r][2p+1]]` in 32-bit lane `r`: the operand for the
//! `−32·Σ sc·bsum` offset term, and one in-lane shuffle away from the `[sc, sc]` pairs that
//! scale the `maddubs` sums.
//!
//! Every bit of a row-major block has exactly one place here, so [`interleave`] and
//! [`deinterleave`] are exact inverses on arbitrary bytes.

use super::BlockQ6K;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::util::f16_to_f32;
use crate::quant::QK_K;

/// Bytes of one group-block (the same super-block of 8 rows).
pub const GROUP_BLOCK_BYTES: usize = 8 * std::mem::size_of::<BlockQ6K>();

const BLOCK_BYTES: usize = std::mem::size_of::<BlockQ6K>();
/// Offset of the scales inside a group-block.
pub(crate) const SCALES_AT: usize = 16;
/// Offset of the quants inside a group-block.
pub(crate) const QUANTS_AT: usize = SCALES_AT + 8 * QK_K / 16;
/// Quant bytes of one sub-block of 16 elements for 8 rows.
pub(crate) const SUB_BLOCK_BYTES: usize = 96;

const _: () = assert!(QUANTS_AT + (QK_K / 16) * SUB_BLOCK_BYTES == GROUP_BLOCK_BYTES);

/// Little-endian word of `s[at..at + 4]` (used by the portable [`dot_x8`]).
#[inline(always)]
fn word(s: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]])
}

#[inline(always)]
fn put_word(s: &mut [u8], at: usize, w: u32) {
    s[at..at + 4].copy_from_slice(&w.to_le_bytes());
}

/// Little-endian word of a fixed-size array. With `at` a constant plus a lane offset known
/// to be below 32 (`4 · (r & 7)`), the index checks fold away once the loops are unrolled.
#[inline(always)]
fn rd<const N: usize>(s: &[u8; N], at: usize) -> u32 {
    u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]])
}

#[inline(always)]
fn wr<const N: usize>(s: &mut [u8; N], at: usize, w: u32) {
    let [a, b, c, d] = w.to_le_bytes();
    s[at] = a;
    s[at + 1] = b;
    s[at + 2] = c;
    s[at + 3] = d;
}

/// Byte masks for four bytes at a time (SWAR: the same bit operations in every byte; every
/// shift is followed by a mask, so no bits cross bytes).
const M03: u32 = 0x0303_0303;
const M0F: u32 = 0x0F0F_0F0F;
const M3F: u32 = 0x3F3F_3F3F;

/// Offsets of a row-major [`BlockQ6K`]'s fields (`repr(C)`, alignment 1).
const QL_AT: usize = 0;
const QH_AT: usize = QK_K / 2;
const BLOCK_SCALES_AT: usize = QH_AT + QK_K / 4;
const D_AT: usize = BLOCK_SCALES_AT + QK_K / 16;
const _: () = assert!(D_AT + 2 == BLOCK_BYTES);

/// Where the pieces of one row meet, in both layouts. Sub-blocks `j = 8n + 2k + h`
/// (`n, h < 2`, `k < 4`) cover elements `128n + 32k + 16h + 0..16`, so chunk `i` (4
/// elements) of the four sub-blocks `k` with the same `(n, h)` shares its 4 `ql`/`qh` byte
/// positions: low nibbles of `k = 0 | 2` in `ql[64n + 16h + 4i]`, of `k = 1 | 3` in
/// `ql[64n + 32 + 16h + 4i]`, top bit pairs of all four in `qh[32n + 16h + 4i]`. Both
/// directions therefore work on one `(n, h)` at a time: 12 interleaved words ↔ 12 row-major
/// words, with no intermediate quant array.
#[inline(always)]
fn row_words_at(n: usize, h: usize, i: usize) -> [usize; 3] {
    [QL_AT + 64 * n + 16 * h + 4 * i, QL_AT + 64 * n + 32 + 16 * h + 4 * i, QH_AT + 32 * n + 16 * h + 4 * i]
}

/// Offset in a group-block of vector `V_v` of sub-block `8n + 2k + h`.
#[inline(always)]
fn vector_at(n: usize, k: usize, h: usize, v: usize) -> usize {
    QUANTS_AT + SUB_BLOCK_BYTES * (8 * n + 2 * k + h) + 32 * v
}

/// Chunks `c[k]` (6-bit quants, one per byte) → the row-major words `[ql_a, ql_b, qh]`.
#[inline(always)]
fn pack_chunks(c: [u32; 4]) -> [u32; 3] {
    let top = |c: u32| (c >> 4) & M03;
    [
        (c[0] & M0F) | ((c[2] & M0F) << 4),
        (c[1] & M0F) | ((c[3] & M0F) << 4),
        top(c[0]) | (top(c[1]) << 2) | (top(c[2]) << 4) | (top(c[3]) << 6),
    ]
}

/// Inverse of [`pack_chunks`].
#[inline(always)]
fn unpack_chunks([ql_a, ql_b, qh]: [u32; 3]) -> [u32; 4] {
    [
        (ql_a & M0F) | ((qh & M03) << 4),
        (ql_b & M0F) | (((qh >> 2) & M03) << 4),
        ((ql_a >> 4) & M0F) | (((qh >> 4) & M03) << 4),
        ((ql_b >> 4) & M0F) | (((qh >> 6) & M03) << 4),
    ]
}

/// Row `r` of group-block `gb` → the row-major block `blk` (portable; four bytes at a time).
#[inline(always)]
fn deinterleave_row(gb: &[u8; GROUP_BLOCK_BYTES], r: usize, blk: &mut [u8; BLOCK_BYTES]) {
    let lane = 4 * (r & 7);
    for n in 0..2 {
        for h in 0..2 {
            // Sub-block k's three vectors, lane r.
            let v: [[u32; 3]; 4] =
                std::array::from_fn(|k| std::array::from_fn(|v| rd(gb, vector_at(n, k, h, v) + lane)));
            for i in 0..4 {
                let c: [u32; 4] = std::array::from_fn(|k| {
                    let [v0, v1, v2] = v[k];
                    if i < 3 {
                        v[k][i] & M3F
                    } else {
                        ((v0 >> 6) & M03) | (((v1 >> 6) & M03) << 2) | (((v2 >> 6) & M03) << 4)
                    }
                });
                for (at, w) in row_words_at(n, h, i).into_iter().zip(pack_chunks(c)) {
                    wr(blk, at, w);
                }
            }
        }
    }
    for p in 0..8 {
        let at = SCALES_AT + 16 * p + 2 * (r & 7);
        blk[BLOCK_SCALES_AT + 2 * p] = gb[at];
        blk[BLOCK_SCALES_AT + 2 * p + 1] = gb[at + 1];
    }
    blk[D_AT] = gb[2 * (r & 7)];
    blk[D_AT + 1] = gb[2 * (r & 7) + 1];
}

/// The row-major block `blk` → row `r` of group-block `gb` (portable; inverse of
/// [`deinterleave_row`]).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `k` and `v` index the two dimensions of `c`
fn interleave_row(blk: &[u8; BLOCK_BYTES], r: usize, gb: &mut [u8; GROUP_BLOCK_BYTES]) {
    let lane = 4 * (r & 7);
    for n in 0..2 {
        for h in 0..2 {
            // c[i][k]: chunk i of sub-block k.
            let c: [[u32; 4]; 4] = std::array::from_fn(|i| unpack_chunks(row_words_at(n, h, i).map(|at| rd(blk, at))));
            for k in 0..4 {
                let c3 = c[3][k];
                for v in 0..3 {
                    let w = c[v][k] | (((c3 >> (2 * v)) & M03) << 6);
                    wr(gb, vector_at(n, k, h, v) + lane, w);
                }
            }
        }
    }
    for p in 0..8 {
        let at = SCALES_AT + 16 * p + 2 * (r & 7);
        gb[at] = blk[BLOCK_SCALES_AT + 2 * p];
        gb[at + 1] = blk[BLOCK_SCALES_AT + 2 * p + 1];
    }
    gb[2 * (r & 7)] = blk[D_AT];
    gb[2 * (r & 7) + 1] = blk[D_AT + 1];
}

/// The unsigned quants of the 8 rows read back from a group-block (for [`dot_x8`]).
fn group_quants(gb: &[u8]) -> [[u8; QK_K]; 8] {
    let mut q = [[0u8; QK_K]; 8];
    for (r, qr) in q.iter_mut().enumerate() {
        for j in 0..QK_K / 16 {
            let at = QUANTS_AT + SUB_BLOCK_BYTES * j + 4 * r;
            let b = [word(gb, at), word(gb, at + 32), word(gb, at + 64)];
            for (i, &bi) in b.iter().enumerate() {
                put_word(qr, 16 * j + 4 * i, bi & 0x3F3F_3F3F);
            }
            let top = ((b[0] >> 6) & 0x0303_0303) | ((b[1] >> 4) & 0x0C0C_0C0C) | ((b[2] >> 2) & 0x3030_3030);
            put_word(qr, 16 * j + 12, top);
        }
    }
    q
}

crate::quant::interleave::simd_group_movers!("Q6_K");

/// The portable [`interleave`]: row by row, so each row's blocks are read in order.
fn interleave_portable(src: &[u8], nb: usize, dst: &mut [u8]) {
    if nb == 0 {
        return;
    }
    let (gbs, _) = dst.as_chunks_mut::<GROUP_BLOCK_BYTES>();
    for (r, row) in src.chunks_exact(nb * BLOCK_BYTES).enumerate() {
        let (blks, _) = row.as_chunks::<BLOCK_BYTES>();
        for (blk, gb) in blks.iter().zip(gbs.iter_mut()) {
            interleave_row(blk, r, gb);
        }
    }
}

/// The portable [`deinterleave`]: row by row, so each row's blocks are written in order.
fn deinterleave_portable(src: &[u8], nb: usize, dst: &mut [u8]) {
    if nb == 0 {
        return;
    }
    let (gbs, _) = src.as_chunks::<GROUP_BLOCK_BYTES>();
    for (r, row) in dst.chunks_exact_mut(nb * BLOCK_BYTES).enumerate() {
        let (blks, _) = row.as_chunks_mut::<BLOCK_BYTES>();
        for (gb, blk) in gbs.iter().zip(blks.iter_mut()) {
            deinterleave_row(gb, r, blk);
        }
    }
}

/// Row `r · a` for the 8 rows of a group: the portable reference of the AVX2 kernel.
///
/// Per super-block and row the same integer `Σ_j sc_j·Σ (q − 32)·a` and the same float update
/// `sum += (d·d_a)·isum` as the scalar [`super::vec_dot`], in the same order, so each output
/// equals `vec_dot` of that row bit for bit.
///
/// Lengths: `group.len() == a.len() * GROUP_BLOCK_BYTES` (debug-asserted; in release builds
/// cut to the shorter side).
pub fn dot_x8(group: &[u8], a: &[BlockQ8K]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let mut sum = [0.0f32; 8];
    for (gb, y) in group.chunks_exact(GROUP_BLOCK_BYTES).zip(a) {
        let q = group_quants(gb);
        for (r, (s, qr)) in sum.iter_mut().zip(&q).enumerate() {
            let mut isum = 0i32;
            for (j, (qs, q8)) in qr.chunks_exact(16).zip(y.qs.chunks_exact(16)).enumerate() {
                let sc = gb[SCALES_AT + 16 * (j / 2) + 2 * r + j % 2] as i8;
                let mut isuml = 0i32;
                for (&q, &a) in qs.iter().zip(q8) {
                    isuml += (q as i32 - 32) * a as i32;
                }
                isum += sc as i32 * isuml;
            }
            let d = f16_to_f32([gb[2 * r], gb[2 * r + 1]]);
            *s += (d * y.d) * isum as f32;
        }
    }
    sum
}

/// The first, straightforward (de)interleaver (through whole arrays of unpacked quants): the
/// reference the fast paths are tested against.
#[cfg(test)]
pub(crate) mod reference {
    use super::*;

    /// The unsigned quants (0..=63) of a block in element order (ggml's bit layout: see
    /// [`super::super`]): element `128n + 32k + l` = nibble `k/2` of `ql[64n + 32(k%2) + l]` |
    /// bits `2k..2k+2` of `qh[32n + l]` << 4.
    pub(crate) fn unpack_quants(b: &BlockQ6K) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for n in 0..2 {
            for k in 0..4 {
                for l in (0..32).step_by(4) {
                    let low = (word(&b.ql, 64 * n + 32 * (k % 2) + l) >> (4 * (k / 2))) & 0x0F0F_0F0F;
                    let high = (word(&b.qh, 32 * n + l) >> (2 * k)) & 0x0303_0303;
                    put_word(&mut q, 128 * n + 32 * k + l, low | (high << 4));
                }
            }
        }
        q
    }

    /// Inverse of [`unpack_quants`]: `q` (6-bit values) into `ql`/`qh` as ggml stores them
    /// (the packing of `quantize_row_q6_K_ref`).
    pub(crate) fn pack_quants(q: &[u8; QK_K], b: &mut BlockQ6K) {
        for n in 0..2 {
            for l in (0..32).step_by(4) {
                let [q1, q2, q3, q4] = std::array::from_fn(|k| word(q, 128 * n + 32 * k + l));
                let nib = 0x0F0F_0F0F;
                put_word(&mut b.ql, 64 * n + l, (q1 & nib) | ((q3 & nib) << 4));
                put_word(&mut b.ql, 64 * n + 32 + l, (q2 & nib) | ((q4 & nib) << 4));
                let top = |q: u32| (q >> 4) & 0x0303_0303;
                put_word(&mut b.qh, 32 * n + l, top(q1) | (top(q2) << 2) | (top(q3) << 4) | (top(q4) << 6));
            }
        }
    }

    /// The 8 rows' quants (as from [`unpack_quants`]) into the quant part of a group-block.
    fn put_group_quants(q: &[[u8; QK_K]; 8], gb: &mut [u8]) {
        for (r, qr) in q.iter().enumerate() {
            for j in 0..QK_K / 16 {
                let w3 = word(qr, 16 * j + 12);
                for i in 0..3 {
                    let w = (word(qr, 16 * j + 4 * i) & 0x3F3F_3F3F) | (((w3 >> (2 * i)) & 0x0303_0303) << 6);
                    put_word(gb, QUANTS_AT + SUB_BLOCK_BYTES * j + 32 * i + 4 * r, w);
                }
            }
        }
    }

    /// Reference [`super::interleave`].
    pub(crate) fn interleave(src: &[u8], nb: usize, dst: &mut [u8]) {
        for (b, gb) in dst.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
            let block = |r: usize| -> &BlockQ6K {
                let at = (r * nb + b) * BLOCK_BYTES;
                bytemuck::from_bytes(&src[at..at + BLOCK_BYTES])
            };
            let mut q = [[0u8; QK_K]; 8];
            for (r, qr) in q.iter_mut().enumerate() {
                let blk = block(r);
                gb[2 * r..2 * r + 2].copy_from_slice(&blk.d);
                for (j, &s) in blk.scales.iter().enumerate() {
                    gb[SCALES_AT + 16 * (j / 2) + 2 * r + j % 2] = s as u8;
                }
                *qr = unpack_quants(blk);
            }
            put_group_quants(&q, gb);
        }
    }

    /// Reference [`super::deinterleave`].
    pub(crate) fn deinterleave(src: &[u8], nb: usize, dst: &mut [u8]) {
        for (b, gb) in src.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
            let q = group_quants(gb);
            for (r, qr) in q.iter().enumerate() {
                let at = (r * nb + b) * BLOCK_BYTES;
                let blk: &mut BlockQ6K = bytemuck::from_bytes_mut(&mut dst[at..at + BLOCK_BYTES]);
                blk.d.copy_from_slice(&gb[2 * r..2 * r + 2]);
                for (j, s) in blk.scales.iter_mut().enumerate() {
                    *s = gb[SCALES_AT + 16 * (j / 2) + 2 * r + j % 2] as i8;
                }
                pack_quants(qr, blk);
            }
        }
    }
}

/// Test data shared with the AVX2 kernel's tests.
#[cfg(test)]
pub(crate) mod test_data {
    use super::reference::pack_quants;
    use super::*;
    use crate::quant::{q8_k, test_rows, test_values, BlockFormat};

    /// `rows × nb` row-major Q6_K blocks from the reference quantizer (values with varied
    /// magnitudes per row so the scales differ).
    pub(crate) fn quantized_rows(rows: usize, nb: usize, seed: u64) -> Vec<u8> {
        let cols = nb * QK_K;
        let mut src = test_values(rows * cols, seed, 0.5, 2.0);
        for (r, row) in src.chunks_exact_mut(cols).enumerate() {
            let m = 0.25 + r as f32 * 0.5;
            row.iter_mut().for_each(|v| *v *= m);
        }
        test_rows(BlockFormat::Q6_K, &src, rows, cols).0
    }

    /// `rows × nb` blocks of random bytes with finite scales `d` in [2^-14, 2^-4) (every quant
    /// value and scale byte occurs).
    pub(crate) fn random_blocks(rows: usize, nb: usize, seed: u64) -> Vec<u8> {
        let vals = test_values(rows * nb * BLOCK_BYTES, seed, 0.0, 256.0);
        let mut bytes: Vec<u8> = vals.iter().map(|&v| v as u8).collect();
        for (i, blk) in bytes.chunks_exact_mut(BLOCK_BYTES).enumerate() {
            // f16 exponent field 1..=11, random mantissa, random sign.
            let e = 1 + (blk[0] as u16 % 11);
            let bits = (u16::from(blk[1] & 0x80) << 8) | (e << 10) | (u16::from(blk[2]) << 2) | (i as u16 % 4);
            blk[BLOCK_BYTES - 2..].copy_from_slice(&bits.to_le_bytes());
        }
        bytes
    }

    /// `nb` Q8_K activation blocks.
    pub(crate) fn activations(nb: usize, seed: u64) -> Vec<BlockQ8K> {
        let x = test_values(nb * QK_K, seed, 0.5, 3.0);
        let mut a = vec![bytemuck::Zeroable::zeroed(); nb];
        q8_k::quantize(&x, &mut a);
        a
    }

    /// Q8_K blocks with every quant `v` (bsums consistent), `d = 0.5`.
    pub(crate) fn constant_activations(nb: usize, v: i8) -> Vec<BlockQ8K> {
        let blk = BlockQ8K { d: 0.5, qs: [v; QK_K], bsums: [16 * v as i16; QK_K / 16] };
        vec![blk; nb]
    }

    /// `rows × nb` blocks with every quant `q` (0..=63), every scale `sc`, `d = 1`.
    pub(crate) fn constant_blocks(rows: usize, nb: usize, q: u8, sc: i8) -> Vec<u8> {
        let mut blk: BlockQ6K = bytemuck::Zeroable::zeroed();
        pack_quants(&[q; QK_K], &mut blk);
        blk.scales = [sc; QK_K / 16];
        blk.d = [0x00, 0x3C];
        bytemuck::bytes_of(&blk).repeat(rows * nb)
    }

    /// `vec_dot` of each of the 8 row-major rows.
    pub(crate) fn row_dots(rows: &[u8], nb: usize, a: &[BlockQ8K]) -> [f32; 8] {
        std::array::from_fn(|r| {
            let w: &[BlockQ6K] = bytemuck::cast_slice(&rows[r * nb * BLOCK_BYTES..(r + 1) * nb * BLOCK_BYTES]);
            super::super::vec_dot(w, a)
        })
    }

    /// `rows` interleaved.
    pub(crate) fn interleaved(rows: &[u8], nb: usize) -> Vec<u8> {
        let mut g = vec![0u8; rows.len()];
        interleave(rows, nb, &mut g);
        g
    }
}

#[cfg(test)]
mod tests {
    use super::reference::{pack_quants, unpack_quants};
    use super::test_data::*;
    use super::*;
    use crate::quant::interleave::mover_tests::{assert_movers_equal, assert_round_trip, GroupMove};

    #[test]
    fn interleave_round_trip_is_byte_exact() {
        assert_round_trip(interleave, deinterleave, GROUP_BLOCK_BYTES, &[(1, 11), (2, 12), (3, 13), (7, 14)]);
    }

    /// The fast paths (portable word-wise, AVX2 where the CPU has it, and the dispatching
    /// public functions) give the reference's bytes in both directions, on random bytes.
    #[test]
    fn fast_paths_equal_the_reference() {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut paths: Vec<(&str, GroupMove, GroupMove)> =
            vec![("portable", interleave_portable, deinterleave_portable), ("dispatch", interleave, deinterleave)];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            paths.push((
                "avx2",
                // SAFETY (both): AVX2 detected; the checks pass matching lengths.
                |s, nb, d| unsafe { super::super::x8_shuffle_avx2::interleave(s, nb, d) },
                |s, nb, d| unsafe { super::super::x8_shuffle_avx2::deinterleave(s, nb, d) },
            ));
        } else {
            eprintln!("no AVX2 on this CPU: the AVX2 (de)interleaver is not tested");
        }
        assert_movers_equal(
            (reference::interleave, reference::deinterleave),
            &paths,
            GROUP_BLOCK_BYTES,
            &[(0, 40), (1, 41), (2, 42), (3, 43), (16, 44)],
        );
    }

    #[test]
    fn word_wise_unpacking_matches_the_block_accessor() {
        let bytes = random_blocks(1, 3, 15);
        for blk in bytemuck::cast_slice::<u8, BlockQ6K>(&bytes) {
            let q = unpack_quants(blk);
            let want = blk.quants();
            assert!(q.iter().zip(&want).all(|(&u, &s)| u as i32 - 32 == s as i32));
            let mut back = *blk;
            back.ql = [0; QK_K / 2];
            back.qh = [0; QK_K / 4];
            pack_quants(&q, &mut back);
            assert_eq!(&back, blk);
        }
    }

    #[test]
    fn layout_matches_module_header() {
        // Row 5, block 1 of 2: element 16·3 + 12 + 2 (sub-block 3, fourth chunk, k = 2) and
        // element 16·3 + 4 + 2 (second chunk, k = 2) share byte 4·5 + 2 of V_1.
        let nb = 2;
        let mut rows = random_blocks(8, nb, 21);
        let blk: &mut BlockQ6K =
            bytemuck::from_bytes_mut(&mut rows[(5 * nb + 1) * BLOCK_BYTES..(5 * nb + 2) * BLOCK_BYTES]);
        let mut q = unpack_quants(blk);
        q[16 * 3 + 4 + 2] = 0b10_1101;
        q[16 * 3 + 12 + 2] = 0b01_10_11;
        pack_quants(&q, blk);
        blk.scales[7] = -77;
        let d = blk.d;
        let g = interleaved(&rows, nb);
        let gb = &g[GROUP_BLOCK_BYTES..];
        assert_eq!(gb[QUANTS_AT + 96 * 3 + 32 + 4 * 5 + 2], (0b10 << 6) | 0b10_1101);
        assert_eq!(gb[SCALES_AT + 16 * 3 + 2 * 5 + 1] as i8, -77);
        assert_eq!(gb[10..12], d);
    }

    /// Bit-exact: the same integer sums and the same float expression in the same order as
    /// the scalar `vec_dot` (tolerance 0).
    #[test]
    fn dot_x8_equals_scalar_vec_dot_bit_for_bit() {
        for (nb, seed) in [(1, 31), (2, 32), (5, 33)] {
            let a = activations(nb, seed + 100);
            for rows in [quantized_rows(8, nb, seed), random_blocks(8, nb, seed + 200)] {
                let got = dot_x8(&interleaved(&rows, nb), &a);
                let want = row_dots(&rows, nb, &a);
                for r in 0..8 {
                    assert_eq!(got[r].to_bits(), want[r].to_bits(), "nb {nb} row {r}: {} vs {}", got[r], want[r]);
                    assert!(want[r] != 0.0);
                }
            }
        }
    }

    /// Extreme quants, scales and activations: the integer sums still match (no overflow).
    #[test]
    fn dot_x8_extremes_match_scalar() {
        for (q, sc, v) in [(63u8, -128i8, 127i8), (63, -128, -128), (0, 127, -128), (63, 127, 127), (0, -128, 127)] {
            let rows = constant_blocks(8, 2, q, sc);
            let a = constant_activations(2, v);
            let got = dot_x8(&interleaved(&rows, 2), &a);
            let want = row_dots(&rows, 2, &a);
            let exact = 2.0 * 0.5 * 256.0 * sc as f32 * (q as f32 - 32.0) * v as f32;
            for r in 0..8 {
                assert_eq!(got[r].to_bits(), want[r].to_bits());
                assert_eq!(got[r], exact);
            }
        }
    }
}
