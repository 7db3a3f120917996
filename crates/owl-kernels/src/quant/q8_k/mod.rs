//! Q8_K: 256 elements, f32 scale, 8-bit quants and the sums of each 16 quants
//! (ggml `block_q8_K`).
//!
//! The activation format of the K-quants and IQ4_XS. Only used in memory (never in a
//! GGUF file), so unlike the weight blocks it keeps ggml's native `f32`/`i16` fields and
//! alignment 4; byte-level callers with unaligned bytes go through
//! [`crate::quant::vec_dot_scalar`], which copies.

#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::quant::util::nearest_int;
use crate::quant::QK_K;

/// ggml `block_q8_K`: 292 bytes, alignment 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    /// Scale (`x ≈ d·q`).
    pub d: f32,
    pub qs: [i8; QK_K],
    /// `bsums[j] = Σ qs[16j .. 16j+16]`: lets the K-quants apply their per-sub-block
    /// minimums without touching the quants again.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292 && std::mem::align_of::<BlockQ8K>() == 4);

/// `out[i] = d·q[i]`; `out.len() == blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ8K], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = b.d * q as f32;
        }
    }
}

/// ggml's `quantize_row_q8_K_ref`: `iscale = -127/max` where `max` is the element of
/// largest magnitude, `q = min(127, nearest_int(iscale·x))`, `d = 1/iscale`.
/// (ggml leaves `bsums` unwritten for an all-zero block; here they are zeroed.)
pub fn quantize(src: &[f32], out: &mut [BlockQ8K]) {
    debug_assert_eq!(src.len(), out.len() * QK_K);
    for (x, b) in src.chunks_exact(QK_K).zip(out.iter_mut()) {
        // ggml's loop here uses `ax > amax` (first maximum wins), as signed_abs_max does.
        let (max, amax) = crate::quant::util::signed_abs_max(x);
        if amax == 0.0 {
            b.d = 0.0;
            b.qs = [0; QK_K];
            b.bsums = [0; QK_K / 16];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

/// Σ w·a for a Q8_K row against Q8_K activations (the obvious integer kernel).
pub fn vec_dot(w: &[BlockQ8K], a: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for (&p, &q) in x.qs.iter().zip(&y.qs) {
            sumi += p as i32 * q as i32;
        }
        sum += sumi as f32 * (x.d * y.d);
    }
    sum
}
