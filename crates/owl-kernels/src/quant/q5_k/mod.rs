//! Q5_K: super-blocks of 256 = 8 sub-blocks of 32, `x = d·sc·q − dmin·m` with 5-bit `q`
//! and 6-bit sub-block scales and mins (ggml `block_q5_K`, 5.5 bits/weight).
//!
//! Low nibbles as Q4_K (element `e = 64j + 32h + l` is nibble `h` of `qs[32j + l]`); the
//! fifth bit is bit `2j + h` of `qh[l]`. Scales and mins pack as in Q4_K
//! ([`get_scale_min_k4`]). Dot product against [`BlockQ8K`].

#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::quant::q4_k::{get_scale_min_k4, quantize_k_super_block, KSuperBlock, K_SCALE_SIZE};
use crate::quant::q8_k::BlockQ8K;
use crate::quant::util::f16_to_f32;
use crate::quant::QK_K;

/// ggml `block_q5_K`: 176 bytes, alignment 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale for the scales, f16 little-endian.
    pub d: [u8; 2],
    /// Super-block scale for the mins, f16 little-endian.
    pub dmin: [u8; 2],
    /// 8 scales and 8 mins, 6 bits each.
    pub scales: [u8; K_SCALE_SIZE],
    /// Fifth bits.
    pub qh: [u8; QK_K / 8],
    /// Low four bits.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176 && std::mem::align_of::<BlockQ5K>() == 1);

impl BlockQ5K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_to_f32(self.dmin)
    }

    /// Scale and min of sub-block `j < 8`.
    #[inline(always)]
    pub fn scale_min(&self, j: usize) -> (u8, u8) {
        get_scale_min_k4(j, &self.scales)
    }

    /// The 256 5-bit quants in element order.
    #[inline]
    pub fn quants(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for (j, (qj, bytes)) in q.chunks_exact_mut(64).zip(self.qs.chunks_exact(32)).enumerate() {
            let (m1, m2) = (1u8 << (2 * j), 2u8 << (2 * j));
            let (lo, hi) = qj.split_at_mut(32);
            for (((l, h), &b), &qh) in lo.iter_mut().zip(hi).zip(bytes).zip(&self.qh) {
                *l = (b & 0x0F) + if qh & m1 != 0 { 16 } else { 0 };
                *h = (b >> 4) + if qh & m2 != 0 { 16 } else { 0 };
            }
        }
        q
    }
}

/// `out = d·sc·q − dmin·m`; `out.len() == blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ5K], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let (d, min) = (b.d(), b.dmin());
        let q = b.quants();
        for (j, (ys, qs)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
            let (sc, m) = b.scale_min(j);
            let d1 = d * sc as f32;
            let m1 = min * m as f32;
            for (y, &q) in ys.iter_mut().zip(qs) {
                *y = d1 * q as f32 - m1;
            }
        }
    }
}

/// ggml's `quantize_row_q5_K_ref` (search: 16 scales from (31 − 0.5)/range in steps of 0.1).
pub fn quantize(src: &[f32], out: &mut [BlockQ5K]) {
    debug_assert_eq!(src.len(), out.len() * QK_K);
    for (x, y) in src.chunks_exact(QK_K).zip(out.iter_mut()) {
        pack_block(y, &quantize_k_super_block(x, 31, -0.5, 15));
    }
}

/// Stores a quantized super-block (ggml `quantize_row_q5_K_ref` / `_impl`'s last loop):
/// low nibbles in `qs`, fifth bits in `qh`.
pub(crate) fn pack_block(y: &mut BlockQ5K, (d, dmin, scales, l): &KSuperBlock) {
    y.d = *d;
    y.dmin = *dmin;
    y.scales = *scales;
    y.qh = [0; QK_K / 8];
    for (j, (qs, lj)) in y.qs.chunks_exact_mut(32).zip(l.chunks_exact(64)).enumerate() {
        let (m1, m2) = (1u8 << (2 * j), 2u8 << (2 * j));
        for (i, q) in qs.iter_mut().enumerate() {
            let (mut l1, mut l2) = (lj[i], lj[i + 32]);
            if l1 > 15 {
                l1 -= 16;
                y.qh[i] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                y.qh[i] |= m2;
            }
            *q = l1 | (l2 << 4);
        }
    }
}

/// Σ w·a: per super-block `d·d_a·Σ sc·(q·q8) − dmin·d_a·Σ m·bsum`, both sums in integers
/// (ggml `ggml_vec_dot_q5_K_q8_K_generic`).
pub fn vec_dot(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let q = x.quants();
        let (mut isum, mut summs) = (0i32, 0i32);
        for (j, (qs, q8)) in q.chunks_exact(32).zip(y.qs.chunks_exact(32)).enumerate() {
            let (sc, m) = x.scale_min(j);
            let mut isuml = 0i32;
            for (&q, &a) in qs.iter().zip(q8) {
                isuml += q as i32 * a as i32;
            }
            isum += sc as i32 * isuml;
            summs += m as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
        }
        sum += (x.d() * y.d) * isum as f32 - (x.dmin() * y.d) * summs as f32;
    }
    sum
}
