//! Q8_0 weights against 16-bit activations: the output head's dot products.
//!
//! The activation side is [`BlockQ16`]: 32 values as `i16` with one f32 scale
//! `d = amax/32767`, so its rounding error is 1/258 of Q8_0's. On the demo models' Q8_0
//! heads, quantizing the final hidden state to 8 bits was a quarter (SmolLM2) to a tenth
//! (Gemma 3) of the default path's KL divergence from float32 (docs/NUMERICS.md); with
//! 16 bits it is gone, at the same memory traffic (the weights are what a head streams).
//!
//! Row-major kernels: per block the integer sum of `w·a` is exact in every lane: a lane
//! adds at most four products of `127 · 32767` (under 2^24, so its conversion to f32 is
//! exact too), then
//! `acc += f32(sum) · (d_w · d_a)` in the lanes of the instruction set (8 for AVX2, 16 for
//! AVX-512) and a final horizontal sum. The lanes of one row never see another row's, so a
//! row's value does not depend on which rows it is computed with. Interleaved kernels
//! ([`dot_x8`]) form each row's whole block sum in integers and then follow the scalar
//! reference's float steps, so they give its bits.

use super::{BlockQ8_0, QK8_0};
use crate::quant::util::{f16_to_f32, inverse_or_zero};

/// 32 activations as `i16`, `x ≈ d·q`, `d = amax/32767`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ16 {
    pub d: f32,
    pub qs: [i16; QK8_0],
}

const _: () = assert!(std::mem::size_of::<BlockQ16>() == 68 && std::mem::align_of::<BlockQ16>() == 4);

/// `q = round(x/d)` (half away from zero), `d = amax/32767`.
pub fn quantize(src: &[f32], out: &mut [BlockQ16]) {
    debug_assert_eq!(src.len(), out.len() * QK8_0);
    for (x, b) in src.chunks_exact(QK8_0).zip(out.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 32767.0;
        let id = inverse_or_zero(d);
        b.d = d;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round().clamp(-32767.0, 32767.0) as i16;
        }
    }
}

/// The scalar reference: per block the exact integer sum, scaled by both scales, summed
/// in order. The SIMD kernels sum the same terms in lanes (within float rounding of it).
pub fn vec_dot(w: &[BlockQ8_0], a: &[BlockQ16]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 = x.qs.iter().zip(&y.qs).map(|(&p, &q)| i32::from(p) * i32::from(q)).sum();
        sum += sumi as f32 * (f16_to_f32(x.d) * y.d);
    }
    sum
}

/// Bytes of one group-block of the 8-row interleaved layout ([`super::x8`]).
pub const GROUP_BLOCK_BYTES: usize = super::x8::GROUP_BLOCK_BYTES;

/// The 8 rows of one interleaved group · `a` ([`super::x8`]'s layout): per block each row's
/// exact integer sum, then `sum += f32(sumi) · (d_w · d_a)` in block order, as [`vec_dot`]
/// does — the same bits as [`vec_dot`] of each row.
pub fn dot_x8(group: &[u8], a: &[BlockQ16]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let mut sum = [0.0f32; 8];
    for (g, y) in group.chunks_exact(GROUP_BLOCK_BYTES).zip(a) {
        for (r, s) in sum.iter_mut().enumerate() {
            let sumi: i32 =
                (0..QK8_0).map(|j| i32::from(g[16 + 32 * (j / 4) + 4 * r + j % 4] as i8) * i32::from(y.qs[j])).sum();
            *s += sumi as f32 * (f16_to_f32([g[2 * r], g[2 * r + 1]]) * y.d);
        }
    }
    sum
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    // Needed on older toolchains, redundant on newer: see `simd_x86`.
    #![allow(unused_unsafe)]
    use std::arch::x86_64::*;

    use super::{BlockQ16, BlockQ8_0};
    use crate::quant::simd_x86::{f16_to_f32, group_prefetch_ahead, hsum_f32x8, prefetch_rows_ahead};

    /// `R` rows of `w` against `a`. The rows are read in lockstep; when they are consecutive
    /// in memory, prefetch hints walk the bytes after them as one stream
    /// ([`group_prefetch_ahead`]; hints never fault, so other rows only waste them).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows<const R: usize>(w: [&[BlockQ8_0]; R], a: &[BlockQ16]) -> [f32; R] {
        let nb = a.len();
        assert!(w.iter().all(|r| r.len() >= nb), "weight rows shorter than the activations");
        // SAFETY: features guaranteed by the caller; every block index is below `nb`, within
        // `a` and every row (checked above); loads are unaligned.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); R];
            let (base, ahead) = (w[0].as_ptr().cast::<u8>(), group_prefetch_ahead(nb * size_of::<BlockQ8_0>(), R));
            for i in 0..nb {
                prefetch_rows_ahead(base, ahead, i * size_of::<BlockQ8_0>() * R, size_of::<BlockQ8_0>() * R);
                let y = a.get_unchecked(i);
                let a0 = _mm256_loadu_si256(y.qs.as_ptr().cast());
                let a1 = _mm256_loadu_si256(y.qs.as_ptr().add(16).cast());
                for r in 0..R {
                    let x = w[r].get_unchecked(i);
                    let q = x.qs.as_ptr();
                    let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(q.cast()));
                    let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(q.add(16).cast()));
                    let s = _mm256_add_epi32(_mm256_madd_epi16(w0, a0), _mm256_madd_epi16(w1, a1));
                    let d = _mm256_set1_ps(f16_to_f32(x.d) * y.d);
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc[r]);
                }
            }
            std::array::from_fn(|r| hsum_f32x8(acc[r]))
        }
    }

    /// [`super::dot_x8`]: the same bits. Per 4-element chunk, the 8 rows' quants widen to
    /// 16 bits in two registers (rows 0–3, 4–7) against the chunk's 4 activations in every
    /// row's lanes; the block's pair sums reduce to one exact i32 per row at its end.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ16]) -> [f32; 8] {
        use super::GROUP_BLOCK_BYTES;
        assert!(group.len() >= a.len() * GROUP_BLOCK_BYTES, "group shorter than the activations");
        // SAFETY: features guaranteed by the caller; every read is inside `group` (checked
        // above) or `a`; loads are unaligned.
        unsafe {
            let mut acc = _mm256_setzero_ps();
            // hadd(lo, hi) leaves rows in lanes 0,1,4,5,2,3,6,7: this puts them back in order.
            let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
            for (i, y) in a.iter().enumerate() {
                let g = group.as_ptr().add(i * GROUP_BLOCK_BYTES);
                let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for c in 0..8 {
                    let act = _mm256_set1_epi64x(std::ptr::read_unaligned(y.qs.as_ptr().add(4 * c).cast::<i64>()));
                    let q = g.add(16 + 32 * c);
                    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(q.cast())), act));
                    hi = _mm256_add_epi32(
                        hi,
                        _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(q.add(16).cast())), act),
                    );
                }
                let sums = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(lo, hi), order);
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(g.cast()));
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(y.d));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), d));
            }
            let mut out = [0.0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
            out
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    // Needed on older toolchains, redundant on newer: see `simd_x86`.
    #![allow(unused_unsafe)]
    use std::arch::x86_64::*;

    use super::{BlockQ16, BlockQ8_0};
    use crate::quant::simd_x86::{f16_to_f32, group_prefetch_ahead, prefetch_rows_ahead};

    /// Whether the CPU has what [`dot_rows`] needs.
    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// Whether the CPU has what [`dot_x8`] needs: [`available`] and AVX-512 VNNI.
    pub fn vnni_available() -> bool {
        available() && is_x86_feature_detected!("avx512vnni")
    }

    /// [`super::dot_x8`]: the same bits. One 32-byte chunk (8 rows × 4 quants) widens to
    /// the 32 words of a register against the chunk's 4 activations repeated; `vpdpwssd`
    /// adds each row's two pair sums into two lanes, which fold into one exact i32 per row
    /// at the block's end.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VNNI, AVX2, FMA and F16C ([`vnni_available`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ16]) -> [f32; 8] {
        use super::GROUP_BLOCK_BYTES;
        assert!(group.len() >= a.len() * GROUP_BLOCK_BYTES, "group shorter than the activations");
        // SAFETY: features guaranteed by the caller; every read is inside `group` (checked
        // above) or `a`; loads are unaligned.
        unsafe {
            let mut acc = _mm256_setzero_ps();
            for (i, y) in a.iter().enumerate() {
                let g = group.as_ptr().add(i * GROUP_BLOCK_BYTES);
                // Four accumulators: a single one would chain eight `vpdpwssd` latencies.
                let mut s = [_mm512_setzero_si512(); 4];
                for c in 0..8 {
                    let act = _mm512_set1_epi64(std::ptr::read_unaligned(y.qs.as_ptr().add(4 * c).cast::<i64>()));
                    let w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(g.add(16 + 32 * c).cast()));
                    s[c % 4] = _mm512_dpwssd_epi32(s[c % 4], w, act);
                }
                let s = _mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_add_epi32(s[2], s[3]));
                // Lane pair (2r, 2r + 1) holds row r: add the odd lane into the even one, then
                // keep the low half of every 64-bit lane.
                let sums = _mm512_cvtepi64_epi32(_mm512_add_epi32(s, _mm512_srli_epi64::<32>(s)));
                let d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(g.cast())), _mm256_set1_ps(y.d));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), d));
            }
            let mut out = [0.0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
            out
        }
    }

    /// [`super::avx2::dot_rows`] with one 512-bit multiply-add per block and row.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BW, AVX2, FMA and F16C ([`available`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub unsafe fn dot_rows<const R: usize>(w: [&[BlockQ8_0]; R], a: &[BlockQ16]) -> [f32; R] {
        let nb = a.len();
        assert!(w.iter().all(|r| r.len() >= nb), "weight rows shorter than the activations");
        // SAFETY: as in the AVX2 kernel.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); R];
            let (base, ahead) = (w[0].as_ptr().cast::<u8>(), group_prefetch_ahead(nb * size_of::<BlockQ8_0>(), R));
            for i in 0..nb {
                prefetch_rows_ahead(base, ahead, i * size_of::<BlockQ8_0>() * R, size_of::<BlockQ8_0>() * R);
                let y = a.get_unchecked(i);
                let a = _mm512_loadu_si512(y.qs.as_ptr().cast());
                for r in 0..R {
                    let x = w[r].get_unchecked(i);
                    let w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(x.qs.as_ptr().cast()));
                    let d = _mm512_set1_ps(f16_to_f32(x.d) * y.d);
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(w, a)), d, acc[r]);
                }
            }
            std::array::from_fn(|r| _mm512_reduce_add_ps(acc[r]))
        }
    }

    /// [`dot_rows`] of `R` rows against `T` tokens at once: each weight block is widened,
    /// and its scale converted, once for all `T` tokens; every (row, token) value goes
    /// through exactly [`dot_rows`]' lane operations, so it is the bits a [`dot_rows`] call
    /// gives (many-token heads: all-logits scoring, perplexity, LoRA training). The tokens'
    /// activation rows have one length (the shortest is used).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BW, AVX2, FMA and F16C ([`available`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub unsafe fn dot_rows_tokens<const R: usize, const T: usize>(
        w: [&[BlockQ8_0]; R],
        a: [&[BlockQ16]; T],
    ) -> [[f32; R]; T] {
        let nb = a.iter().map(|a| a.len()).min().unwrap_or(0);
        assert!(w.iter().all(|r| r.len() >= nb), "weight rows shorter than the activations");
        // SAFETY: block `i < nb` of every row and every token, as asserted.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); R]; T];
            for i in 0..nb {
                let ys: [&BlockQ16; T] = std::array::from_fn(|t| a[t].get_unchecked(i));
                let act: [__m512i; T] = std::array::from_fn(|t| _mm512_loadu_si512(ys[t].qs.as_ptr().cast()));
                for r in 0..R {
                    let x = w[r].get_unchecked(i);
                    let wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256(x.qs.as_ptr().cast()));
                    let dw = f16_to_f32(x.d);
                    for t in 0..T {
                        let d = _mm512_set1_ps(dw * ys[t].d);
                        acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(wv, act[t])), d, acc[t][r]);
                    }
                }
            }
            std::array::from_fn(|t| std::array::from_fn(|r| _mm512_reduce_add_ps(acc[t][r])))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` values in [-2, 2), a fixed sequence per seed.
    pub(crate) fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    fn weights(rows: usize, cols: usize, seed: u64) -> Vec<BlockQ8_0> {
        let mut out = vec![BlockQ8_0 { d: [0; 2], qs: [0; 32] }; rows * cols / 32];
        crate::quant::q8_0::quantize(&random(rows * cols, seed), &mut out);
        out
    }

    #[test]
    fn sixteen_bit_activations_are_within_a_step_of_float() {
        let x = random(96, 1);
        let mut a = vec![BlockQ16 { d: 0.0, qs: [0; 32] }; 3];
        quantize(&x, &mut a);
        for (b, x) in a.iter().zip(x.chunks_exact(32)) {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(b.qs.iter().any(|&q| q.abs() == 32767));
            for (&q, &v) in b.qs.iter().zip(x) {
                assert!((q as f32 * b.d - v).abs() <= 0.5 * amax / 32767.0 * 1.0001);
            }
        }
        // Against the float dot, Q16 is far closer than Q8_0 activations.
        let w = weights(1, 96, 2);
        let mut wf = vec![0.0; 96];
        crate::quant::q8_0::dequantize(&w, &mut wf);
        let exact: f64 = wf.iter().zip(&x).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let mut a8 = vec![BlockQ8_0 { d: [0; 2], qs: [0; 32] }; 3];
        crate::quant::q8_0::quantize(&x, &mut a8);
        let (e16, e8) = (
            (f64::from(vec_dot(&w, &a)) - exact).abs(),
            (f64::from(crate::quant::q8_0::vec_dot(&w, &a8)) - exact).abs(),
        );
        assert!(e16 < 1e-4 && e16 * 20.0 < e8.max(1e-9) + 2e-4, "q16 {e16} vs q8 {e8}");
        // Zeros have scale 0 and give 0.
        let mut z = vec![BlockQ16 { d: 1.0, qs: [1; 32] }; 1];
        quantize(&[0.0; 32], &mut z);
        assert_eq!((z[0].d, z[0].qs), (0.0, [0; 32]));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_kernels_match_the_scalar_reference() {
        let have_avx2 =
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        if !have_avx2 {
            println!("skipped: the CPU lacks AVX2/FMA/F16C");
            return;
        }
        for (cols, seed) in [(32, 3), (64, 4), (640, 5), (896, 6)] {
            let nb = cols / 32;
            let w = weights(4, cols, seed);
            let mut a = vec![BlockQ16 { d: 0.0, qs: [0; 32] }; nb];
            quantize(&random(cols, seed + 100), &mut a);
            let rows: [&[BlockQ8_0]; 4] = std::array::from_fn(|r| &w[r * nb..(r + 1) * nb]);
            let want: Vec<f32> = rows.iter().map(|r| vec_dot(r, &a)).collect();
            let scale: f32 = rows
                .iter()
                .map(|r| r.iter().zip(&a).map(|(x, y)| f16_to_f32(x.d) * y.d * 32.0 * 127.0 * 32767.0).sum::<f32>())
                .fold(0.0, f32::max);
            let close = |got: &[f32], what: &str| {
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-6 * scale, "{what} {cols}: {g} vs {w}");
                }
            };
            // SAFETY: features checked above.
            let four = unsafe { avx2::dot_rows::<4>(rows, &a) };
            close(&four, "avx2 x4");
            let one: Vec<f32> = (0..4).map(|r| unsafe { avx2::dot_rows::<1>([rows[r]], &a)[0] }).collect();
            assert_eq!(one, four, "a row's value does not depend on its group");
            if avx512::available() {
                // SAFETY: `available`.
                let four = unsafe { avx512::dot_rows::<4>(rows, &a) };
                close(&four, "avx512 x4");
                let one: Vec<f32> = (0..4).map(|r| unsafe { avx512::dot_rows::<1>([rows[r]], &a)[0] }).collect();
                assert_eq!(one, four, "a row's value does not depend on its group");
                // Four tokens at once: each token's values are its one-token bits.
                let acts: Vec<Vec<BlockQ16>> = (0..4)
                    .map(|t| {
                        let mut b = vec![BlockQ16 { d: 0.0, qs: [0; 32] }; nb];
                        quantize(&random(cols, seed + 200 + t), &mut b);
                        b
                    })
                    .collect();
                // SAFETY: `available`.
                let many = unsafe { avx512::dot_rows_tokens::<4, 4>(rows, std::array::from_fn(|t| &acts[t][..])) };
                for (t, got) in many.iter().enumerate() {
                    // SAFETY: `available`.
                    let want = unsafe { avx512::dot_rows::<4>(rows, &acts[t]) };
                    assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "token {t} of 4, {cols} columns");
                }
            } else {
                println!("avx512 kernel skipped: the CPU lacks AVX-512 F/BW");
            }
        }
    }

    #[test]
    fn interleaved_kernels_give_the_scalar_bits() {
        for (cols, seed) in [(32, 7), (96, 8), (896, 9)] {
            let nb = cols / 32;
            let w = weights(8, cols, seed);
            let bytes: &[u8] = bytemuck::cast_slice(&w);
            let mut group = vec![0u8; bytes.len()];
            super::super::x8::interleave(bytes, nb, &mut group);
            let mut a = vec![BlockQ16 { d: 0.0, qs: [0; 32] }; nb];
            let mut x = random(cols, seed + 100);
            // Extremes too: every weight and activation at full scale.
            if cols == 32 {
                x = vec![-2.0; 32];
            }
            quantize(&x, &mut a);
            let want: [f32; 8] = std::array::from_fn(|r| vec_dot(&w[r * nb..(r + 1) * nb], &a));
            assert_eq!(dot_x8(&group, &a), want, "scalar x8, {cols} columns");
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
                {
                    // SAFETY: features checked.
                    assert_eq!(unsafe { avx2::dot_x8(&group, &a) }, want, "avx2 x8, {cols} columns");
                } else {
                    println!("avx2 x8 kernel skipped: the CPU lacks AVX2/FMA/F16C");
                }
                if avx512::vnni_available() {
                    // SAFETY: `vnni_available`.
                    assert_eq!(unsafe { avx512::dot_x8(&group, &a) }, want, "avx512 x8, {cols} columns");
                } else {
                    println!("avx512 x8 kernel skipped: the CPU lacks AVX-512 F/BW/VNNI");
                }
            }
        }
    }
}
