//! Q5_1: 32 elements, f16 scale and minimum, `x = d·q + m` with 5-bit `q`
//! (ggml `block_q5_1`).
//!
//! Bit layout as Q5_0. Dot product against [`BlockQ8_1`] activations.

#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::quant::q8_1::BlockQ8_1;
use crate::quant::util::{f16_to_f32, f32_to_f16, inverse_or_zero, min_max};

/// Elements per block.
pub const QK5_1: usize = 32;

/// ggml `block_q5_1`: 24 bytes, alignment 1.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    /// Minimum, f16 little-endian.
    pub m: [u8; 2],
    /// Fifth bits, a little-endian u32 (bit `i` belongs to element `i`).
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24 && std::mem::align_of::<BlockQ5_1>() == 1);

impl BlockQ5_1 {
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

    /// The fifth bits as one word.
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }

    /// The 5-bit quants of elements `j` and `j + 16`, `j < 16`.
    #[inline(always)]
    fn pair(&self, qh: u32, j: usize) -> (i32, i32) {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        let q = self.qs[j] as u32;
        (((q & 0x0F) | h0) as i32, ((q >> 4) | h1) as i32)
    }
}

/// `out = d·q + m`; `out.len() == blocks.len() * 32`.
pub fn dequantize(blocks: &[BlockQ5_1], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK5_1);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK5_1)) {
        let (d, m) = (b.d(), b.m());
        let qh = b.qh();
        let (lo, hi) = y.split_at_mut(QK5_1 / 2);
        for (j, (y0, y1)) in lo.iter_mut().zip(hi).enumerate() {
            let (q0, q1) = b.pair(qh, j);
            *y0 = q0 as f32 * d + m;
            *y1 = q1 as f32 * d + m;
        }
    }
}

/// ggml's `quantize_row_q5_1_ref` (bit-identical to gguf-py): `d = (max − min)/31`,
/// `q = min(31, trunc((x − min)/d + 0.5))`, all in f32.
pub fn quantize(src: &[f32], out: &mut [BlockQ5_1]) {
    debug_assert_eq!(src.len(), out.len() * QK5_1);
    for (x, b) in src.chunks_exact(QK5_1).zip(out.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse_or_zero(d);
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        let q = |v: f32| -> u32 { (((v - min) * id + 0.5).trunc() as u32).min(31) };
        let mut qh = 0u32;
        for j in 0..QK5_1 / 2 {
            let (q0, q1) = (q(x[j]), q(x[j + QK5_1 / 2]));
            b.qs[j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) as u8;
            qh |= ((q0 >> 4) & 1) << j;
            qh |= ((q1 >> 4) & 1) << (j + QK5_1 / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// Σ w·a: `d_w·d_a·Σ q·q8 + m_w·s_a` per block (ggml `ggml_vec_dot_q5_1_q8_1_generic`).
pub fn vec_dot(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let qh = x.qh();
        let mut sumi = 0i32;
        for j in 0..QK5_1 / 2 {
            let (q0, q1) = x.pair(qh, j);
            sumi += q0 * y.qs[j] as i32 + q1 * y.qs[j + QK5_1 / 2] as i32;
        }
        sum += (x.d() * y.d()) * sumi as f32 + x.m() * y.s();
    }
    sum
}
