//! BF16: bfloat16 (the top half of an f32), one element per "block" (ggml `GGML_TYPE_BF16`).
//!
//! Dot products: against BF16 activations (ggml's `vec_dot_type`, [`vec_dot`]) and
//! against f32 activations ([`vec_dot_f32`]).

use crate::quant::util::dot_f64_lanes;

/// One little-endian bfloat16; alignment 1 so mmapped bytes cast without checks.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockBF16(pub [u8; 2]);

const _: () = assert!(std::mem::size_of::<BlockBF16>() == 2 && std::mem::align_of::<BlockBF16>() == 1);

impl BlockBF16 {
    /// The value as f32 (exact: the bits become the top half of the f32).
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f32::from_bits((u16::from_le_bytes(self.0) as u32) << 16)
    }

    /// ggml's `ggml_compute_fp32_to_bf16` (and gguf-py's): round to nearest even; NaN is
    /// kept and made quiet.
    #[inline(always)]
    pub fn from_f32(x: f32) -> Self {
        let u = x.to_bits();
        let h = if (u & 0x7fff_ffff) > 0x7f80_0000 {
            (u >> 16) | 64
        } else {
            ((u as u64 + 0x7fff + ((u as u64 >> 16) & 1)) >> 16) as u32
        };
        Self((h as u16).to_le_bytes())
    }
}

/// Widening to f32 (exact); `out.len() == blocks.len()`.
pub fn dequantize(blocks: &[BlockBF16], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len());
    for (y, b) in out.iter_mut().zip(blocks) {
        *y = b.to_f32();
    }
}

/// Round to nearest even bfloat16 ([`BlockBF16::from_f32`]).
pub fn quantize(src: &[f32], out: &mut [BlockBF16]) {
    debug_assert_eq!(src.len(), out.len());
    for (b, &x) in out.iter_mut().zip(src) {
        *b = BlockBF16::from_f32(x);
    }
}

/// Σ w·a with BF16 activations, as ggml's scalar `ggml_vec_dot_bf16`: products in f32
/// (exact for two bfloat16s), sum in f64.
pub fn vec_dot(w: &[BlockBF16], a: &[BlockBF16]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    dot_f64_lanes(w, a, |x, y| x.to_f32() * y.to_f32())
}

/// Σ w·a with f32 activations: weights widened exactly, products in f32, summed in f64 over 8 lanes.
pub fn vec_dot_f32(w: &[BlockBF16], a: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    dot_f64_lanes(w, a, |x, y| x.to_f32() * y)
}
