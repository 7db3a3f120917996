//! Q5_0 x8 groups (layout: [`super::x8`]) against one Q8_0 activation row with AVX2 + FMA +
//! F16C: the decode matvec kernel over 8 interleaved rows.
//!
//! Per group-block: the 32 fifth-bit bytes are loaded once; each 32-byte nibble chunk `c`
//! holds 4 bytes of each of the 8 rows, its low (high) nibbles get bit plane `2c` (`2c + 1`)
//! shifted to 0x10 and OR-ed in, giving the unsigned 5-bit quants `q` (0..=31) that
//! `_mm256_maddubs_epi16` takes as stored, against the activation bytes `qs[4c..4c+4]`
//! (`qs[16+4c..16+4c+4]`) broadcast to all lanes: row r's pair sums land in i16 lanes
//! `2r, 2r+1`. Each pair is within ±31·128·2 = ±7936, so at most 4 are summed in i16 (chunks
//! 0-1 and 2-3 apart, ±31744: exact), then widened by `_mm256_madd_epi16`. The offset is
//! removed in integers, `Σ(q − 16)·a = Σq·a − 16·Σa` with `16·Σa` formed once per activation
//! block and broadcast, so the i32 lane r is exactly the scalar code's block sum. Then `d·d8`
//! for the 8 rows (one `vcvtph2ps`, one multiply: the scalar `x.d() * y.d()`) and one FMA.
//! No horizontal sums over rows: lane r is row r. Results equal [`super::x8::dot_x8`] up to
//! float reassociation (the FMA fuses the scalar code's multiply and add).
//!
//! The group is one linear stream (and the next group follows it), so a software prefetch
//! [`PREFETCH_AHEAD`] bytes ahead, three hints (192 bytes) per group-block, keeps DRAM
//! busy. Measured on Zen 3, 4096×4096 streamed from DRAM, kernel alone, % of the read
//! bandwidth of a plain AVX2 sum loop in the same run (noisy, shared machine): no prefetch
//! 65-89 %, 1 KiB 75-102 %, 2-4 KiB 81-113 % (no consistent difference within 2-4 KiB).
//!
//! Lengths: debug-asserted; in release builds cut to the shorter side, never read out of
//! bounds.

// Register-only intrinsics are safe inside `#[target_feature]` functions from Rust 1.87 on,
// which makes some of the `unsafe` blocks below redundant there: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::{GROUP_BLOCK_BYTES, QH_OFFSET, QS_OFFSET};
use crate::quant::q8_0::BlockQ8_0;

/// Distance of the software prefetch ahead of the group-block being read, in bytes.
pub const PREFETCH_AHEAD: usize = 2048;

/// Bit plane `J` of the fifth-bit bytes moved to bit 4 of every byte (0x10 or 0), for the
/// planes `J < 4` (`SHL = 4 − J`, `SHR = 0`) and `J ≥ 4` (`SHL = 0`, `SHR = J − 4`). The
/// 16-bit shifts carry bits across the byte boundary only into bit positions the mask drops:
/// bit 4 of each byte comes from bit `4 − SHL + SHR` (≤ 7) of the same byte.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn plane<const SHL: i32, const SHR: i32>(planes: __m256i, bit4: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics (shifts by 0 fold away).
    unsafe { _mm256_and_si256(_mm256_srli_epi16::<SHR>(_mm256_slli_epi16::<SHL>(planes)), bit4) }
}

/// Chunk `c` of a group-block as unsigned 5-bit quants: its low and high nibbles with the
/// fifth bits of planes `2c` and `2c + 1` OR-ed in.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_quants<const LO_SHL: i32, const LO_SHR: i32, const HI_SHL: i32, const HI_SHR: i32>(
    gb: *const u8,
    c: usize,
    planes: __m256i,
) -> (__m256i, __m256i) {
    // SAFETY: `gb` points at a whole group-block (the caller's contract); the load reads
    // bytes `QS_OFFSET + 32c .. + 32` of it, c < 4.
    unsafe {
        let (low4, bit4) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10));
        let v = _mm256_loadu_si256(gb.add(QS_OFFSET + 32 * c).cast());
        let lo = _mm256_or_si256(_mm256_and_si256(v, low4), plane::<LO_SHL, LO_SHR>(planes, bit4));
        let hi =
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(v), low4), plane::<HI_SHL, HI_SHR>(planes, bit4));
        (lo, hi)
    }
}

/// Chunk `c`'s quants `(lo, hi)` times the broadcast activation bytes, as 16 i16 pair sums
/// (each within ±2·7936).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_dot((lo, hi): (__m256i, __m256i), yq: *const i8, c: usize) -> __m256i {
    // SAFETY: `yq` points at 32 activation bytes (the caller's contract); the loads read
    // bytes `4c .. 4c + 4` and `16 + 4c .. 16 + 4c + 4`, c < 4.
    unsafe {
        let alo = _mm256_set1_epi32(yq.add(4 * c).cast::<i32>().read_unaligned());
        let ahi = _mm256_set1_epi32(yq.add(16 + 4 * c).cast::<i32>().read_unaligned());
        _mm256_add_epi16(_mm256_maddubs_epi16(lo, alo), _mm256_maddubs_epi16(hi, ahi))
    }
}

/// Chunk `c` of a group-block: Σ over its 5-bit quants times the broadcast activation bytes,
/// as 16 i16 pair sums (each within ±2·7936).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk<const LO_SHL: i32, const LO_SHR: i32, const HI_SHL: i32, const HI_SHR: i32>(
    gb: *const u8,
    yq: *const i8,
    c: usize,
    planes: __m256i,
) -> __m256i {
    // SAFETY: the contracts of `chunk_quants` and `chunk_dot`, which the caller keeps.
    unsafe { chunk_dot(chunk_quants::<LO_SHL, LO_SHR, HI_SHL, HI_SHR>(gb, c, planes), yq, c) }
}

/// `16·Σ qs` of an activation block in all 8 i32 lanes (exact: |16·Σ| ≤ 16·32·128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn offset_sum(qs: &[i8; 32]) -> __m256i {
    // SAFETY: a load of the 32-byte array, then register-only intrinsics.
    unsafe {
        let v = _mm256_loadu_si256(qs.as_ptr().cast());
        let s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(16), v), _mm256_set1_epi16(1));
        let s = _mm256_add_epi32(s, _mm256_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm256_add_epi32(s, _mm256_shuffle_epi32::<0b10_11_00_01>(s));
        _mm256_add_epi32(s, _mm256_permute2x128_si256::<0x01>(s, s))
    }
}

/// The 8 rows of one x8 group against one activation row; see the module header and
/// [`super::x8::dot_x8`] (same contract).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8(group: &[u8], a: &[BlockQ8_0]) -> [f32; 8] {
    debug_assert_eq!(group.len(), a.len() * GROUP_BLOCK_BYTES);
    let nb = a.len().min(group.len() / GROUP_BLOCK_BYTES);
    let base = group.as_ptr();
    // SAFETY: features guaranteed by the caller. Group-block `b < nb` spans bytes
    // `b·GROUP_BLOCK_BYTES .. (b + 1)·GROUP_BLOCK_BYTES <= group.len()`, and every load below
    // stays within its group-block (scales 0..16, planes 16..48, chunks 48..176); activation
    // block `b < nb <= a.len()`. Prefetches never fault, so their addresses may run past
    // the end.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let gb = base.add(b * GROUP_BLOCK_BYTES);
            let ahead = gb.wrapping_add(PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
            let y = a.get_unchecked(b);
            let yq = y.qs.as_ptr();
            let planes = _mm256_loadu_si256(gb.add(QH_OFFSET).cast());
            // Planes 2c (low nibbles) and 2c + 1 (high nibbles) of chunk c.
            let s01 = _mm256_add_epi16(chunk::<4, 0, 3, 0>(gb, yq, 0, planes), chunk::<2, 0, 1, 0>(gb, yq, 1, planes));
            let s23 = _mm256_add_epi16(chunk::<0, 0, 0, 1>(gb, yq, 2, planes), chunk::<0, 2, 0, 3>(gb, yq, 3, planes));
            let isum = _mm256_sub_epi32(
                _mm256_add_epi32(_mm256_madd_epi16(s01, ones), _mm256_madd_epi16(s23, ones)),
                offset_sum(&y.qs),
            );
            let dy = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(y.d)));
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(isum), acc);
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }
}

/// The 8 rows of one x8 group against `T` activation rows: for each token the operations of
/// [`dot_x8`] in the same order, so each token's results are the bits a [`dot_x8`] call
/// gives it (a batch-invariant decode step of several sequences); each chunk's 5-bit quants
/// are rebuilt once for all `T` tokens.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_x8_tokens<const T: usize>(group: &[u8], a: [&[BlockQ8_0]; T]) -> [[f32; 8]; T] {
    debug_assert!(a.iter().all(|a| group.len() == a.len() * GROUP_BLOCK_BYTES));
    let nb = a.iter().fold(group.len() / GROUP_BLOCK_BYTES, |n, a| n.min(a.len()));
    let base = group.as_ptr();
    // SAFETY: as in `dot_x8`, for every token: group-block `b < nb` lies within `group`,
    // activation block `b < nb <= a[t].len()`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let gb = base.add(b * GROUP_BLOCK_BYTES);
            let ahead = gb.wrapping_add(PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
            let planes = _mm256_loadu_si256(gb.add(QH_OFFSET).cast());
            let q = [
                chunk_quants::<4, 0, 3, 0>(gb, 0, planes),
                chunk_quants::<2, 0, 1, 0>(gb, 1, planes),
                chunk_quants::<0, 0, 0, 1>(gb, 2, planes),
                chunk_quants::<0, 2, 0, 3>(gb, 3, planes),
            ];
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(gb.cast()));
            for t in 0..T {
                let y = a[t].get_unchecked(b);
                let yq = y.qs.as_ptr();
                let s01 = _mm256_add_epi16(chunk_dot(q[0], yq, 0), chunk_dot(q[1], yq, 1));
                let s23 = _mm256_add_epi16(chunk_dot(q[2], yq, 2), chunk_dot(q[3], yq, 3));
                let isum = _mm256_sub_epi32(
                    _mm256_add_epi32(_mm256_madd_epi16(s01, ones), _mm256_madd_epi16(s23, ones)),
                    offset_sum(&y.qs),
                );
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
    use super::*;
    use crate::quant::q5_0::x8::{self, interleave, tests::random_case};
    use crate::quant::q5_0::BlockQ5_0;
    use crate::quant::q8_0::{self, QK8_0};
    use crate::quant::{f32_to_f16, test_values};

    /// Σ over blocks of |d·d8·Σ(q − 16)·a| for each row: the scale of the float rounding.
    fn magnitudes(group: &[u8], a: &[BlockQ8_0]) -> [f32; 8] {
        let mut mag = [0.0f32; 8];
        for (b, y) in a.iter().enumerate() {
            let gb = &group[b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
            let t = x8::dot_x8(gb, std::slice::from_ref(y));
            for (m, t) in mag.iter_mut().zip(t) {
                *m += t.abs();
            }
        }
        mag
    }

    fn check(group: &[u8], a: &[BlockQ8_0], what: &str) {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")) {
            eprintln!("skipped: no AVX2/FMA/F16C");
            return;
        }
        let want = x8::dot_x8(group, a);
        // SAFETY: features checked above.
        let got = unsafe { dot_x8(group, a) };
        let mag = magnitudes(group, a);
        for r in 0..8 {
            let tol = 1e-6 * mag[r];
            assert!((got[r] - want[r]).abs() <= tol, "{what} row {r}: {} vs {} (tol {tol})", got[r], want[r]);
        }
    }

    #[test]
    fn avx2_x8_matches_scalar_x8_on_random_rows() {
        for (nb, seed) in [(1, 31), (2, 37), (5, 41), (16, 43), (128, 47)] {
            let (w, a) = random_case(nb, seed);
            let mut group = vec![0u8; w.len()];
            interleave(&w, nb, &mut group);
            check(&group, &a, &format!("nb {nb}"));
        }
    }

    /// The fixtures' real (model) blocks and random-bit blocks as 8 rows each, against a
    /// random activation row.
    #[test]
    fn avx2_x8_matches_scalar_x8_on_fixture_blocks() {
        for name in ["q5_0_real.bin", "q5_0_random_blocks.bin"] {
            let bytes = std::fs::read(owl_test::fixture(&format!("quants/{name}"))).expect("fixture");
            assert_eq!(bytes.len() % GROUP_BLOCK_BYTES, 0, "{name}: whole groups");
            let nb = bytes.len() / GROUP_BLOCK_BYTES;
            let blocks: &[BlockQ5_0] = bytemuck::cast_slice(&bytes);
            assert!(blocks.iter().all(|b| b.d().is_finite()), "{name}");
            let act = test_values(nb * QK8_0, 53, 0.5, 2.0);
            let mut a = vec![BlockQ8_0 { d: [0; 2], qs: [0; QK8_0] }; nb];
            q8_0::quantize(&act, &mut a);
            let mut group = vec![0u8; bytes.len()];
            interleave(&bytes, nb, &mut group);
            check(&group, &a, name);
        }
    }

    /// Every element of every row in turn the only non-zero quant: a wrong plane shift,
    /// nibble half or chunk order moves its product to the wrong row or value.
    #[test]
    fn avx2_x8_places_every_element() {
        let nb = 1;
        let mut a = [BlockQ8_0 { d: f32_to_f16(1.0), qs: [0; QK8_0] }];
        for (e, q) in a[0].qs.iter_mut().enumerate() {
            *q = (e as i8 + 1) * if e % 2 == 0 { 1 } else { -3 };
        }
        for r in 0..8 {
            for e in 0..32 {
                // Row r, element e: q = 15 (nibble 15, fifth bit clear: -1); all else q = 16
                // (fifth bit set: 0). A nibble or fifth bit read from the wrong place gives
                // ±15 or -16 somewhere.
                let mut rows = vec![BlockQ5_0 { d: f32_to_f16(1.0), qh: [0xFF; 4], qs: [0; 16] }; 8];
                let blk = &mut rows[r];
                blk.qs[e % 16] |= 0x0F << (4 * (e / 16));
                blk.qh = (u32::MAX ^ (1 << e)).to_le_bytes();
                let mut row_dot = [0.0f32; 8];
                row_dot[r] = -(a[0].qs[e] as f32);
                let w: &[u8] = bytemuck::cast_slice(&rows);
                let mut group = vec![0u8; w.len()];
                interleave(w, nb, &mut group);
                assert_eq!(x8::dot_x8(&group, &a), row_dot, "scalar x8, row {r} element {e}");
                if is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
                {
                    // SAFETY: features checked.
                    let got = unsafe { dot_x8(&group, &a) };
                    assert_eq!(got, row_dot, "avx2 x8, row {r} element {e}");
                }
            }
        }
        // The extremes for the i16 sums: q = 0 (-16) and 31 (+15) against -128 and 127.
        let nb = 4;
        for (qh, qs) in [([0u8; 4], 0u8), ([0xFF; 4], 0xFF)] {
            let rows = vec![BlockQ5_0 { d: f32_to_f16(1.0), qh, qs: [qs; 16] }; 8 * nb];
            let w: &[u8] = bytemuck::cast_slice(&rows);
            let mut group = vec![0u8; w.len()];
            interleave(w, nb, &mut group);
            for y in [-128i8, 127] {
                let a = vec![BlockQ8_0 { d: f32_to_f16(1.0), qs: [y; QK8_0] }; nb];
                let q = if qs == 0 { -16.0 } else { 15.0 };
                let want = nb as f32 * 32.0 * q * y as f32;
                assert_eq!(x8::dot_x8(&group, &a), [want; 8], "scalar, q {q} a {y}");
                check(&group, &a, &format!("extreme q {q} a {y}"));
            }
        }
    }
}
