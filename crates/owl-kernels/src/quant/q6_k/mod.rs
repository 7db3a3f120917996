//! Q6_K: super-blocks of 256 = 16 sub-blocks of 16, `x = d·sc·(q − 32)` with 6-bit `q`
//! and signed 8-bit sub-block scales (ggml `block_q6_K`, 6.5625 bits/weight).
//!
//! Element `e = 128n + 32k + l` (`n < 2`, `k < 4`, `l < 32`): low nibble is nibble `k/2`
//! of `ql[64n + 32(k%2) + l]`, the top two bits are bits `2k..2k+2` of `qh[32n + l]`;
//! sub-block `e / 16`. Dot product against [`BlockQ8K`].

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

use crate::quant::q8_k::BlockQ8K;
use crate::quant::scale_search::{make_qx_quants, GROUP_MAX_EPS};
use crate::quant::util::{f16_to_f32, f32_to_f16, nearest_int};
use crate::quant::QK_K;

/// ggml `block_q6_K`: 210 bytes, alignment 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    /// Low four bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High two bits of the quants.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale, f16 little-endian.
    pub d: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210 && std::mem::align_of::<BlockQ6K>() == 1);

impl BlockQ6K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// The 256 quants (offset removed, −32..=31) in element order.
    #[inline]
    pub fn quants(&self) -> [i8; QK_K] {
        let mut q = [0i8; QK_K];
        for ((qn, ql), qh) in q.chunks_exact_mut(128).zip(self.ql.chunks_exact(64)).zip(self.qh.chunks_exact(32)) {
            for (k, qk) in qn.chunks_exact_mut(32).enumerate() {
                let low = &ql[32 * (k % 2)..32 * (k % 2) + 32];
                let shift = 4 * (k / 2);
                for ((dst, &lb), &hb) in qk.iter_mut().zip(low).zip(qh) {
                    *dst = (((lb >> shift) & 0x0F) | (((hb >> (2 * k)) & 3) << 4)) as i8 - 32;
                }
            }
        }
        q
    }
}

/// `out = d·sc·(q − 32)`; `out.len() == blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ6K], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d();
        let q = b.quants();
        for ((ys, qs), &sc) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&b.scales) {
            let dl = d * sc as f32;
            for (y, &q) in ys.iter_mut().zip(qs) {
                *y = dl * q as f32;
            }
        }
    }
}

/// ggml's `quantize_row_q6_K_ref`: per sub-block `make_qx_quants` (nmax 32, weights x²,
/// 18-scale search), scales quantized to 8 bits against the largest-magnitude one, quants
/// recomputed against the stored scales.
pub fn quantize(src: &[f32], out: &mut [BlockQ6K]) {
    debug_assert_eq!(src.len(), out.len() * QK_K);
    quantize_with(src, out, None);
}

/// ggml's `quantize_row_q6_K_ref` (`qw` `None`) and `quantize_row_q6_K_impl` with
/// importance `qw` (`quant_weights`, one per element): the importance itself (no σ² term)
/// replaces `make_qx_quants`' x² weights; the rest is the same.
pub(crate) fn quantize_with(src: &[f32], out: &mut [BlockQ6K], qw: Option<&[f32]>) {
    for (ibl, (x, y)) in src.chunks_exact(QK_K).zip(out.iter_mut()).enumerate() {
        let qw = qw.map(|qw| &qw[QK_K * ibl..QK_K * ibl + QK_K]);
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for (ib, s) in scales.iter_mut().enumerate() {
            let r = 16 * ib..16 * ib + 16;
            *s = make_qx_quants(32, &x[r.clone()], &mut l[r.clone()], 1, qw.map(|qw| &qw[r]));
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = *s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *y = bytemuck::Zeroable::zeroed();
            continue;
        }
        let iscale = -128.0 / max_scale;
        y.d = f32_to_f16(1.0 / iscale);
        for (dst, &s) in y.scales.iter_mut().zip(&scales) {
            *dst = nearest_int(iscale * s).min(127) as i8;
        }
        let d_all = y.d();
        for j in 0..QK_K / 16 {
            let d = d_all * y.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for (n, (ql, qh)) in y.ql.chunks_exact_mut(64).zip(y.qh.chunks_exact_mut(32)).enumerate() {
            let ln = &l[128 * n..128 * n + 128];
            for i in 0..32 {
                let (q1, q2, q3, q4) = (ln[i] as u8, ln[i + 32] as u8, ln[i + 64] as u8, ln[i + 96] as u8);
                ql[i] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
                ql[i + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
                qh[i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

/// Σ w·a: per super-block `d·d_a·Σ sc·((q − 32)·q8)`, the sum in integers
/// (ggml `ggml_vec_dot_q6_K_q8_K_generic`).
pub fn vec_dot(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let q = x.quants();
        let mut isum = 0i32;
        for ((qs, q8), &sc) in q.chunks_exact(16).zip(y.qs.chunks_exact(16)).zip(&x.scales) {
            let mut isuml = 0i32;
            for (&q, &a) in qs.iter().zip(q8) {
                isuml += q as i32 * a as i32;
            }
            isum += sc as i32 * isuml;
        }
        sum += (x.d() * y.d) * isum as f32;
    }
    sum
}
