//! e^x for the float kernels (activations, softmax): Cephes' `expf` reduction and
//! polynomial, branch-free — [`exp_poly`] in plain Rust (the portable path, which the
//! compiler can vectorise) and [`avx2::exp`] 8 lanes wide with the same arithmetic.

use std::f32::consts::LOG2_E;

/// `a * b + c`, fused where that is one instruction (aarch64, or FMA enabled at compile
/// time); elsewhere `mul_add` would be a libm call.
#[inline(always)]
pub(crate) fn madd(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(any(target_arch = "aarch64", target_feature = "fma")) {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Cephes `expf` constants: x = n·ln2 + r with ln2 split in two for an exact `n·LN2_HI`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2^23: adding it rounds to an integer that lands in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
/// Inputs are clamped to this range: 2^n stays a normal float.
pub(crate) const EXP_MIN: f32 = -87.0;
pub(crate) const EXP_MAX: f32 = 88.0;
/// Cephes' degree-5 polynomial for (e^r - 1 - r) / r² on |r| <= ln2/2, highest first
/// (its last coefficient, 5.0000001201e-1, rounds to 0.5 in f32).
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// e^x, branch-free and without float-to-int conversions so that loops over it vectorise:
/// n = round(x·log2 e) by the 1.5·2^23 trick (which leaves n in the low mantissa bits),
/// r = x - n·ln2, e^r by the polynomial, times 2^n built from those bits. Relative error
/// below 2.5e-7 (measured in the tests); inputs are clamped to [-87, 88], so results below
/// ~1.6e-38 come out as ~1.6e-38 and above ~1.65e38 as ~1.65e38 (never inf).
#[inline(always)]
pub(crate) fn exp_poly(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let t = madd(x, LOG2_E, ROUND);
    let n = t - ROUND;
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let r = madd(n, -LN2_LO, madd(n, -LN2_HI, x));
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = madd(p, r, c);
    }
    let e = madd(p * r, r, r) + 1.0;
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// The same arithmetic 8 lanes wide with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2_E, ROUND};

    /// e^x of 8 lanes, as [`super::exp_poly`] (same clamping, same error).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)), _mm256_set1_ps(EXP_MAX));
        let round = _mm256_set1_ps(ROUND);
        let t = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2_E), round);
        let n = _mm256_sub_ps(t, round);
        let n_bits = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(round));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let e = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0));
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(n_bits, _mm256_set1_epi32(127)));
        _mm256_mul_ps(e, _mm256_castsi256_ps(scale))
    }
}

/// The same arithmetic 16 lanes wide with AVX-512 F: each lane gives the bits of
/// [`avx2::exp`]'s lane (the same IEEE operations, element by element).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2_E, ROUND};

    /// e^x of 16 lanes, as [`super::avx2::exp`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_MIN)), _mm512_set1_ps(EXP_MAX));
        let round = _mm512_set1_ps(ROUND);
        let t = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2_E), round);
        let n = _mm512_sub_ps(t, round);
        let n_bits = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(round));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0));
        let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(n_bits, _mm512_set1_epi32(127)));
        _mm512_mul_ps(e, _mm512_castsi512_ps(scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_poly_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=1_000_000 {
            let x = EXP_MIN + i as f32 * ((EXP_MAX - EXP_MIN) / 1e6);
            let want = (x as f64).exp();
            worst = worst.max(((exp_poly(x) as f64 - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp_poly(0.0), 1.0);
        assert_eq!(exp_poly(-1000.0), exp_poly(EXP_MIN));
        assert_eq!(exp_poly(1000.0), exp_poly(EXP_MAX));
        assert!(exp_poly(EXP_MIN) > 0.0 && exp_poly(EXP_MIN) < 2e-38);
    }
}
