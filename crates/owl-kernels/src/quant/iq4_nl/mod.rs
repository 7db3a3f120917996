//! IQ4_NL: 32 elements, one f16 scale, `x = d·T[q]` with 4-bit `q` indexing the
//! non-linear table [`KVALUES_IQ4NL`] (ggml `block_iq4_nl`).
//!
//! Nibble order as Q4_0 (byte `j`: element `j` low, `j + 16` high). Dot product against
//! [`BlockQ8_0`].

#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::quant::q8_0::BlockQ8_0;
use crate::quant::scale_search::{best_index_int8, GROUP_MAX_EPS};
use crate::quant::util::{f16_to_f32, f32_to_f16};
use crate::quant::weighted::{fill_weights, sum_squares};

/// Elements per block.
pub const QK4_NL: usize = 32;

/// The 16 levels of IQ4_NL and IQ4_XS (ggml `kvalues_iq4nl`), ascending.
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// ggml `block_iq4_nl`: 18 bytes, alignment 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ4NL {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    pub qs: [u8; QK4_NL / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIQ4NL>() == 18 && std::mem::align_of::<BlockIQ4NL>() == 1);

impl BlockIQ4NL {
    /// The scale as f32.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

/// `out = d·T[q]`; `out.len() == blocks.len() * 32`.
pub fn dequantize(blocks: &[BlockIQ4NL], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK4_NL);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK4_NL)) {
        let d = b.d();
        let (lo, hi) = y.split_at_mut(QK4_NL / 2);
        for ((&q, y0), y1) in b.qs.iter().zip(lo).zip(hi) {
            *y0 = d * KVALUES_IQ4NL[(q & 0x0F) as usize] as f32;
            *y1 = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    }
}

/// ggml's `quantize_iq4_nl` without importance weights (`quantize_row_iq4_nl_impl` with
/// `ntry = 7`, what llama-quantize runs): per block the weighted (x²) least-squares scale
/// for the nearest table levels, refined over 15 trial scales.
pub fn quantize(src: &[f32], out: &mut [BlockIQ4NL]) {
    debug_assert_eq!(src.len(), out.len() * QK4_NL);
    quantize_with(src, out, None);
}

/// ggml's `quantize_iq4_nl` (`quantize_row_iq4_nl_impl`, super-block 32, `ntry = 7`)
/// with importance `qw` (`quant_weights`, one per element) or without (`None`, weights
/// x²): per block σ² = 2·Σx²/32 and the weighted search of [`best_block_scale`], then the
/// levels recomputed against the unrounded best scale.
pub(crate) fn quantize_with(src: &[f32], out: &mut [BlockIQ4NL], qw: Option<&[f32]>) {
    let mut weight = [0f32; QK4_NL];
    let mut l = [0u8; QK4_NL];
    for (ib, (xb, y)) in src.chunks_exact(QK4_NL).zip(out.iter_mut()).enumerate() {
        let qb = qw.map(|qw| &qw[QK4_NL * ib..QK4_NL * ib + QK4_NL]);
        let sigma2 = if qb.is_some() { sum_squares(xb) * (2.0 / QK4_NL as f32) } else { 0.0 };
        block_weights(&mut weight, xb, qb, sigma2);
        let d = best_block_scale(xb, &weight, &mut l, 7);
        y.d = f32_to_f16(d);
        // A single block: the levels are recomputed against the (unrounded) best scale.
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (lj, &v) in l.iter_mut().zip(xb) {
            *lj = best_index_int8(&KVALUES_IQ4NL, id * v) as u8;
        }
        pack_nibbles(&l, &mut y.qs);
    }
}

/// Byte `j` of each 16-byte group gets level `32i + j` low and `32i + 16 + j` high.
pub(crate) fn pack_nibbles(l: &[u8], qs: &mut [u8]) {
    for (q16, l32) in qs.chunks_exact_mut(16).zip(l.chunks_exact(32)) {
        for (j, q) in q16.iter_mut().enumerate() {
            *q = l32[j] | (l32[16 + j] << 4);
        }
    }
}

/// The weights of one block of 32 in `quantize_row_iq4_nl_impl`: `qw[j]·sqrt(σ² + x[j]²)`
/// with importance `qw`, else `x[j]²`.
#[inline]
pub(crate) fn block_weights(weight: &mut [f32], xb: &[f32], qw: Option<&[f32]>, sigma2: f32) {
    match qw {
        Some(qw) => fill_weights(weight, qw, xb, sigma2),
        None => {
            for (w, &v) in weight.iter_mut().zip(xb) {
                *w = v * v;
            }
        }
    }
}

/// The per-block search of ggml's `quantize_row_iq4_nl_impl` for a block of 32 with
/// weights `weight` ([`block_weights`]): fills `l` with table indices and returns the
/// scale, 0 for an all-zero block (`l` then untouched). `ntry > 0` also tries scales
/// `(itry + T[0])/max`, `|itry| ≤ ntry`.
pub(crate) fn best_block_scale(xb: &[f32], weight: &[f32], l: &mut [u8], ntry: i32) -> f32 {
    let values = &KVALUES_IQ4NL;
    let (max, amax) = crate::quant::util::signed_abs_max(xb);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let mut d = if ntry > 0 { -max / values[0] as f32 } else { max / values[0] as f32 };
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for ((lj, &v), &w) in l.iter_mut().zip(xb).zip(weight) {
        let idx = best_index_int8(values, id * v);
        *lj = idx as u8;
        let q = values[idx] as f32;
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -ntry..=ntry {
        id = (itry as f32 + values[0] as f32) / max;
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for (&v, &w) in xb.iter().zip(weight) {
            let q = values[best_index_int8(values, id * v)] as f32;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Σ w·a: per block the integer sum of T[q]·q8, times both scales
/// (ggml `ggml_vec_dot_iq4_nl_q8_0_generic`).
pub fn vec_dot(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let d = y.d() * x.d();
        let (ylo, yhi) = y.qs.split_at(QK4_NL / 2);
        let mut sumi = 0i32;
        for ((&q, &a0), &a1) in x.qs.iter().zip(ylo).zip(yhi) {
            sumi += a0 as i32 * KVALUES_IQ4NL[(q & 0x0F) as usize] as i32;
            sumi += a1 as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
        }
        sum += d * sumi as f32;
    }
    sum
}
