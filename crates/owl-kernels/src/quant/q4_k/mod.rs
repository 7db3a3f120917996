//! Q4_K: super-blocks of 256 = 8 sub-blocks of 32, `x = d·sc·q − dmin·m` with 4-bit `q`
//! and 6-bit sub-block scales and mins (ggml `block_q4_K`, 4.5 bits/weight).
//!
//! Element `e = 64j + 32h + l` (`j < 4`, `h < 2`, `l < 32`) is nibble `h` of
//! `qs[32j + l]`; its sub-block is `e / 32`. The 8 scales and 8 mins (6 bits each) pack
//! into 12 bytes as [`get_scale_min_k4`] reads them. Dot product against [`BlockQ8K`].

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
use crate::quant::scale_search::make_qkx2_quants;
use crate::quant::util::{f16_to_f32, f32_to_f16, nearest_int};
use crate::quant::QK_K;

/// Bytes of packed 6-bit scales and mins in Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// ggml `block_q4_K`: 144 bytes, alignment 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale for the scales, f16 little-endian.
    pub d: [u8; 2],
    /// Super-block scale for the mins, f16 little-endian.
    pub dmin: [u8; 2],
    /// 8 scales and 8 mins, 6 bits each.
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144 && std::mem::align_of::<BlockQ4K>() == 1);

/// Scale and min of sub-block `j < 8` from the 12 packed bytes (ggml `get_scale_min_k4`):
/// sub-blocks 0..4 use the low 6 bits of bytes `j` and `j + 4`; 4..8 take their low nibbles
/// from byte `j + 4` and their top two bits from the spare top bits of bytes `j − 4` / `j`.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Packs 8 six-bit scales and mins (each ≤ 63) the way [`get_scale_min_k4`] reads them.
#[inline]
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut s = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

impl BlockQ4K {
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

    /// The 256 4-bit quants in element order.
    #[inline]
    pub fn quants(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for (qj, bytes) in q.chunks_exact_mut(64).zip(self.qs.chunks_exact(32)) {
            let (lo, hi) = qj.split_at_mut(32);
            for ((l, h), &b) in lo.iter_mut().zip(hi).zip(bytes) {
                *l = b & 0x0F;
                *h = b >> 4;
            }
        }
        q
    }
}

/// `out = d·sc·q − dmin·m`; `out.len() == blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ4K], out: &mut [f32]) {
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

/// A quantized Q4_K / Q5_K super-block before its quants are packed: `(d, dmin, packed
/// scales and mins, quants in 0..=nmax)`.
pub(crate) type KSuperBlock = ([u8; 2], [u8; 2], [u8; K_SCALE_SIZE], [u8; QK_K]);

/// Shared by Q4_K and Q5_K (`quantize_row_q{4,5}_K_ref`): per sub-block of 32 the
/// `make_qkx2_quants` search (weights `rms(x) + |x|`), scales and mins quantized to 6
/// bits against their maxima, then quants recomputed against the stored values.
pub(crate) fn quantize_k_super_block(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> KSuperBlock {
    let mut l = [0u8; QK_K];
    let mut l_aux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; QK_K / 32];
    let mut scales = [0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) =
            make_qkx2_quants(nmax, xs, &weights, &mut l[32 * j..32 * j + 32], &mut l_aux, rmin, 0.1, nstep, false);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..QK_K / 32 {
        // ggml stores nearest_int into a uint8_t before MIN(63, ·): same truncation here.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    requantize_k_super_block(x, nmax, max_scale / 63.0, max_min / 63.0, &ls, &lm, l)
}

/// The tail shared by ggml's `quantize_row_q{4,5}_K_ref` and `quantize_row_q{4,5}_K_impl`:
/// packs the 6-bit scales `ls` and mins `lm`, rounds `d` and `dmin` to f16 and recomputes
/// the quants `l` (0..=nmax) against the stored values.
pub(crate) fn requantize_k_super_block(
    x: &[f32],
    nmax: i32,
    d: f32,
    dmin: f32,
    ls: &[u8; 8],
    lm: &[u8; 8],
    mut l: [u8; QK_K],
) -> KSuperBlock {
    let packed = pack_scale_min_k4(ls, lm);
    let (d, dmin) = (f32_to_f16(d), f32_to_f16(dmin));
    let (d_all, dmin_all) = (f16_to_f32(d), f16_to_f32(dmin));
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dj = d_all * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

/// ggml's `quantize_row_q4_K_ref` (search: 21 scales from (15 − 1)/range in steps of 0.1).
pub fn quantize(src: &[f32], out: &mut [BlockQ4K]) {
    debug_assert_eq!(src.len(), out.len() * QK_K);
    for (x, y) in src.chunks_exact(QK_K).zip(out.iter_mut()) {
        pack_block(y, &quantize_k_super_block(x, 15, -1.0, 20));
    }
}

/// Stores a quantized super-block (ggml `quantize_row_q4_K_ref` / `_impl`'s last loop).
pub(crate) fn pack_block(y: &mut BlockQ4K, (d, dmin, scales, l): &KSuperBlock) {
    y.d = *d;
    y.dmin = *dmin;
    y.scales = *scales;
    for (qs, lj) in y.qs.chunks_exact_mut(32).zip(l.chunks_exact(64)) {
        for (i, q) in qs.iter_mut().enumerate() {
            *q = lj[i] | (lj[i + 32] << 4);
        }
    }
}

/// Σ w·a: per super-block `d·d_a·Σ sc·(q·q8) − dmin·d_a·Σ m·bsum`, both sums in integers
/// (ggml `ggml_vec_dot_q4_K_q8_K_generic`).
pub fn vec_dot(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
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
