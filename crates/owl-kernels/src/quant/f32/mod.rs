//! F32: plain little-endian floats (ggml `GGML_TYPE_F32`).
//!
//! Typed functions take `&[f32]`; the byte-level entry points in [`crate::quant`] also
//! accept unaligned bytes.

use crate::quant::util::dot_f64_lanes;

/// Copy; `out.len() == src.len()`.
pub fn dequantize(src: &[f32], out: &mut [f32]) {
    debug_assert_eq!(out.len(), src.len());
    let n = out.len().min(src.len());
    out[..n].copy_from_slice(&src[..n]);
}

/// Copy; `out.len() == src.len()`.
pub fn quantize(src: &[f32], out: &mut [f32]) {
    dequantize(src, out)
}

/// Σ w·a: products in f32, summed in f64 (as ggml's scalar `ggml_vec_dot_f32`).
pub fn vec_dot(w: &[f32], a: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    dot_f64_lanes(w, a, |x, y| x * y)
}

/// [`vec_dot`] over little-endian f32 bytes of any alignment (`w.len() == a.len()`,
/// multiples of 4).
pub fn vec_dot_bytes(w: &[u8], a: &[u8]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let n = w.len().min(a.len()) / 4 * 4;
    let (w, a): (&[[u8; 4]], &[[u8; 4]]) = (bytemuck::cast_slice(&w[..n]), bytemuck::cast_slice(&a[..n]));
    dot_f64_lanes(w, a, |x, y| f32::from_le_bytes(x) * f32::from_le_bytes(y))
}
