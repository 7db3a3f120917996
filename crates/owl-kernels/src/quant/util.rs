//! Scalar helpers shared by the block formats: half-precision scales and ggml's rounding.

/// An IEEE half stored little-endian (as every ggml scale is) to f32; exact.
#[inline(always)]
pub fn f16_to_f32(bits: [u8; 2]) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes(bits))
}

/// IEEE half bits to f32; exact for every input (NaN payloads kept).
///
/// Our own bit manipulation rather than `half::f16::to_f32`, which on x86 checks for F16C
/// at run time on every call: that check made the scalar F16 dot ~6× slower and keeps the
/// compiler from vectorizing the per-block scale loads.
#[inline(always)]
pub fn f16_bits_to_f32(bits: u16) -> f32 {
    // All three cases are computed and one is selected, so the compiler emits selects (and
    // vectorizes loops over halves) instead of branches.
    let h = bits as u32;
    let sign = (h & 0x8000) << 16;
    let exp = h & 0x7c00;
    // Exponent and mantissa moved into place, exponent rebiased 15 -> 127.
    let normal = ((h & 0x7fff) << 13) + (112 << 23);
    // Inf / NaN: push the exponent on to all ones, mantissa (payload) kept.
    let inf_nan = normal + (112 << 23);
    // Zero / subnormal: 2^-14·(1 + m/1024) − 2^-14 = m·2^-24, exact in f32.
    let subnormal = (f32::from_bits(normal + (1 << 23)) - f32::from_bits(113 << 23)).to_bits();
    let magnitude = if exp == 0x7c00 {
        inf_nan
    } else if exp == 0 {
        subnormal
    } else {
        normal
    };
    f32::from_bits(sign | magnitude)
}

/// f32 to IEEE half, round to nearest even (ggml's `GGML_FP32_TO_FP16`, numpy's
/// `astype(float16)`), as little-endian bytes.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// ggml's `nearest_int`: round half to even. ggml adds 1.5·2^23 and reads the mantissa,
/// which equals round-half-even for |x| < 2^22 (all it is used for); unlike the bit trick
/// this saturates instead of wrapping on out-of-range or NaN input.
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// Σ prod(w[i], a[i]) with each f32 product summed in f64 (as ggml's scalar float dots),
/// over 8 independent f64 lanes so the sum pipelines and vectorizes; the lane order is
/// fixed, so the result is deterministic.
#[inline(always)]
pub(crate) fn dot_f64_lanes<W: Copy, A: Copy>(w: &[W], a: &[A], prod: impl Fn(W, A) -> f32) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let (wc, ac) = (w.chunks_exact(LANES), a.chunks_exact(LANES));
    let (wt, at) = (wc.remainder(), ac.remainder());
    for (wc, ac) in wc.zip(ac) {
        for k in 0..LANES {
            acc[k] += prod(wc[k], ac[k]) as f64;
        }
    }
    for (k, (&x, &y)) in wt.iter().zip(at).enumerate() {
        acc[k] += prod(x, y) as f64;
    }
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    s as f32
}

/// The element of largest magnitude and that magnitude (the first one on ties), as ggml's
/// `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` finds it.
#[inline]
pub(crate) fn signed_abs_max(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Minimum and maximum of a block as ggml's reference quantizers compute them.
#[inline]
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `1/d`, or 0 when `d` is 0 (an all-zero block).
#[inline(always)]
pub(crate) fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_is_half_even_like_ggml() {
        // ggml: fval + 12582912.f, then the low 23 mantissa bits minus 2^22.
        fn ggml(f: f32) -> i32 {
            let v = f + 12582912.0f32;
            ((v.to_bits() & 0x007f_ffff) as i32) - 0x0040_0000
        }
        for f in [-2.5f32, -1.5, -0.5, 0.5, 1.5, 2.5, 3.49, -3.51, 127.5, -127.5, 0.0, 1e6 + 0.5] {
            assert_eq!(nearest_int(f), ggml(f), "{f}");
        }
    }

    #[test]
    fn f16_to_f32_is_exact_for_all_65536_halves() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16_bits_to_f32(bits);
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{bits:#06x}: {got} vs {want}");
        }
    }

    #[test]
    fn f16_round_trip_and_rounding() {
        assert_eq!(f16_to_f32(f32_to_f16(0.1)), half::f16::from_f32(0.1).to_f32());
        // 1 + 2^-11 is halfway between 1 and the next half (1 + 2^-10): ties to even -> 1.
        assert_eq!(f16_to_f32(f32_to_f16(1.0 + 1.0 / 2048.0)), 1.0);
        assert_eq!(f32_to_f16(-0.0), [0x00, 0x80]);
    }
}
