//! Q8_0 · Q8_0 over one group of the 8-row interleaved layout ([`super::x8`]), AVX2.
//!
//! Lane `r` of every register is row `r`: a chunk load gives 8 rows × 4 quants, multiplied
//! with the broadcast 4 activation bytes of the same elements by `maddubs` with the sign
//! moved onto the activations (`|w| · sign(a, w)`, exact in i16: 2·128·127 < 2¹⁵), widened
//! by `madd` with ones and summed per row in i32. One `vcvtph2ps` converts the 8 rows'
//! scales, one FMA accumulates the block. Results equal [`super::x8::dot_x8`] (the scalar
//! `vec_dot`) up to the fused multiply-add: integer block sums exact, `d_w·d_a` rounded as
//! there, blocks summed in order per lane.

// Needed on the MSRV, redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::GROUP_BLOCK_BYTES;
use super::BlockQ8_0;
use crate::quant::simd_x86::prefetch_ahead;

/// See the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8_0]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = a.len().min(group.len() / GROUP_BLOCK_BYTES);
    // SAFETY: features guaranteed by the caller. Block `b < nb` reads group bytes
    // `b·272 .. (b + 1)·272` and activation block `b`, both in bounds by the choice of `nb`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let g = group.as_ptr().add(b * GROUP_BLOCK_BYTES);
            prefetch_ahead(&*g, GROUP_BLOCK_BYTES);
            let y = a.get_unchecked(b);
            let yq = y.qs.as_ptr();
            let mut s32 = _mm256_setzero_si256();
            for c in 0..8 {
                let w = _mm256_loadu_si256(g.add(16 + 32 * c).cast());
                let ya = _mm256_set1_epi32(yq.add(4 * c).cast::<i32>().read_unaligned());
                let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(ya, w));
                s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(p, ones));
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(g.cast()));
            let dy = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(y.d)));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(s32), acc);
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }
}

/// The 8 rows of one x8 group against `T` activation rows: for each token the operations of
/// [`dot_x8`] in the same order, so each token's results are the bits a [`dot_x8`] call
/// gives it (a batch-invariant decode step of several sequences); each weight chunk is
/// loaded and its absolute value taken once for all `T` tokens.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8_tokens<const T: usize>(group: &[u8], a: [&[BlockQ8_0]; T]) -> [[f32; 8]; T] {
    debug_assert!(a.iter().all(|a| group.len() == a.len() * GROUP_BLOCK_BYTES));
    let nb = a.iter().fold(group.len() / GROUP_BLOCK_BYTES, |n, a| n.min(a.len()));
    // SAFETY: as in `dot_x8`, for every token: block `b < nb` lies within `group` and within
    // each `a[t]`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let g = group.as_ptr().add(b * GROUP_BLOCK_BYTES);
            prefetch_ahead(&*g, GROUP_BLOCK_BYTES);
            let mut s32 = [_mm256_setzero_si256(); T];
            for c in 0..8 {
                let w = _mm256_loadu_si256(g.add(16 + 32 * c).cast());
                let wabs = _mm256_sign_epi8(w, w);
                for t in 0..T {
                    let yq = a[t].get_unchecked(b).qs.as_ptr();
                    let ya = _mm256_set1_epi32(yq.add(4 * c).cast::<i32>().read_unaligned());
                    let p = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(ya, w));
                    s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(p, ones));
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(g.cast()));
            for t in 0..T {
                let dy = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(a[t].get_unchecked(b).d)));
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(s32[t]), acc[t]);
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
    use super::super::x8;
    use super::*;
    use crate::dispatch::Isa;
    use crate::quant::{quantize_row, test_rows, test_values, BlockFormat};

    #[test]
    fn dot_x8_matches_the_scalar_group_kernel() {
        if !Isa::Avx2.is_available() {
            return;
        }
        for (nb, seed) in [(1, 1u64), (2, 2), (18, 3), (128, 4)] {
            let cols = nb * 32;
            let (mut w, _) = test_rows(BlockFormat::Q8_0, &test_values(8 * cols, seed, 0.0, 1.0), 8, cols);
            // A −128 quant (legal in a file though our quantizer never writes it): |w| = 128.
            w[2] = 0x80;
            let mut g = vec![0u8; w.len()];
            x8::interleave(&w, nb, &mut g);
            let x = test_values(cols, seed + 100, 0.1, 2.0);
            let mut act = vec![0u8; nb * size_of::<BlockQ8_0>()];
            quantize_row(BlockFormat::Q8_0, &x, &mut act).expect("quantize");
            let a: &[BlockQ8_0] = bytemuck::cast_slice(&act);
            let want = x8::dot_x8(&g, a);
            // SAFETY: AVX2, FMA and F16C checked above.
            let got = unsafe { dot_x8(&g, a) };
            let rows: &[BlockQ8_0] = bytemuck::cast_slice(&w);
            for r in 0..8 {
                let mag: f32 = rows[r * nb..(r + 1) * nb]
                    .iter()
                    .zip(a)
                    .map(|(x, y)| (x.d() * y.d()).abs() * 128.0 * 127.0 * 32.0)
                    .sum();
                assert!((got[r] - want[r]).abs() <= 2e-6 * mag, "nb {nb} row {r}: {} vs {}", got[r], want[r]);
            }
        }
    }
}
