//! Q3_K: super-blocks of 256 = 16 sub-blocks of 16, `x = d·(sc − 32)·q` with 3-bit signed
//! `q` in −4..=3 and 6-bit sub-block scales (ggml `block_q3_K`, 3.4375 bits/weight).
//!
//! Element `e = 128n + 32j + l` (`n < 2`, `j < 4`, `l < 32`): low two bits are bits
//! `2j..2j+2` of `qs[32n + l]`; the high bit is bit `4n + j` of `hmask[l]`, and a CLEAR
//! high bit means −4. Sub-block `e / 16`. The 16 6-bit scales pack into 12 bytes: low
//! nibbles in bytes 0..8 (sub-blocks 0..8 low nibble, 8..16 high nibble), the two high bits
//! of scale `j` at bits `2(j/4)` of byte `8 + j%4`. Dot product against [`BlockQ8K`].

#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::quant::q8_k::BlockQ8K;
use crate::quant::scale_search::make_q3_quants;
use crate::quant::util::{f16_to_f32, f32_to_f16, nearest_int};
use crate::quant::QK_K;

/// ggml `block_q3_K`: 110 bytes, alignment 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    /// High bits of the quants.
    pub hmask: [u8; QK_K / 8],
    /// Low two bits of the quants.
    pub qs: [u8; QK_K / 4],
    /// 16 six-bit scales, packed.
    pub scales: [u8; 12],
    /// Super-block scale, f16 little-endian.
    pub d: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110 && std::mem::align_of::<BlockQ3K>() == 1);

impl BlockQ3K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    /// The 16 sub-block scales, offset removed (−32..=31).
    #[inline]
    pub fn sub_scales(&self) -> [i8; QK_K / 16] {
        let s = &self.scales;
        let mut out = [0i8; QK_K / 16];
        for (j, dst) in out.iter_mut().enumerate() {
            let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
            let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            *dst = ((low | (high << 4)) as i8) - 32;
        }
        out
    }

    /// The 256 quants (−4..=3) in element order.
    #[inline]
    pub fn quants(&self) -> [i8; QK_K] {
        let mut q = [0i8; QK_K];
        for (n, (qn, bytes)) in q.chunks_exact_mut(128).zip(self.qs.chunks_exact(32)).enumerate() {
            for (j, qj) in qn.chunks_exact_mut(32).enumerate() {
                let m = 1u8 << (4 * n + j);
                for ((dst, &b), &h) in qj.iter_mut().zip(bytes).zip(&self.hmask) {
                    *dst = ((b >> (2 * j)) & 3) as i8 - if h & m != 0 { 0 } else { 4 };
                }
            }
        }
        q
    }
}

/// `out = d·(sc − 32)·q`; `out.len() == blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ3K], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d_all = b.d();
        let q = b.quants();
        for ((ys, qs), &sc) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&b.sub_scales()) {
            let dl = d_all * sc as f32;
            for (y, &q) in ys.iter_mut().zip(qs) {
                *y = dl * q as f32;
            }
        }
    }
}

/// ggml's `quantize_row_q3_K_ref`: per sub-block `make_q3_quants` (coordinate descent,
/// weights x²), scales quantized to 6 bits against the largest-magnitude one, then the
/// quants recomputed against the stored scales ([`pack_block`]).
pub fn quantize(src: &[f32], out: &mut [BlockQ3K]) {
    debug_assert_eq!(src.len(), out.len() * QK_K);
    for (x, y) in src.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for j in 0..QK_K / 16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        let mut ls = [0u8; QK_K / 16];
        let mut d = 0.0;
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (dst, &s) in ls.iter_mut().zip(&scales) {
                *dst = (nearest_int(iscale * s).clamp(-32, 31) + 32) as u8;
            }
            d = 1.0 / iscale;
        }
        pack_block(y, x, d, &ls, &mut l);
    }
}

/// The tail shared by ggml's `quantize_row_q3_K_ref` and `quantize_row_q3_K_impl`: stores
/// the super-block scale `d` and the 16 six-bit scales `ls` (offset 32 included), then
/// recomputes the quants against the stored values and packs them (`l` is scratch).
pub(crate) fn pack_block(y: &mut BlockQ3K, x: &[f32], d: f32, ls: &[u8; QK_K / 16], l: &mut [i8; QK_K]) {
    y.scales = [0; 12];
    for (j, &lv) in ls.iter().enumerate() {
        if j < 8 {
            y.scales[j] = lv & 0x0F;
        } else {
            y.scales[j - 8] |= (lv & 0x0F) << 4;
        }
        y.scales[j % 4 + 8] |= (lv >> 4) << (2 * (j / 4));
    }
    y.d = f32_to_f16(d);
    let d_all = y.d();
    for (j, &sc) in y.sub_scales().iter().enumerate() {
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    // High bit of element j goes to bit j/32 of hmask[j % 32].
    y.hmask = [0; QK_K / 8];
    for (j, lj) in l.iter_mut().enumerate() {
        if *lj > 3 {
            y.hmask[j % 32] |= 1 << (j / 32);
            *lj -= 4;
        }
    }
    for n in 0..2 {
        for i in 0..32 {
            let e = 128 * n + i;
            y.qs[32 * n + i] =
                (l[e] as u8) | ((l[e + 32] as u8) << 2) | ((l[e + 64] as u8) << 4) | ((l[e + 96] as u8) << 6);
        }
    }
}

/// Σ w·a: per super-block `d·d_a·Σ (sc − 32)·(q·q8)`, the sum in integers
/// (ggml `ggml_vec_dot_q3_K_q8_K_generic`).
pub fn vec_dot(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let q = x.quants();
        let mut isum = 0i32;
        for ((qs, q8), &sc) in q.chunks_exact(16).zip(y.qs.chunks_exact(16)).zip(&x.sub_scales()) {
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
