//! IQ4_XS: super-blocks of 256 = 8 sub-blocks of 32, `x = d·(ls − 32)·T[q]` with the
//! IQ4_NL table and 6-bit sub-block scales `ls` (ggml `block_iq4_xs`, 4.25 bits/weight).
//!
//! Sub-block `ib`: low four bits of `ls` are nibble `ib % 2` of `scales_l[ib / 2]`, the top
//! two are bits `2ib..2ib+2` of the little-endian `scales_h`; its quants are the 16 bytes
//! `qs[16ib..]` in Q4_0 nibble order. Dot product against [`BlockQ8K`].

#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::quant::iq4_nl::{best_block_scale, block_weights, pack_nibbles, KVALUES_IQ4NL};
use crate::quant::q8_k::BlockQ8K;
use crate::quant::scale_search::best_index_int8;
use crate::quant::util::{f16_to_f32, f32_to_f16, inverse_or_zero, nearest_int};
use crate::quant::weighted::sum_squares;
use crate::quant::QK_K;

/// ggml `block_iq4_xs`: 136 bytes, alignment 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ4XS {
    /// Super-block scale, f16 little-endian.
    pub d: [u8; 2],
    /// Top two bits of the 8 sub-block scales, a little-endian u16.
    pub scales_h: [u8; 2],
    /// Low four bits of the 8 sub-block scales.
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIQ4XS>() == 136 && std::mem::align_of::<BlockIQ4XS>() == 1);

impl BlockIQ4XS {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// Scale of sub-block `ib < 8`, offset removed (−32..=31).
    #[inline(always)]
    pub fn sub_scale(&self, ib: usize) -> i32 {
        let h = u16::from_le_bytes(self.scales_h);
        let ls = ((self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) as i32 | ((((h >> (2 * ib)) & 3) as i32) << 4);
        ls - 32
    }
}

/// `out = d·(ls − 32)·T[q]`; `out.len() == blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockIQ4XS], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d();
        for (ib, (ys, qs)) in y.chunks_exact_mut(32).zip(b.qs.chunks_exact(16)).enumerate() {
            let dl = d * b.sub_scale(ib) as f32;
            let (lo, hi) = ys.split_at_mut(16);
            for ((&q, y0), y1) in qs.iter().zip(lo).zip(hi) {
                *y0 = dl * KVALUES_IQ4NL[(q & 0x0F) as usize] as f32;
                *y1 = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    }
}

/// ggml's `quantize_row_iq4_xs_ref` (`quantize_row_iq4_nl_impl` with `ntry = 7`, no
/// importance weights): the best scale per sub-block of 32 (as IQ4_NL), the 8 scales
/// quantized to 6 bits against `−max/32`, levels recomputed against the stored scales.
pub fn quantize(src: &[f32], out: &mut [BlockIQ4XS]) {
    debug_assert_eq!(src.len(), out.len() * QK_K);
    quantize_with(src, out, None);
}

/// ggml's `quantize_iq4_xs` (`quantize_row_iq4_nl_impl`, super-block 256, `ntry = 7`)
/// with importance `qw` (`quant_weights`, one per element; σ² = 2·Σx²/256 per
/// super-block) or without (`None`, weights x²): per block of 32 the weighted search of
/// [`best_block_scale`], then 6-bit block scales against `d = −max_scale/32` and levels
/// recomputed against them.
pub(crate) fn quantize_with(src: &[f32], out: &mut [BlockIQ4XS], qw: Option<&[f32]>) {
    for (ibl, (x, y)) in src.chunks_exact(QK_K).zip(out.iter_mut()).enumerate() {
        let qw = qw.map(|qw| &qw[QK_K * ibl..QK_K * ibl + QK_K]);
        let mut l = [0u8; QK_K];
        let mut weight = [0f32; 32];
        let mut scales = [0f32; QK_K / 32];
        let sigma2 = if qw.is_some() { sum_squares(x) * (2.0 / QK_K as f32) } else { 0.0 };
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        for (ib, s) in scales.iter_mut().enumerate() {
            let r = 32 * ib..32 * ib + 32;
            block_weights(&mut weight, &x[r.clone()], qw.map(|qw| &qw[r.clone()]), sigma2);
            let d = best_block_scale(&x[r.clone()], &weight, &mut l[r], 7);
            *s = d;
            if d.abs() > amax_scale {
                amax_scale = d.abs();
                max_scale = d;
            }
        }
        let d = -max_scale / 32.0;
        y.d = f32_to_f16(d);
        let id = inverse_or_zero(d);
        let mut scales_h = 0u16;
        y.scales_l = [0; QK_K / 64];
        for (ib, &s) in scales.iter().enumerate() {
            let ls = nearest_int(id * s).clamp(-32, 31);
            let idl = inverse_or_zero(d * ls as f32);
            for (lj, &v) in l[32 * ib..32 * ib + 32].iter_mut().zip(&x[32 * ib..32 * ib + 32]) {
                *lj = best_index_int8(&KVALUES_IQ4NL, idl * v) as u8;
            }
            let ls = (ls + 32) as u8;
            y.scales_l[ib / 2] |= (ls & 0x0F) << (4 * (ib % 2));
            scales_h |= ((ls >> 4) as u16) << (2 * ib);
        }
        y.scales_h = scales_h.to_le_bytes();
        pack_nibbles(&l, &mut y.qs);
    }
}

/// Σ w·a: per super-block `d·d_a·Σ (ls − 32)·(T[q]·q8)`, the sum in integers
/// (ggml `ggml_vec_dot_iq4_xs_q8_K_generic` scales each sub-block in float; the integer
/// form is exact and the same up to f32 rounding).
pub fn vec_dot(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut isum = 0i32;
        for (ib, (qs, q8)) in x.qs.chunks_exact(16).zip(y.qs.chunks_exact(32)).enumerate() {
            let (alo, ahi) = q8.split_at(16);
            let mut sumi = 0i32;
            for ((&q, &a0), &a1) in qs.iter().zip(alo).zip(ahi) {
                sumi += a0 as i32 * KVALUES_IQ4NL[(q & 0x0F) as usize] as i32;
                sumi += a1 as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
            }
            isum += x.sub_scale(ib) * sumi;
        }
        sum += (x.d() * y.d) * isum as f32;
    }
    sum
}
