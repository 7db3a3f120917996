//! Q2_K: super-blocks of 256 = 16 sub-blocks of 16, `x = d·sc·q − dmin·m` with 2-bit
//! `q` and 4-bit sub-block scale `sc` and min `m` (ggml `block_q2_K`, 2.625 bits/weight).
//!
//! Element `e = 128n + 32j + l` (`n < 2`, `j < 4`, `l < 32`) is bits `2j..2j+2` of
//! `qs[32n + l]`; its sub-block is `e / 16` (`scales[e/16]`: low nibble scale, high
//! nibble min). Dot product against [`BlockQ8K`].

#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::quant::q8_k::BlockQ8K;
use crate::quant::scale_search::make_qkx2_quants;
use crate::quant::util::{f16_to_f32, f32_to_f16, nearest_int};
use crate::quant::QK_K;

/// ggml `block_q2_K`: 84 bytes, alignment 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    /// Per sub-block: scale (low nibble) and min (high nibble).
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    /// Super-block scale for the scales, f16 little-endian.
    pub d: [u8; 2],
    /// Super-block scale for the mins, f16 little-endian.
    pub dmin: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84 && std::mem::align_of::<BlockQ2K>() == 1);

impl BlockQ2K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_to_f32(self.dmin)
    }

    /// The 256 2-bit quants in element order.
    #[inline]
    pub fn quants(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for (qn, bytes) in q.chunks_exact_mut(128).zip(self.qs.chunks_exact(32)) {
            for (j, qj) in qn.chunks_exact_mut(32).enumerate() {
                for (dst, &b) in qj.iter_mut().zip(bytes) {
                    *dst = (b >> (2 * j)) & 3;
                }
            }
        }
        q
    }
}

/// `out = d·sc·q − dmin·m`; `out.len() == blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ2K], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let (d, min) = (b.d(), b.dmin());
        let q = b.quants();
        for ((ys, qs), &sc) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&b.scales) {
            let dl = d * (sc & 0x0F) as f32;
            let ml = min * (sc >> 4) as f32;
            for (y, &q) in ys.iter_mut().zip(qs) {
                *y = dl * q as f32 - ml;
            }
        }
    }
}

/// ggml's `quantize_row_q2_K_ref`: per sub-block `make_qkx2_quants` (3 levels, weights
/// |x|, absolute-error criterion), scales and mins quantized to 4 bits against their
/// maxima, then the quants recomputed against the stored scales ([`pack_quants`]).
pub fn quantize(src: &[f32], out: &mut [BlockQ2K]) {
    debug_assert_eq!(src.len(), out.len() * QK_K);
    const Q4SCALE: f32 = 15.0;
    for (x, y) in src.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut l = [0u8; QK_K];
        let mut l_aux = [0u8; 16];
        let mut weights = [0f32; 16];
        let mut mins = [0f32; QK_K / 16];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (scale, min) =
                make_qkx2_quants(3, xs, &weights, &mut l[16 * j..16 * j + 16], &mut l_aux, -0.5, 0.1, 15, true);
            scales[j] = scale;
            mins[j] = min;
            if scale > max_scale {
                max_scale = scale;
            }
            if min > max_min {
                max_min = min;
            }
        }
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (dst, &s) in y.scales.iter_mut().zip(&scales) {
                *dst = nearest_int(iscale * s) as u8;
            }
            y.d = f32_to_f16(max_scale / Q4SCALE);
        } else {
            y.scales = [0; QK_K / 16];
            y.d = f32_to_f16(0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (dst, &m) in y.scales.iter_mut().zip(&mins) {
                *dst |= (nearest_int(iscale * m) << 4) as u8;
            }
            y.dmin = f32_to_f16(max_min / Q4SCALE);
        } else {
            y.dmin = f32_to_f16(0.0);
        }
        pack_quants(y, x, &mut l);
    }
}

/// The tail shared by ggml's `quantize_row_q2_K_ref` and `quantize_row_q2_K_impl`: with
/// `d`, `dmin` and the 4-bit scales and mins of `y` stored, recomputes the quants against
/// the stored values and packs them (`l` is scratch).
pub(crate) fn pack_quants(y: &mut BlockQ2K, x: &[f32], l: &mut [u8; QK_K]) {
    let (d_all, dmin_all) = (y.d(), y.dmin());
    for j in 0..QK_K / 16 {
        let d = d_all * (y.scales[j] & 0x0F) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * (y.scales[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
    for n in 0..2 {
        for i in 0..32 {
            let e = 128 * n + i;
            y.qs[32 * n + i] = l[e] | (l[e + 32] << 2) | (l[e + 64] << 4) | (l[e + 96] << 6);
        }
    }
}

/// Σ w·a: per super-block `d_a·d·Σ sc·(q·q8) − d_a·dmin·Σ m·bsum` with both sums in
/// integers (ggml `ggml_vec_dot_q2_K_q8_K_generic`).
pub fn vec_dot(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut summs = 0i32;
        for (&bs, &sc) in y.bsums.iter().zip(&x.scales) {
            summs += bs as i32 * (sc >> 4) as i32;
        }
        let q = x.quants();
        let mut isum = 0i32;
        for ((qs, q8), &sc) in q.chunks_exact(16).zip(y.qs.chunks_exact(16)).zip(&x.scales) {
            let mut isuml = 0i32;
            for (&q, &a) in qs.iter().zip(q8) {
                isuml += q as i32 * a as i32;
            }
            isum += (sc & 0x0F) as i32 * isuml;
        }
        let dall = y.d * x.d();
        let dmin = y.d * x.dmin();
        sum += dall * isum as f32 - dmin * summs as f32;
    }
    sum
}
