//! NEON dot products of float weight rows (F32, F16, BF16 as raw little-endian bytes of any
//! alignment) with f32 activations; the references are `quant::{f32, f16, bf16}`.
//!
//! `dot_f32`, `dot_f16`, `dot_bf16(w: &[u8], a: &[f32]) -> f32`: 16 elements per iteration
//! into four f32x4 FMA accumulators (ggml's `GGML_F32_VEC` scheme on NEON), a scalar tail of
//! up to 15 elements. The scalar references sum the f32 products in f64, so the results
//! differ by f32 accumulation error only: tests allow (n/16 + 8)·2⁻²⁴·Σ|w·a|, the bound of
//! n/16 FMA steps per lane plus the final lane sums.
//!
//! Widening: F16 with `fcvtl`/`fcvtl2` (exact; base Advanced SIMD, no `fp16` extension
//! needed) through inline assembly, because Rust's `vcvt_f32_f16` takes the unstable `f16`
//! vector type; BF16 by a 16-bit left shift (`vshll_n_u16`), exact by definition.
//!
//! NEON is architecturally mandatory on AArch64 (`quant::simd_neon`), so these are safe
//! functions. Lengths: `w` must hold at least `a.len()` elements; in release builds a
//! shorter `w` cuts the row, never read out of bounds.

#![allow(unused_unsafe)]

use std::arch::aarch64::*;

use crate::quant::simd_neon::load_u8x16_at;
use crate::quant::{f16_to_f32, BlockFormat};

/// Σ w·a: `w` holds elements of `bytes` bytes each, widened 16 at a time by `load16` (the
/// first `16·bytes` bytes of its argument as four f32x4) and one at a time by `one` (the tail).
#[inline(always)]
fn float_dot(
    w: &[u8],
    a: &[f32],
    bytes: usize,
    load16: impl Fn(&[u8]) -> [float32x4_t; 4],
    one: impl Fn(&[u8]) -> f32,
) -> f32 {
    debug_assert!(w.len() >= a.len() * bytes);
    let n = a.len().min(w.len() / bytes);
    let (w, a) = (&w[..n * bytes], &a[..n]);
    let (wc, ac) = (w.chunks_exact(16 * bytes), a.chunks_exact(16));
    let (wt, at) = (wc.remainder(), ac.remainder());
    // SAFETY: register-only intrinsics and loads of exactly 4 f32 from bounds-checked
    // sub-slices; NEON is always present on AArch64.
    let mut sum = unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        for (wb, ab) in wc.zip(ac) {
            let wv = load16(wb);
            for k in 0..4 {
                acc[k] = vfmaq_f32(acc[k], wv[k], vld1q_f32(ab[4 * k..4 * k + 4].as_ptr()));
            }
        }
        vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])))
    };
    for (wb, &x) in wt.chunks_exact(bytes).zip(at) {
        sum += one(wb) * x;
    }
    sum
}

#[inline(always)]
fn load16_f32(b: &[u8]) -> [float32x4_t; 4] {
    // SAFETY: bit casts of bounds-checked 16-byte loads; NEON is always present.
    std::array::from_fn(|k| unsafe { vreinterpretq_f32_u8(load_u8x16_at(b, 16 * k)) })
}

#[inline(always)]
fn one_f32(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Eight halves (16 bytes) widened to f32, exactly: `fcvtl` / `fcvtl2`.
#[inline(always)]
pub(crate) fn f16x8_to_f32(v: uint8x16_t) -> (float32x4_t, float32x4_t) {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: FCVTL/FCVTL2 are base Advanced SIMD instructions (every AArch64 CPU); they read
    // `x` and write the two outputs only (`out` operands never share a register with an
    // input, so `x` is intact for the second instruction); no memory, stack or flags.
    unsafe {
        std::arch::asm!(
            "fcvtl {lo:v}.4s, {x:v}.4h",
            "fcvtl2 {hi:v}.4s, {x:v}.8h",
            x = in(vreg) v,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (lo, hi)
}

#[inline(always)]
fn load16_f16(b: &[u8]) -> [float32x4_t; 4] {
    let (a0, a1) = f16x8_to_f32(load_u8x16_at(b, 0));
    let (b0, b1) = f16x8_to_f32(load_u8x16_at(b, 16));
    [a0, a1, b0, b1]
}

#[inline(always)]
fn one_f16(b: &[u8]) -> f32 {
    f16_to_f32([b[0], b[1]])
}

#[inline(always)]
fn load16_bf16(b: &[u8]) -> [float32x4_t; 4] {
    // SAFETY: register-only intrinsics on bounds-checked 16-byte loads; NEON is always present.
    unsafe {
        let (v0, v1) = (vreinterpretq_u16_u8(load_u8x16_at(b, 0)), vreinterpretq_u16_u8(load_u8x16_at(b, 16)));
        // bf16 is the top half of an f32: widen each u16 to u32 shifted left by 16.
        let f = |v: uint32x4_t| vreinterpretq_f32_u32(v);
        [
            f(vshll_n_u16::<16>(vget_low_u16(v0))),
            f(vshll_high_n_u16::<16>(v0)),
            f(vshll_n_u16::<16>(vget_low_u16(v1))),
            f(vshll_high_n_u16::<16>(v1)),
        ]
    }
}

#[inline(always)]
fn one_bf16(b: &[u8]) -> f32 {
    f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
}

/// Σ w·a for an F32 weight row (little-endian bytes, any alignment); see the module header.
pub fn dot_f32(w: &[u8], a: &[f32]) -> f32 {
    float_dot(w, a, BlockFormat::F32.block_bytes(), load16_f32, one_f32)
}

/// Σ w·a for an F16 weight row; see the module header.
pub fn dot_f16(w: &[u8], a: &[f32]) -> f32 {
    float_dot(w, a, BlockFormat::F16.block_bytes(), load16_f16, one_f16)
}

/// Σ w·a for a BF16 weight row; see the module header.
pub fn dot_bf16(w: &[u8], a: &[f32]) -> f32 {
    float_dot(w, a, BlockFormat::BF16.block_bytes(), load16_bf16, one_bf16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{self, f16_bits_to_f32};

    #[test]
    fn f16_widening_is_exact_for_all_65536_halves() {
        for chunk in 0..(1u32 << 16) / 8 {
            let bits: [u16; 8] = std::array::from_fn(|i| (chunk * 8 + i as u32) as u16);
            let bytes: [u8; 16] = bytemuck::cast(bits.map(u16::to_le));
            let (lo, hi) = f16x8_to_f32(load_u8x16_at(&bytes, 0));
            let mut got = [0f32; 8];
            // SAFETY: stores 4 f32 into each half of `got`.
            unsafe {
                vst1q_f32(got.as_mut_ptr(), lo);
                vst1q_f32(got.as_mut_ptr().add(4), hi);
            }
            for (&b, &g) in bits.iter().zip(&got) {
                let want = f16_bits_to_f32(b);
                assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "{b:#06x}: {g} vs {want}");
            }
        }
    }

    type Dot = fn(&[u8], &[f32]) -> f32;

    /// Each float format's kernel against its scalar reference on weight rows of random
    /// values (and, for F16, every finite half in turn), at unaligned byte offsets, lengths
    /// around the 16-element step.
    #[test]
    fn matches_scalar_reference() {
        fn ref_f32(w: &[u8], a: &[f32]) -> f32 {
            quant::f32::vec_dot_bytes(w, bytemuck::cast_slice(a))
        }
        fn ref_f16(w: &[u8], a: &[f32]) -> f32 {
            quant::f16::vec_dot_f32(bytemuck::cast_slice(w), a)
        }
        fn ref_bf16(w: &[u8], a: &[f32]) -> f32 {
            quant::bf16::vec_dot_f32(bytemuck::cast_slice(w), a)
        }
        let cases: [(BlockFormat, Dot, Dot); 3] = [
            (BlockFormat::F32, dot_f32, ref_f32),
            (BlockFormat::F16, dot_f16, ref_f16),
            (BlockFormat::BF16, dot_bf16, ref_bf16),
        ];
        let mut worst = 0f64;
        let mut pairs = 0;
        for (format, neon, scalar) in cases {
            let bytes = format.block_bytes();
            for n in [1usize, 7, 15, 16, 17, 31, 64, 255, 4096] {
                let mut rows: Vec<Vec<f32>> = vec![
                    quant::test_values(n, 0x1234 + n as u64, 0.5, 1.0),
                    quant::test_values(n, 0x5678 + n as u64, 0.1, 1e4),
                    vec![0.0; n],
                ];
                if format == BlockFormat::F16 {
                    // Finite halves in turn: subnormals, normals, ±65504.
                    rows.push(
                        (0..n)
                            .map(|i| f16_bits_to_f32(((i * 97 + n) % 0x7c00) as u16 | ((i as u16 & 1) << 15)))
                            .collect(),
                    );
                }
                let acts = [quant::test_values(n, 0x9abc + n as u64, 0.5, 2.0), vec![1.0; n]];
                for (ri, x) in rows.iter().enumerate() {
                    for offset in [0, 1] {
                        let mut w = vec![0u8; offset + n * bytes];
                        quant::quantize_row(format, x, &mut w[offset..]).expect("quantize");
                        let w = &w[offset..];
                        let mut wf = vec![0f32; n];
                        quant::dequantize_row(format, w, &mut wf).expect("dequantize");
                        for a in &acts {
                            let want = scalar(w, a);
                            let got = neon(w, a);
                            let mag: f64 = wf.iter().zip(a).map(|(&p, &q)| (p as f64 * q as f64).abs()).sum();
                            let err = (got as f64 - want as f64).abs();
                            let tol = (n / 16 + 8) as f64 * f64::powi(2.0, -24) * mag;
                            assert!(err <= tol, "{format:?} n {n} row {ri} offset {offset}: neon {got:e} vs {want:e} (|Δ| {err:e}, tol {tol:e})");
                            if mag > 0.0 {
                                worst = worst.max(err / mag);
                            }
                            pairs += 1;
                        }
                    }
                }
            }
        }
        eprintln!("float dots neon vs scalar: {pairs} row pairs, worst |Δ|/Σ|w·a| = {worst:e}");
    }
}
