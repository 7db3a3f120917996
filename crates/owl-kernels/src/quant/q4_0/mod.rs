//! Q4_0: 32 elements, one f16 scale, `x = d·(q − 8)` with 4-bit `q` (ggml `block_q4_0`).
//!
//! Nibble order: byte `j` holds element `j` in its low nibble and element `j + 16` in its
//! high nibble. Dot product against [`BlockQ8_0`] activations.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx2_x8;
#[cfg(target_arch = "x86_64")]
pub mod avx512_x8;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod x8;

use crate::quant::q8_0::BlockQ8_0;
use crate::quant::util::{f16_to_f32, f32_to_f16, inverse_or_zero, signed_abs_max};

/// Elements per block.
pub const QK4_0: usize = 32;

/// ggml `block_q4_0`: 18 bytes, alignment 1.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    pub qs: [u8; QK4_0 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18 && std::mem::align_of::<BlockQ4_0>() == 1);

impl BlockQ4_0 {
    /// The scale as f32.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

/// `out = d·(q − 8)`; `out.len() == blocks.len() * 32`.
pub fn dequantize(blocks: &[BlockQ4_0], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK4_0);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK4_0)) {
        let d = b.d();
        let (lo, hi) = y.split_at_mut(QK4_0 / 2);
        for ((&q, y0), y1) in b.qs.iter().zip(lo).zip(hi) {
            *y0 = ((q & 0x0F) as i32 - 8) as f32 * d;
            *y1 = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q4_0_ref`: `d = max/−8` (`max` the element of largest magnitude),
/// `q = min(15, trunc(x/d + 8.5))`.
///
/// The rounding follows gguf-py bit for bit: it evaluates `x·(1/d) + 8.5` in f64 and rounds
/// once to f32 before truncating (emulating the fused multiply-add a C compiler emits for
/// ggml's `x*id + 8.5f`), so products landing just below an integer round up.
pub fn quantize(src: &[f32], out: &mut [BlockQ4_0]) {
    debug_assert_eq!(src.len(), out.len() * QK4_0);
    for (x, b) in src.chunks_exact(QK4_0).zip(out.iter_mut()) {
        let (max, _) = signed_abs_max(x);
        let d = max / -8.0;
        let id = inverse_or_zero(d);
        b.d = f32_to_f16(d);
        let q = |v: f32| -> u8 { ((((v as f64) * (id as f64) + 8.5) as f32).trunc() as u8).min(15) };
        for j in 0..QK4_0 / 2 {
            b.qs[j] = q(x[j]) | (q(x[j + QK4_0 / 2]) << 4);
        }
    }
}

/// Σ w·a: per block the integer sum of (q−8)·q8, times both scales
/// (ggml `ggml_vec_dot_q4_0_q8_0_generic`).
pub fn vec_dot(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (ylo, yhi) = y.qs.split_at(QK4_0 / 2);
        let mut sumi = 0i32;
        for ((&q, &a0), &a1) in x.qs.iter().zip(ylo).zip(yhi) {
            sumi += ((q & 0x0F) as i32 - 8) * a0 as i32;
            sumi += ((q >> 4) as i32 - 8) * a1 as i32;
        }
        sum += sumi as f32 * x.d() * y.d();
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A product landing just below a rounding boundary: gguf-py (and ggml built with FMA)
    /// gives 6; rounding `x·id` to f32 first, as unfused C does, would give 7.
    #[test]
    fn quantize_rounds_like_gguf_py_not_like_unfused_f32() {
        let (max, v) = (-0.014132517f32, -0.0026498474f32);
        let mut x = [0.0f32; QK4_0];
        x[0] = max;
        x[1] = v;
        let mut b = [BlockQ4_0 { d: [0; 2], qs: [0; 16] }];
        quantize(&x, &mut b);
        let id = 1.0 / (max / -8.0);
        assert_eq!(((v * id + 8.5).trunc() as u8).min(15), 7, "the unfused f32 formula");
        assert_eq!(b[0].qs[1] & 0x0F, 6);
        assert_eq!(b[0].qs[0] & 0x0F, 0, "the extreme maps to -8");
    }
}
