//! Q8_0: 32 elements, one f16 scale, `x = d·q` with `q` in -127..=127 (ggml `block_q8_0`).
//!
//! Both a weight format and the activation format of Q4_0, Q5_0, Q8_0 and IQ4_NL weights.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx2_x8;
#[cfg(target_arch = "x86_64")]
pub mod avx512_x8;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod wide;
pub mod x8;

use crate::quant::util::{f16_to_f32, f32_to_f16, inverse_or_zero};

/// Elements per block.
pub const QK8_0: usize = 32;

/// ggml `block_q8_0`: 34 bytes, alignment 1.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    pub qs: [i8; QK8_0],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34 && std::mem::align_of::<BlockQ8_0>() == 1);

impl BlockQ8_0 {
    /// The scale as f32.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

/// `out[i] = d·q[i]`; `out.len() == blocks.len() * 32`.
pub fn dequantize(blocks: &[BlockQ8_0], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK8_0);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK8_0)) {
        let d = b.d();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = q as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q8_0_ref` (bit-identical to gguf-py): `d = amax/127`,
/// `q = roundf(x/d)` (half away from zero).
pub fn quantize(src: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(src.len(), out.len() * QK8_0);
    for (x, b) in src.chunks_exact(QK8_0).zip(out.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse_or_zero(d);
        b.d = f32_to_f16(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
    }
}

/// Σ w·a over a row: per block the integer sum of q·q, then scaled by both f16 scales
/// (ggml `ggml_vec_dot_q8_0_q8_0_generic`).
pub fn vec_dot(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
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
