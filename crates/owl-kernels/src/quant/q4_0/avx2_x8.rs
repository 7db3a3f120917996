//! Q4_0 · Q8_0 over one group of the 8-row interleaved layout ([`super::x8`]), AVX2.
//!
//! Lane `r` of every register is row `r`: a chunk load gives 8 rows × 4 bytes; its low and
//! high nibbles (`and`, `srli` + `and`) are multiplied with the broadcast 4 activation bytes
//! of the same elements by `maddubs` (unsigned nibbles × signed activations, exact in i16:
//! 2·15·127 per lane, eight of them summed stay below 2¹⁵), `madd` with ones widens to one
//! i32 per row, and the Q4_0 offset comes off in integers (`Σ(q − 8)·a = Σq·a − 8·Σa`,
//! exact; `8·Σa` is summed across the lanes of one register per block, shared by the 8
//! rows). One `vcvtph2ps` converts the 8 rows' scales, one FMA accumulates the block. No
//! horizontal sum over a row: ~6 instructions per row-block against ~10 in the row-major
//! kernels, which made decode memory-bound instead of compute-bound (docs/PERFORMANCE.md).
//!
//! Results equal [`super::x8::dot_x8`] (the scalar `vec_dot`) up to the fused multiply-add:
//! integer block sums are exact, `d_w·d_a` rounds as in the scalar code, and each row sums
//! its blocks in order in its own lane; only `(d_w·d_a)·isum + acc` rounds once, not twice.

// Needed on the MSRV, redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::GROUP_BLOCK_BYTES;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::simd_x86::{load_i8x32, prefetch_ahead};

/// `8·Σ qs` of an activation block in all 8 i32 lanes (exact: |8·Σ| ≤ 8·32·128), kept in
/// vector registers (a scalar horizontal sum and a broadcast back cost this kernel ~25 %).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn offset_sum(qs: &[i8; 32]) -> __m256i {
    // SAFETY: a load of the 32-byte array, then register-only intrinsics.
    unsafe {
        let s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), load_i8x32(qs)), _mm256_set1_epi16(1));
        let s = _mm256_add_epi32(s, _mm256_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm256_add_epi32(s, _mm256_shuffle_epi32::<0b10_11_00_01>(s));
        _mm256_add_epi32(s, _mm256_permute2x128_si256::<0x01>(s, s))
    }
}

/// See the module header.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8_0]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = a.len().min(group.len() / GROUP_BLOCK_BYTES);
    // SAFETY: features guaranteed by the caller. Block `b < nb` reads group bytes
    // `b·144 .. (b + 1)·144` and activation block `b`, both in bounds by the choice of `nb`.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let g = group.as_ptr().add(b * GROUP_BLOCK_BYTES);
            prefetch_ahead(&*g, GROUP_BLOCK_BYTES);
            let y = a.get_unchecked(b);
            let yq = y.qs.as_ptr();
            let mut s16 = _mm256_setzero_si256();
            for c in 0..4 {
                let v = _mm256_loadu_si256(g.add(16 + 32 * c).cast());
                let lo = _mm256_and_si256(v, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                let alo = _mm256_set1_epi32(yq.add(4 * c).cast::<i32>().read_unaligned());
                let ahi = _mm256_set1_epi32(yq.add(16 + 4 * c).cast::<i32>().read_unaligned());
                s16 = _mm256_add_epi16(
                    s16,
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, alo), _mm256_maddubs_epi16(hi, ahi)),
                );
            }
            // 8·Σa once per block for the 8 rows (one horizontal sum per 8 row-blocks).
            let isum = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), offset_sum(&y.qs));
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(g.cast()));
            let dy = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(y.d)));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(isum), acc);
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }
}

/// The 8 rows of one x8 group against `T` activation rows: for each token the operations of
/// [`dot_x8`] in the same order, so each token's results are the bits a [`dot_x8`] call
/// gives it (a batch-invariant decode step of several sequences); each weight chunk is
/// loaded and split into nibbles once for all `T` tokens.
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
        let m4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let g = group.as_ptr().add(b * GROUP_BLOCK_BYTES);
            prefetch_ahead(&*g, GROUP_BLOCK_BYTES);
            let mut s16 = [_mm256_setzero_si256(); T];
            for c in 0..4 {
                let v = _mm256_loadu_si256(g.add(16 + 32 * c).cast());
                let lo = _mm256_and_si256(v, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                for t in 0..T {
                    let yq = a[t].get_unchecked(b).qs.as_ptr();
                    let alo = _mm256_set1_epi32(yq.add(4 * c).cast::<i32>().read_unaligned());
                    let ahi = _mm256_set1_epi32(yq.add(16 + 4 * c).cast::<i32>().read_unaligned());
                    s16[t] = _mm256_add_epi16(
                        s16[t],
                        _mm256_add_epi16(_mm256_maddubs_epi16(lo, alo), _mm256_maddubs_epi16(hi, ahi)),
                    );
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(g.cast()));
            for t in 0..T {
                let y = a[t].get_unchecked(b);
                let isum = _mm256_sub_epi32(_mm256_madd_epi16(s16[t], ones), offset_sum(&y.qs));
                let dy = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(y.d)));
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(isum), acc[t]);
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
            let (w, _) = test_rows(BlockFormat::Q4_0, &test_values(8 * cols, seed, 0.0, 1.0), 8, cols);
            let mut g = vec![0u8; w.len()];
            x8::interleave(&w, nb, &mut g);
            let x = test_values(cols, seed + 100, 0.1, 2.0);
            let mut act = vec![0u8; nb * size_of::<BlockQ8_0>()];
            quantize_row(BlockFormat::Q8_0, &x, &mut act).expect("quantize");
            let a: &[BlockQ8_0] = bytemuck::cast_slice(&act);
            let want = x8::dot_x8(&g, a);
            // SAFETY: AVX2, FMA and F16C checked above.
            let got = unsafe { dot_x8(&g, a) };
            // Bound: one rounding per block less than the scalar sum; |Σ| of the terms.
            let rows: &[super::super::BlockQ4_0] = bytemuck::cast_slice(&w);
            for r in 0..8 {
                let mag: f32 = rows[r * nb..(r + 1) * nb]
                    .iter()
                    .zip(a)
                    .map(|(x, y)| (x.d() * y.d()).abs() * 8.0 * 127.0 * 32.0)
                    .sum();
                assert!((got[r] - want[r]).abs() <= 2e-6 * mag, "nb {nb} row {r}: {} vs {}", got[r], want[r]);
            }
        }
    }
}
