//! Importance-weighted quantization: the row quantizers llama-quantize uses when an
//! importance matrix (`--imatrix`) is given. Each column's squared error is weighted by
//! its mean squared activation over a calibration text, so the scale search favours the
//! columns the model actually reads.
//!
//! These are ggml's `quantize_row_*_impl` / `quantize_iq4_*` with `quant_weights` given
//! (`ggml-quants.c`), in the same f32 arithmetic and evaluation order, so the bytes equal
//! llama.cpp's (built without fused multiply-adds). Most of them weight element `j` by
//! `imp[j]·sqrt(σ² + x[j]²)`, `σ²` a mean square of the row or super-block; Q6_K uses the
//! importance as is. Q8_0 has no weighted variant in ggml (the reference is used).
//!
//! Where ggml's weighted and reference quantizers are one algorithm up to the weights
//! (Q6_K, IQ4_NL, IQ4_XS), both are the format module's `quantize_with`; elsewhere the
//! searches here end in the format module's packing (`pack_*`, `requantize_k_super_block`).
//!
//! Everything is per block on the stack: no allocation.

use super::q2_k::BlockQ2K;
use super::q3_k::BlockQ3K;
use super::q4_0::{BlockQ4_0, QK4_0};
use super::q4_1::{BlockQ4_1, QK4_1};
use super::q4_k::{requantize_k_super_block, BlockQ4K, KSuperBlock};
use super::q5_0::{BlockQ5_0, QK5_0};
use super::q5_1::{BlockQ5_1, QK5_1};
use super::q5_k::BlockQ5K;
use super::row::{check_quantize_destination, quantize_row};
use super::scale_search::{make_qkx3_quants, make_qp_quants, make_qx_quants};
use super::util::f32_to_f16;
use super::{iq4_nl, iq4_xs, q2_k, q3_k, q4_k, q5_k, q6_k, BlockFormat, QK_K};
use crate::KernelError;

/// Quantizes one row with per-column importance `importance` (one non-negative value per
/// element of `src`), as llama-quantize does with `--imatrix`. Formats without a weighted
/// quantizer in ggml (F32, F16, BF16, Q8_0, Q8_1, Q8_K) use the reference one.
///
/// Errors: as [`quantize_row`], or `importance.len() != src.len()`.
pub fn quantize_row_weighted(
    format: BlockFormat,
    src: &[f32],
    dst: &mut [u8],
    importance: &[f32],
) -> Result<(), KernelError> {
    if importance.len() != src.len() {
        return Err(KernelError::Length {
            what: "quantize_row_weighted importance",
            expected: src.len(),
            got: importance.len(),
            unit: "values",
        });
    }
    check_quantize_destination(format, src.len(), dst.len(), "quantize_row_weighted destination")?;
    let (x, qw) = (src, importance);
    match format {
        BlockFormat::Q4_0 => quantize_q4_0(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::Q4_1 => quantize_q4_1(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::Q5_0 => quantize_q5_0(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::Q5_1 => quantize_q5_1(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::Q2_K => quantize_q2_k(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::Q3_K => quantize_q3_k(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::Q4_K => quantize_q4_k(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::Q5_K => quantize_q5_k(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::Q6_K => q6_k::quantize_with(x, bytemuck::cast_slice_mut(dst), Some(qw)),
        BlockFormat::IQ4_NL => iq4_nl::quantize_with(x, bytemuck::cast_slice_mut(dst), Some(qw)),
        BlockFormat::IQ4_XS => iq4_xs::quantize_with(x, bytemuck::cast_slice_mut(dst), Some(qw)),
        BlockFormat::F32
        | BlockFormat::F16
        | BlockFormat::BF16
        | BlockFormat::Q8_0
        | BlockFormat::Q8_1
        | BlockFormat::Q8_K => return quantize_row(format, src, dst),
    }
    Ok(())
}

/// Σ x² in element order (f32, as ggml's loops).
#[inline]
pub(crate) fn sum_squares(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// `weight[j] = qw[j]·sqrt(σ² + x[j]²)`.
#[inline]
pub(crate) fn fill_weights(weight: &mut [f32], qw: &[f32], x: &[f32], sigma2: f32) {
    for ((w, &q), &v) in weight.iter_mut().zip(qw).zip(x) {
        *w = q * (sigma2 + v * v).sqrt();
    }
}

/// Σ weight in order, from 0.
#[inline]
fn sum(w: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in w {
        s += v;
    }
    s
}

/// The low nibbles of 32 quants in Q4_0 order (byte `j`: element `j` low, `j + 16` high).
#[inline]
fn low_nibbles_32(l: &[u8; 32]) -> [u8; 16] {
    let mut qs = [0u8; 16];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = (l[j] & 0x0F) | ((l[j + 16] & 0x0F) << 4);
    }
    qs
}

/// The 5th bits of 32 quants (`l[j]` bit 4 → bit `j`), as Q5_0/Q5_1 store them.
#[inline]
fn high_bits_32(l: &[u8; 32]) -> [u8; 4] {
    let mut qh = 0u32;
    for j in 0..16 {
        qh |= (((l[j] & 0x10) as u32) >> 4) << j;
        qh |= (((l[j + 16] & 0x10) as u32) >> 4) << (j + 16);
    }
    qh.to_le_bytes()
}

/// The loop of ggml's `quantize_row_q{4,5}_{0,1}_impl`: σ² = Σx²/n over the row, then per
/// block of 32 `block(y, x, weights)` with the weights `qw·sqrt(σ² + x²)`.
fn for_each_weighted_block<T>(x: &[f32], qw: &[f32], out: &mut [T], mut block: impl FnMut(&mut T, &[f32], &[f32; 32])) {
    let sigma2 = sum_squares(x) / x.len() as f32;
    let mut weight = [0f32; 32];
    for ((xb, qb), y) in x.chunks_exact(32).zip(qw.chunks_exact(32)).zip(out.iter_mut()) {
        fill_weights(&mut weight, qb, xb, sigma2);
        block(y, xb, &weight);
    }
}

/// The block search of `quantize_row_q{4,5}_0_impl`: `make_qx_quants` with the weights;
/// returns the scale as f16 and the quants (0..2·nmax) in `l`.
fn qx_block(nmax: i32, xb: &[f32], weight: &[f32; 32], l: &mut [u8; 32]) -> [u8; 2] {
    let mut li = [0i8; 32];
    let d = make_qx_quants(nmax, xb, &mut li, 1, Some(weight));
    *l = li.map(|v| v as u8);
    f32_to_f16(d)
}

/// The block search of `quantize_row_q{4,5}_1_impl`: `make_qkx3_quants` (37 scales from
/// (nmax − 0.9)/range in steps of 0.05); returns `(d, m)` as f16 and the quants in `l`.
fn qkx3_block(nmax: i32, xb: &[f32], weight: &[f32; 32], l: &mut [u8; 32]) -> ([u8; 2], [u8; 2]) {
    let mut l_aux = [0u8; 32];
    let (d, min) = make_qkx3_quants(nmax, xb, weight, l, &mut l_aux, -0.9, 0.05, 36, false);
    (f32_to_f16(d), f32_to_f16(-min))
}

/// ggml `quantize_row_q4_0_impl`: per block `make_qx_quants` (nmax 8) with the weights.
fn quantize_q4_0(x: &[f32], out: &mut [BlockQ4_0], qw: &[f32]) {
    let mut l = [0u8; QK4_0];
    for_each_weighted_block(x, qw, out, |y, xb, weight| {
        y.d = qx_block(8, xb, weight, &mut l);
        y.qs = low_nibbles_32(&l);
    });
}

/// ggml `quantize_row_q4_1_impl`: per block `make_qkx3_quants` (nmax 15).
fn quantize_q4_1(x: &[f32], out: &mut [BlockQ4_1], qw: &[f32]) {
    let mut l = [0u8; QK4_1];
    for_each_weighted_block(x, qw, out, |y, xb, weight| {
        (y.d, y.m) = qkx3_block(15, xb, weight, &mut l);
        y.qs = low_nibbles_32(&l);
    });
}

/// ggml `quantize_row_q5_0_impl`: as Q4_0 with nmax 16.
fn quantize_q5_0(x: &[f32], out: &mut [BlockQ5_0], qw: &[f32]) {
    let mut l = [0u8; QK5_0];
    for_each_weighted_block(x, qw, out, |y, xb, weight| {
        y.d = qx_block(16, xb, weight, &mut l);
        y.qs = low_nibbles_32(&l);
        y.qh = high_bits_32(&l);
    });
}

/// ggml `quantize_row_q5_1_impl`: as Q4_1 with nmax 31.
fn quantize_q5_1(x: &[f32], out: &mut [BlockQ5_1], qw: &[f32]) {
    let mut l = [0u8; QK5_1];
    for_each_weighted_block(x, qw, out, |y, xb, weight| {
        (y.d, y.m) = qkx3_block(31, xb, weight, &mut l);
        y.qs = low_nibbles_32(&l);
        y.qh = high_bits_32(&l);
    });
}

/// ggml `quantize_row_q2_K_impl`: σ² = Σx²/256 per super-block; per sub-block of 16
/// `make_qkx3_quants` (nmax 3); the 4-bit scales and mins by `make_qp_quants` weighted by
/// each sub-block's total weight; quants recomputed against the stored values
/// ([`q2_k::pack_quants`]).
fn quantize_q2_k(x: &[f32], out: &mut [BlockQ2K], qw: &[f32]) {
    for ((x, qw), y) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.iter_mut()) {
        let mut l = [0u8; QK_K];
        let mut l_aux = [0u8; 16];
        let mut weight = [0f32; 16];
        let mut mins = [0f32; QK_K / 16];
        let mut scales = [0f32; QK_K / 16];
        let mut sw = [0f32; QK_K / 16];
        let (mut ls, mut lm) = ([0u8; QK_K / 16], [0u8; QK_K / 16]);
        let sigma2 = sum_squares(x) / QK_K as f32;
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            fill_weights(&mut weight, &qw[16 * j..16 * j + 16], xs, sigma2);
            sw[j] = sum(&weight);
            let (scale, min) =
                make_qkx3_quants(3, xs, &weight, &mut l[16 * j..16 * j + 16], &mut l_aux, -0.9, 0.05, 36, false);
            scales[j] = scale;
            mins[j] = min;
        }
        let dm = make_qp_quants(15, &scales, &mut ls, &sw);
        let mm = make_qp_quants(15, &mins, &mut lm, &sw);
        y.d = f32_to_f16(dm);
        y.dmin = f32_to_f16(mm);
        for j in 0..QK_K / 16 {
            y.scales[j] = ls[j] | (lm[j] << 4);
        }
        q2_k::pack_quants(y, x, &mut l);
    }
}

/// ggml `quantize_row_q3_K_impl`: σ² = 2·Σx²/256 per super-block; per sub-block of 16
/// `make_qx_quants` (nmax 4) with the weights; the 6-bit scales by `make_qx_quants`
/// (nmax 32) weighted by each sub-block's total weight; quants recomputed
/// ([`q3_k::pack_block`]).
fn quantize_q3_k(x: &[f32], out: &mut [BlockQ3K], qw: &[f32]) {
    for ((x, qw), y) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.iter_mut()) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut weight = [0f32; 16];
        let mut sw = [0f32; QK_K / 16];
        let mut ls = [0i8; QK_K / 16];
        let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            fill_weights(&mut weight, &qw[16 * j..16 * j + 16], xs, sigma2);
            sw[j] = sum(&weight);
            scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], 1, Some(&weight));
        }
        let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
        q3_k::pack_block(y, x, d_block, &ls.map(|v| v as u8), &mut l);
    }
}

/// The search shared by Q4_K and Q5_K (`quantize_row_q{4,5}_K_impl`): σ² = 2·Σx²/256;
/// per sub-block of 32 `make_qkx3_quants`; 6-bit scales and mins by `make_qp_quants`
/// (nmax 63) weighted by each sub-block's total weight (`cap_63`: Q5_K also caps them at
/// 63); quants recomputed ([`requantize_k_super_block`]).
fn k_super_block_weighted(x: &[f32], qw: &[f32], nmax: i32, cap_63: bool) -> KSuperBlock {
    let mut l = [0u8; QK_K];
    let mut l_aux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut sw = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let mut scales = [0f32; QK_K / 32];
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        fill_weights(&mut weights, &qw[32 * j..32 * j + 32], xs, sigma2);
        sw[j] = sum(&weights);
        let (scale, min) =
            make_qkx3_quants(nmax, xs, &weights, &mut l[32 * j..32 * j + 32], &mut l_aux, -0.9, 0.05, 36, false);
        scales[j] = scale;
        mins[j] = min;
    }
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if cap_63 {
        for v in ls.iter_mut().chain(lm.iter_mut()) {
            *v = (*v).min(63);
        }
    }
    requantize_k_super_block(x, nmax, d_block, m_block, &ls, &lm, l)
}

/// ggml `quantize_row_q4_K_impl`.
fn quantize_q4_k(x: &[f32], out: &mut [BlockQ4K], qw: &[f32]) {
    for ((x, qw), y) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.iter_mut()) {
        q4_k::pack_block(y, &k_super_block_weighted(x, qw, 15, false));
    }
}

/// ggml `quantize_row_q5_K_impl`.
fn quantize_q5_k(x: &[f32], out: &mut [BlockQ5K], qw: &[f32]) {
    for ((x, qw), y) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.iter_mut()) {
        q5_k::pack_block(y, &k_super_block_weighted(x, qw, 31, true));
    }
}
