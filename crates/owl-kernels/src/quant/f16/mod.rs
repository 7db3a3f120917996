//! F16: IEEE half precision, one element per "block" (ggml `GGML_TYPE_F16`).
//!
//! Dot products: against F16 activations (ggml's `vec_dot_type`, [`vec_dot`]) and against
//! f32 activations ([`vec_dot_f32`], no activation rounding).

use crate::quant::util::{dot_f64_lanes, f16_to_f32, f32_to_f16};

/// One little-endian IEEE half; alignment 1 so mmapped bytes cast without checks.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockF16(pub [u8; 2]);

const _: () = assert!(std::mem::size_of::<BlockF16>() == 2 && std::mem::align_of::<BlockF16>() == 1);

impl BlockF16 {
    /// The value as f32 (exact).
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f16_to_f32(self.0)
    }

    /// `x` rounded to nearest even half.
    #[inline(always)]
    pub fn from_f32(x: f32) -> Self {
        Self(f32_to_f16(x))
    }
}

/// Widening to f32 (exact); `out.len() == blocks.len()`.
pub fn dequantize(blocks: &[BlockF16], out: &mut [f32]) {
    debug_assert_eq!(out.len(), blocks.len());
    for (y, b) in out.iter_mut().zip(blocks) {
        *y = b.to_f32();
    }
}

/// Round to nearest even half (numpy's `astype(float16)`, ggml's `GGML_FP32_TO_FP16`);
/// overflow gives ±inf, NaN stays NaN.
pub fn quantize(src: &[f32], out: &mut [BlockF16]) {
    debug_assert_eq!(src.len(), out.len());
    for (b, &x) in out.iter_mut().zip(src) {
        *b = BlockF16::from_f32(x);
    }
}

/// Σ w·a with F16 activations, as ggml's scalar `ggml_vec_dot_f16`: each product of two
/// halves is exact in f32; the sum is kept in f64.
pub fn vec_dot(w: &[BlockF16], a: &[BlockF16]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    dot_f64_lanes(w, a, |x, y| x.to_f32() * y.to_f32())
}

/// Σ w·a with f32 activations: weights widened exactly, products in f32, summed in f64 over 8 lanes
/// (as ggml's scalar `ggml_vec_dot_f32`).
pub fn vec_dot_f32(w: &[BlockF16], a: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    dot_f64_lanes(w, a, |x, y| x.to_f32() * y)
}
