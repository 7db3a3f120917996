//! Q4_1: 32 elements, f16 scale and f16 minimum, `x = d·q + m` with 4-bit `q`
//! (ggml `block_q4_1`).
//!
//! Nibble order as Q4_0. Dot product against [`BlockQ8_1`] activations, whose block sum
//! `s` turns the minimum into one multiply per block.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx2_x8;
#[cfg(target_arch = "x86_64")]
pub mod avx512_x8;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod x8;
#[cfg(target_arch = "x86_64")]
mod x8_shuffle_avx2;

use crate::quant::q8_1::BlockQ8_1;
use crate::quant::util::{f16_to_f32, f32_to_f16, inverse_or_zero, min_max};

/// Elements per block.
pub const QK4_1: usize = 32;

/// ggml `block_q4_1`: 20 bytes, alignment 1.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    /// Minimum, f16 little-endian.
    pub m: [u8; 2],
    pub qs: [u8; QK4_1 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20 && std::mem::align_of::<BlockQ4_1>() == 1);

impl BlockQ4_1 {
    /// The scale as f32.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// The minimum as f32.
    #[inline(always)]
    pub fn m(&self) -> f32 {
        f16_to_f32(self.m)
    }
}

/// `out = d·q + m`; `out.len() == blocks.len() * 32`.
pub fn dequantize(blocks: &[BlockQ4_1], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK4_1);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK4_1)) {
        let (d, m) = (b.d(), b.m());
        let (lo, hi) = y.split_at_mut(QK4_1 / 2);
        for ((&q, y0), y1) in b.qs.iter().zip(lo).zip(hi) {
            *y0 = (q & 0x0F) as f32 * d + m;
            *y1 = (q >> 4) as f32 * d + m;
        }
    }
}

/// ggml's `quantize_row_q4_1_ref` (bit-identical to gguf-py): `d = (max − min)/15`,
/// `q = min(15, trunc((x − min)/d + 0.5))`, all in f32.
pub fn quantize(src: &[f32], out: &mut [BlockQ4_1]) {
    debug_assert_eq!(src.len(), out.len() * QK4_1);
    for (x, b) in src.chunks_exact(QK4_1).zip(out.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse_or_zero(d);
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        let q = |v: f32| -> u8 { (((v - min) * id + 0.5).trunc() as u8).min(15) };
        for j in 0..QK4_1 / 2 {
            b.qs[j] = q(x[j]) | (q(x[j + QK4_1 / 2]) << 4);
        }
    }
}

/// Σ w·a: `d_w·d_a·Σ q·q8 + m_w·s_a` per block (ggml `ggml_vec_dot_q4_1_q8_1_generic`).
pub fn vec_dot(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (ylo, yhi) = y.qs.split_at(QK4_1 / 2);
        let mut sumi = 0i32;
        for ((&q, &a0), &a1) in x.qs.iter().zip(ylo).zip(yhi) {
            sumi += (q & 0x0F) as i32 * a0 as i32;
            sumi += (q >> 4) as i32 * a1 as i32;
        }
        sum += (x.d() * y.d()) * sumi as f32 + x.m() * y.s();
    }
    sum
}
