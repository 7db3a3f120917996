//! Q5_0: 32 elements, one f16 scale, `x = d·(q − 16)` with 5-bit `q` (ggml `block_q5_0`).
//!
//! Low nibbles as Q4_0 (byte `j`: element `j` low, `j + 16` high); bit `i` of the
//! little-endian `qh` word is bit 4 of element `i`. Dot product against [`BlockQ8_0`].

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

use crate::quant::q8_0::BlockQ8_0;
use crate::quant::util::{f16_to_f32, f32_to_f16, inverse_or_zero, signed_abs_max};

/// Elements per block.
pub const QK5_0: usize = 32;

/// ggml `block_q5_0`: 22 bytes, alignment 1.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    /// Fifth bits, a little-endian u32 (bit `i` belongs to element `i`).
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22 && std::mem::align_of::<BlockQ5_0>() == 1);

impl BlockQ5_0 {
    /// The scale as f32.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// The fifth bits as one word.
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }

    /// The 5-bit quants of elements `j` and `j + 16`, `j < 16`, offset removed.
    #[inline(always)]
    fn pair(&self, qh: u32, j: usize) -> (i32, i32) {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        let q = self.qs[j] as u32;
        (((q & 0x0F) | h0) as i32 - 16, ((q >> 4) | h1) as i32 - 16)
    }
}

/// `out = d·(q − 16)`; `out.len() == blocks.len() * 32`.
pub fn dequantize(blocks: &[BlockQ5_0], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK5_0);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK5_0)) {
        let d = b.d();
        let qh = b.qh();
        let (lo, hi) = y.split_at_mut(QK5_0 / 2);
        for (j, (y0, y1)) in lo.iter_mut().zip(hi).enumerate() {
            let (q0, q1) = b.pair(qh, j);
            *y0 = q0 as f32 * d;
            *y1 = q1 as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q5_0_ref`: `d = max/−16`, `q = min(31, trunc(x/d + 16.5))`, with
/// gguf-py's rounding (`x·(1/d) + 16.5` in f64, rounded once to f32; see Q4_0).
pub fn quantize(src: &[f32], out: &mut [BlockQ5_0]) {
    debug_assert_eq!(src.len(), out.len() * QK5_0);
    for (x, b) in src.chunks_exact(QK5_0).zip(out.iter_mut()) {
        let (max, _) = signed_abs_max(x);
        let d = max / -16.0;
        let id = inverse_or_zero(d);
        b.d = f32_to_f16(d);
        let q = |v: f32| -> u32 { ((((v as f64) * (id as f64) + 16.5) as f32).trunc() as u32).min(31) };
        let mut qh = 0u32;
        for j in 0..QK5_0 / 2 {
            let (q0, q1) = (q(x[j]), q(x[j + QK5_0 / 2]));
            b.qs[j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) as u8;
            qh |= ((q0 >> 4) & 1) << j;
            qh |= ((q1 >> 4) & 1) << (j + QK5_0 / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// Σ w·a: per block the integer sum of (q−16)·q8, times both scales
/// (ggml `ggml_vec_dot_q5_0_q8_0_generic`).
pub fn vec_dot(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let qh = x.qh();
        let mut sumi = 0i32;
        for j in 0..QK5_0 / 2 {
            let (q0, q1) = x.pair(qh, j);
            sumi += q0 * y.qs[j] as i32 + q1 * y.qs[j + QK5_0 / 2] as i32;
        }
        sum += (x.d() * y.d()) * sumi as f32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As for Q4_0: gguf-py's fused rounding gives 28 where unfused f32 gives 29.
    #[test]
    fn quantize_rounds_like_gguf_py_not_like_unfused_f32() {
        let (max, v) = (0.014578962f32, -0.011389813f32);
        let mut x = [0.0f32; QK5_0];
        x[0] = max;
        x[20] = v;
        let mut b = [BlockQ5_0 { d: [0; 2], qh: [0; 4], qs: [0; 16] }];
        quantize(&x, &mut b);
        let id = 1.0 / (max / -16.0);
        assert_eq!(((v * id + 16.5).trunc() as u32).min(31), 29, "the unfused f32 formula");
        let mut y = [0.0f32; QK5_0];
        dequantize(&b, &mut y);
        assert_eq!(y[20], (28 - 16) as f32 * b[0].d());
    }
}
