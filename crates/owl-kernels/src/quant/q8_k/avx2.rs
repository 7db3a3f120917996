//! Q8_K with AVX2 + FMA + F16C: the activation quantizer of the K-quants and IQ4_XS.
//!
//! For the dispatch table (`# Safety` = the CPU has avx2, fma and f16c):
//! - `quantize(src: &[f32], out: &mut [BlockQ8K])` — bit-identical to the scalar
//!   [`super::quantize`] for every input (NaN, ±inf, subnormals, ties included): the same
//!   signed maximum (first element of largest magnitude), `nearest_int` as round-half-even,
//!   the same `min(127)` and `d = 1/iscale`; `bsums` are exact integer sums.
//!
//! No Q8_K·Q8_K dot product here: no GGUF stores Q8_K weights (the scalar one exists for
//! completeness of `vec_dot_scalar`).

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::BlockQ8K;
use crate::quant::simd_x86::{load_f32x8_at, max_lane, pack_i32_to_i8, round_half_even, store_i8x32_at};
use crate::quant::QK_K;

/// Quantizes f32 activations to Q8_K exactly as the scalar [`super::quantize`] does.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize(src: &[f32], out: &mut [BlockQ8K]) {
    debug_assert_eq!(src.len(), out.len() * QK_K);
    for (x, b) in src.chunks_exact(QK_K).zip(out.iter_mut()) {
        // SAFETY: features guaranteed by the caller; `x` is 256 floats long.
        unsafe { quantize_block(x, b) }
    }
}

/// One block of 256 (`x.len() == 256`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block(x: &[f32], b: &mut BlockQ8K) {
    // SAFETY: every load is a bounds-checked 8-float window of `x`; register-only otherwise.
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        // Largest magnitude, NaNs ignored (the candidate first: `max_ps` returns its second
        // operand when either is NaN), as the scalar `amax < |v|` scan.
        let mut m = _mm256_setzero_ps();
        for k in 0..QK_K / 8 {
            m = _mm256_max_ps(_mm256_andnot_ps(sign, load_f32x8_at(x, 8 * k)), m);
        }
        let amax = max_lane(m);
        if amax == 0.0 {
            b.d = 0.0;
            b.qs = [0; QK_K];
            b.bsums = [0; QK_K / 16];
            return;
        }
        // The signed maximum is the first element whose magnitude equals amax.
        let target = _mm256_set1_ps(amax);
        let mut max = amax;
        for k in 0..QK_K / 8 {
            let v = load_f32x8_at(x, 8 * k);
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign, v), target));
            if hit != 0 {
                max = x[8 * k + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let vscale = _mm256_set1_ps(iscale);
        let (cap, low_i32) = (_mm256_set1_ps(127.0), _mm256_set1_ps(-2147483648.0));
        // Per 16 elements: the sums of their quants, as 8-lane partial sums (reduced below).
        let mut part = [_mm256_setzero_si256(); QK_K / 16];
        for g in 0..QK_K / 32 {
            let mut q = [_mm256_setzero_si256(); 4];
            for (k, qk) in q.iter_mut().enumerate() {
                // The scalar `nearest_int(v·iscale).min(127) as i8`, lane by lane: `as i32`
                // saturates (NaN → 0), `as i8` keeps the low byte. Out-of-range values only
                // occur when iscale overflowed to ±inf (subnormal blocks); they are emulated
                // exactly all the same.
                let r = round_half_even(_mm256_mul_ps(load_f32x8_at(x, 32 * g + 8 * k), vscale));
                let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
                let r = _mm256_max_ps(_mm256_min_ps(r, cap), low_i32);
                let i = _mm256_cvtps_epi32(r);
                *qk = _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(i));
            }
            store_i8x32_at(&mut b.qs, 32 * g, pack_i32_to_i8(q[0], q[1], q[2], q[3]));
            part[2 * g] = _mm256_add_epi32(q[0], q[1]);
            part[2 * g + 1] = _mm256_add_epi32(q[2], q[3]);
        }
        let lo = reduce8(&[part[0], part[1], part[2], part[3], part[4], part[5], part[6], part[7]]);
        let hi = reduce8(&[part[8], part[9], part[10], part[11], part[12], part[13], part[14], part[15]]);
        // i32 → i16 (sums of 16 quants fit: |Σ| ≤ 2032); packs works per 128-bit lane.
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(lo, hi));
        _mm256_storeu_si256(b.bsums.as_mut_ptr().cast(), packed);
        b.d = 1.0 / iscale;
    }
}

/// Eight vectors of 8 i32 → one vector of their 8 horizontal sums, in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce8(s: &[__m256i; 8]) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let t0 = _mm256_hadd_epi32(s[0], s[1]);
        let t1 = _mm256_hadd_epi32(s[2], s[3]);
        let t2 = _mm256_hadd_epi32(s[4], s[5]);
        let t3 = _mm256_hadd_epi32(s[6], s[7]);
        // Per 128-bit lane: [Σs0, Σs1, Σs2, Σs3] over that lane's 4 elements (u0), s4..s7 (u1).
        let u0 = _mm256_hadd_epi32(t0, t1);
        let u1 = _mm256_hadd_epi32(t2, t3);
        _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(u0, u1), _mm256_permute2x128_si256::<0x31>(u0, u1))
    }
}
