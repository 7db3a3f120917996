//! Q8_1: 32 elements, f16 scale `d` and f16 `s = d·Σq` (ggml `block_q8_1`).
//!
//! The activation format of Q4_1 and Q5_1 weights: `s` carries the block sum so the
//! weights' min term costs one multiply per block.

#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::quant::util::{f16_to_f32, f32_to_f16, inverse_or_zero};

/// Elements per block.
pub const QK8_1: usize = 32;

/// ggml `block_q8_1`: 36 bytes, alignment 1.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    /// `d · Σ qs`, f16 little-endian.
    pub s: [u8; 2],
    pub qs: [i8; QK8_1],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36 && std::mem::align_of::<BlockQ8_1>() == 1);

impl BlockQ8_1 {
    /// The scale as f32.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// `d · Σ qs` as f32.
    #[inline(always)]
    pub fn s(&self) -> f32 {
        f16_to_f32(self.s)
    }
}

/// `out[i] = d·q[i]`; `out.len() == blocks.len() * 32`.
pub fn dequantize(blocks: &[BlockQ8_1], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK8_1);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK8_1)) {
        let d = b.d();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = q as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q8_1_ref`: as Q8_0, plus `s = f16(Σq · d)`.
pub fn quantize(src: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(src.len(), out.len() * QK8_1);
    for (x, b) in src.chunks_exact(QK8_1).zip(out.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse_or_zero(d);
        b.d = f32_to_f16(d);
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        b.s = f32_to_f16(sum as f32 * d);
    }
}

/// Σ w·a for a Q8_1 row against Q8_1 activations (ggml has no such kernel; this is the
/// obvious integer one, for completeness of [`crate::quant::vec_dot_scalar`]).
pub fn vec_dot(w: &[BlockQ8_1], a: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for (&p, &q) in x.qs.iter().zip(&y.qs) {
            sumi += p as i32 * q as i32;
        }
        sum += sumi as f32 * (x.d() * y.d());
    }
    sum
}
