//! Shared helpers of the SIMD-vs-scalar tests: the AVX2 guard, random blocks with extreme
//! scales, activation rows of varied magnitude, and the Σ|w·a| magnitude that tolerances are
//! stated against.

use owl_kernels::quant::{f32_to_f16, BlockFormat};

use crate::quant_common::Rng;

/// True when the AVX2 kernels can run here. A CPU without avx2/fma/f16c FAILS the calling
/// test — a non-AVX2 CI must be loud, not silently green — unless `OWL_ALLOW_NO_AVX2=1`
/// says that is expected (then the test returns early and passes).
pub fn avx2_available() -> bool {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
        return true;
    }
    if std::env::var("OWL_ALLOW_NO_AVX2").as_deref() == Ok("1") {
        eprintln!("CPU lacks avx2/fma/f16c; AVX2 kernels not tested (OWL_ALLOW_NO_AVX2=1)");
        return false;
    }
    panic!("this CPU lacks avx2, fma or f16c, so the AVX2 kernels cannot be tested; set OWL_ALLOW_NO_AVX2=1 to accept that");
}

/// Bytes reinterpreted as blocks of a plain-old-data block type (alignment 1 or copied).
pub fn blocks_from_bytes<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    assert_eq!(bytes.len() % std::mem::size_of::<T>(), 0, "not a whole number of blocks");
    bytes.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect()
}

/// Uniformly random bytes: every quant value and every sub-block scale code appears.
pub fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A random f16 scale: mostly ordinary magnitudes of either sign, sometimes an extreme one
/// (largest finite half, smallest normal and subnormal halves, zero).
pub fn random_scale(rng: &mut Rng) -> [u8; 2] {
    let r = rng.next_u64();
    let sign: f32 = if r & 1 == 0 { 1.0 } else { -1.0 };
    match (r >> 1) % 16 {
        0 => f32_to_f16(sign * 65504.0),
        1 => f32_to_f16(sign * 6.103_515_6e-5), // smallest normal half
        2 => f32_to_f16(sign * 5.960_464_5e-8), // smallest subnormal half
        3 => f32_to_f16(0.0),
        4 => f32_to_f16(sign * 1000.0),
        _ => f32_to_f16(sign * 10f64.powf(-3.0 + 3.0 * rng.uniform()) as f32),
    }
}

/// `n` activations in blocks of `block` elements whose magnitudes vary from block to block
/// (1e-3 .. 1e3, some all-zero blocks, some with single spikes), so activation scales range
/// widely and quants hit ±127.
pub fn activation_row(rng: &mut Rng, n: usize, block: usize) -> Vec<f32> {
    let mut x = rng.gaussian_row(n, 1.0);
    for b in x.chunks_mut(block) {
        let r = rng.next_u64() % 8;
        let scale = match r {
            0 => 0.0,
            1 => 1e-3,
            2 => 1e3,
            _ => 10f64.powf(-1.0 + 2.0 * rng.uniform()) as f32,
        };
        for v in b.iter_mut() {
            *v *= scale;
        }
        if r == 3 {
            let i = (rng.next_u64() % b.len() as u64) as usize;
            b[i] = -b[i].abs() * 50.0 - 1.0;
        }
    }
    x
}

/// Σ|w_i·a_i| in f64 of two dequantized rows: the magnitude float-reassociation errors scale
/// with (a tolerance relative to the result itself would be meaningless under cancellation).
pub fn abs_dot(w: &[f32], a: &[f32]) -> f64 {
    assert_eq!(w.len(), a.len());
    w.iter().zip(a).map(|(&p, &q)| (p as f64 * q as f64).abs()).sum()
}

/// Dequantizes a row of `format` bytes.
pub fn dequant(format: BlockFormat, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    owl_kernels::quant::dequantize_row(format, bytes, &mut y).expect("dequantize");
    y
}

/// Plain-old-data blocks as bytes.
pub fn as_bytes<T: bytemuck::Pod>(blocks: &[T]) -> &[u8] {
    bytemuck::cast_slice(blocks)
}
