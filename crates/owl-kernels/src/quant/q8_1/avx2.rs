//! Q8_1 with AVX2 + FMA + F16C: the activation quantizer of Q4_1 and Q5_1 weights.
//!
//! For the dispatch table (`# Safety` = the CPU has avx2, fma and f16c):
//! - `quantize(src: &[f32], out: &mut [BlockQ8_1])` — bit-identical to the scalar
//!   [`super::quantize`] for every input (ties, NaN, ±inf, subnormals included): the quants
//!   come from the same core as Q8_0's, `s = f16(Σq · d)` from their exact integer sum.
//!
//! No Q8_1·Q8_1 dot product here: no GGUF stores Q8_1 weights (the scalar one exists for
//! completeness of `vec_dot_scalar`).

// Needed on the MSRV (1.85), redundant from 1.87 on: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::{BlockQ8_1, QK8_1};
use crate::quant::q8_0::avx2::quantize_block;
use crate::quant::simd_x86::{f32_to_f16, hsum_i32x8, load_f32x8_at, pack_i32_to_i8, store_i8x32};

/// Quantizes f32 activations to Q8_1 exactly as the scalar [`super::quantize`] does.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize(src: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(src.len(), out.len() * QK8_1);
    for (x, b) in src.chunks_exact(QK8_1).zip(out.iter_mut()) {
        // SAFETY: features guaranteed by the caller; `x` is 32 floats long.
        unsafe {
            let v = [load_f32x8_at(x, 0), load_f32x8_at(x, 8), load_f32x8_at(x, 16), load_f32x8_at(x, 24)];
            let (d, q) = quantize_block(&v);
            b.d = f32_to_f16(d);
            let sum = hsum_i32x8(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
            b.s = f32_to_f16(sum as f32 * d);
            store_i8x32(&mut b.qs, pack_i32_to_i8(q[0], q[1], q[2], q[3]));
        }
    }
}
