//! Q8_0 in the 8-row interleaved layout (decode matvec; see `quant::interleave`).
//!
//! A group of 8 rows stores, per block index, one 272-byte group-block (the 8 rows' 34
//! bytes, rearranged):
//! - bytes `0..16`: the 8 rows' f16 scales, row `r` at `2r`;
//! - bytes `16..272`: eight 32-byte chunks; chunk `c` holds row `r`'s quants `4c..4c + 4`
//!   at `16 + 32c + 4r`, so a 256-bit load has row `r` in lane `r`.
//!
//! After ggml's repacking idea (`ggml-cpu/repack.cpp`); the chunk order is our own.

use super::{BlockQ8_0, QK8_0};
use crate::quant::interleave::{deinterleave_words, interleave_words};
use crate::quant::util::f16_to_f32;

/// Bytes of one group-block: 8 rows' blocks.
pub const GROUP_BLOCK_BYTES: usize = 8 * size_of::<BlockQ8_0>();

const BLOCK: usize = size_of::<BlockQ8_0>();

/// 8 consecutive row-major rows of `nb` blocks (`src`) → one group (`dst`, same length).
pub fn interleave(src: &[u8], nb: usize, dst: &mut [u8]) {
    interleave_words::<BLOCK, 1, { QK8_0 / 4 }>(src, nb, dst)
}

/// The inverse of [`interleave`] (on every prefill chunk of an interleaved matrix).
pub fn deinterleave(src: &[u8], nb: usize, dst: &mut [u8]) {
    deinterleave_words::<BLOCK, 1, { QK8_0 / 4 }>(src, nb, dst)
}

/// Row `r` of one group · `a`, for the 8 rows: the scalar `vec_dot`'s integer block sums and
/// per-block float products, in the same order (so the same bits).
pub fn dot_x8(group: &[u8], a: &[BlockQ8_0]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let mut sum = [0.0f32; 8];
    for (g, y) in group.chunks_exact(GROUP_BLOCK_BYTES).zip(a) {
        for (r, s) in sum.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for (j, &q) in y.qs.iter().enumerate() {
                sumi += g[16 + 32 * (j / 4) + 4 * r + j % 4] as i8 as i32 * q as i32;
            }
            *s += sumi as f32 * (f16_to_f32([g[2 * r], g[2 * r + 1]]) * y.d());
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_row, test_rows, test_values, BlockFormat};

    /// The layout as the module header states it, byte by byte.
    #[test]
    fn interleave_puts_bytes_where_the_header_says() {
        let nb = 3;
        let src: Vec<u8> = (0..8 * nb * BLOCK).map(|i| (i * 31 % 251) as u8).collect();
        let mut g = vec![0u8; src.len()];
        interleave(&src, nb, &mut g);
        for b in 0..nb {
            for r in 0..8 {
                let x = &src[(r * nb + b) * BLOCK..][..BLOCK];
                let gb = &g[b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
                assert_eq!(gb[2 * r..2 * r + 2], x[..2]);
                for j in 0..QK8_0 {
                    assert_eq!(gb[16 + 32 * (j / 4) + 4 * r + j % 4], x[2 + j], "b {b} r {r} j {j}");
                }
            }
        }
    }

    #[test]
    fn interleave_round_trips_and_dot_x8_equals_vec_dot() {
        for nb in [1, 2, 7, 18] {
            let cols = nb * QK8_0;
            let (w, _) = test_rows(BlockFormat::Q8_0, &test_values(8 * cols, 5 + nb as u64, 0.0, 1.0), 8, cols);
            let mut g = vec![0u8; w.len()];
            interleave(&w, nb, &mut g);
            let mut back = vec![0u8; w.len()];
            deinterleave(&g, nb, &mut back);
            assert_eq!(back, w, "nb {nb}");
            let x = test_values(cols, 13, 0.0, 1.0);
            let mut act = vec![0u8; nb * size_of::<BlockQ8_0>()];
            quantize_row(BlockFormat::Q8_0, &x, &mut act).expect("quantize");
            let a: &[BlockQ8_0] = bytemuck::cast_slice(&act);
            let rows: &[BlockQ8_0] = bytemuck::cast_slice(&w);
            let got = dot_x8(&g, a);
            for r in 0..8 {
                assert_eq!(
                    got[r].to_bits(),
                    super::super::vec_dot(&rows[r * nb..(r + 1) * nb], a).to_bits(),
                    "nb {nb} row {r}"
                );
            }
        }
    }
}
