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
//! Everything is per block on the stack: no allocation.

use super::iq4_nl::{pack_nibbles, BlockIQ4NL, KVALUES_IQ4NL, QK4_NL};
use super::iq4_xs::BlockIQ4XS;
use super::q2_k::BlockQ2K;
use super::q3_k::BlockQ3K;
use super::q4_0::{BlockQ4_0, QK4_0};
use super::q4_1::{BlockQ4_1, QK4_1};
use super::q4_k::{get_scale_min_k4, pack_scale_min_k4, BlockQ4K};
use super::q5_0::{BlockQ5_0, QK5_0};
use super::q5_1::{BlockQ5_1, QK5_1};
use super::q5_k::BlockQ5K;
use super::q6_k::BlockQ6K;
use super::row::quantize_row;
use super::scale_search::{best_index_int8, make_qkx3_quants, make_qp_quants, make_qx_quants, GROUP_MAX_EPS};
use super::util::{f16_to_f32, f32_to_f16, inverse_or_zero, nearest_int, signed_abs_max};
use super::{BlockFormat, QK_K};
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
    let bytes = format.row_bytes(src.len()).ok_or(KernelError::RowNotBlockMultiple {
        format,
        len: src.len(),
        block: format.block_elems(),
    })?;
    if dst.len() != bytes {
        return Err(KernelError::Length {
            what: "quantize_row_weighted destination",
            expected: bytes,
            got: dst.len(),
            unit: "bytes",
        });
    }
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
        BlockFormat::Q6_K => quantize_q6_k(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::IQ4_NL => quantize_iq4_nl(x, bytemuck::cast_slice_mut(dst), qw),
        BlockFormat::IQ4_XS => quantize_iq4_xs(x, bytemuck::cast_slice_mut(dst), qw),
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
fn sum_squares(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// `weight[j] = qw[j]·sqrt(σ² + x[j]²)`.
#[inline]
fn fill_weights(weight: &mut [f32], qw: &[f32], x: &[f32], sigma2: f32) {
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

/// ggml `quantize_row_q4_0_impl`: σ² = Σx²/n over the row; per block `make_qx_quants`
/// (nmax 8) with the weights.
fn quantize_q4_0(x: &[f32], out: &mut [BlockQ4_0], qw: &[f32]) {
    let sigma2 = sum_squares(x) / x.len() as f32;
    let mut weight = [0f32; QK4_0];
    let mut l = [0i8; QK4_0];
    for ((xb, qb), y) in x.chunks_exact(QK4_0).zip(qw.chunks_exact(QK4_0)).zip(out.iter_mut()) {
        fill_weights(&mut weight, qb, xb, sigma2);
        let d = make_qx_quants(8, xb, &mut l, 1, Some(&weight));
        y.d = f32_to_f16(d);
        for j in 0..QK4_0 / 2 {
            y.qs[j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
        }
    }
}

/// ggml `quantize_row_q4_1_impl`: σ² = Σx²/n over the row; per block `make_qkx3_quants`
/// (nmax 15, 37 scales from (15 − 0.9)/range in steps of 0.05).
fn quantize_q4_1(x: &[f32], out: &mut [BlockQ4_1], qw: &[f32]) {
    let sigma2 = sum_squares(x) / x.len() as f32;
    let mut weight = [0f32; QK4_1];
    let (mut l, mut l_aux) = ([0u8; QK4_1], [0u8; QK4_1]);
    for ((xb, qb), y) in x.chunks_exact(QK4_1).zip(qw.chunks_exact(QK4_1)).zip(out.iter_mut()) {
        fill_weights(&mut weight, qb, xb, sigma2);
        let (d, min) = make_qkx3_quants(15, xb, &weight, &mut l, &mut l_aux, -0.9, 0.05, 36, false);
        y.d = f32_to_f16(d);
        y.m = f32_to_f16(-min);
        for j in 0..QK4_1 / 2 {
            y.qs[j] = l[j] | (l[j + 16] << 4);
        }
    }
}

/// ggml `quantize_row_q5_0_impl`: as Q4_0 with nmax 16.
fn quantize_q5_0(x: &[f32], out: &mut [BlockQ5_0], qw: &[f32]) {
    let sigma2 = sum_squares(x) / x.len() as f32;
    let mut weight = [0f32; QK5_0];
    let mut l = [0i8; QK5_0];
    for ((xb, qb), y) in x.chunks_exact(QK5_0).zip(qw.chunks_exact(QK5_0)).zip(out.iter_mut()) {
        fill_weights(&mut weight, qb, xb, sigma2);
        let d = make_qx_quants(16, xb, &mut l, 1, Some(&weight));
        y.d = f32_to_f16(d);
        let lu: [u8; QK5_0] = l.map(|v| v as u8);
        for j in 0..QK5_0 / 2 {
            y.qs[j] = (lu[j] & 0x0F) | ((lu[j + 16] & 0x0F) << 4);
        }
        y.qh = high_bits_32(&lu);
    }
}

/// ggml `quantize_row_q5_1_impl`: as Q4_1 with nmax 31.
fn quantize_q5_1(x: &[f32], out: &mut [BlockQ5_1], qw: &[f32]) {
    let sigma2 = sum_squares(x) / x.len() as f32;
    let mut weight = [0f32; QK5_1];
    let (mut l, mut l_aux) = ([0u8; QK5_1], [0u8; QK5_1]);
    for ((xb, qb), y) in x.chunks_exact(QK5_1).zip(qw.chunks_exact(QK5_1)).zip(out.iter_mut()) {
        fill_weights(&mut weight, qb, xb, sigma2);
        let (d, min) = make_qkx3_quants(31, xb, &weight, &mut l, &mut l_aux, -0.9, 0.05, 36, false);
        y.d = f32_to_f16(d);
        y.m = f32_to_f16(-min);
        for j in 0..QK5_1 / 2 {
            y.qs[j] = (l[j] & 0x0F) | ((l[j + 16] & 0x0F) << 4);
        }
        y.qh = high_bits_32(&l);
    }
}

/// ggml `quantize_row_q2_K_impl`: σ² = Σx²/256 per super-block; per sub-block of 16
/// `make_qkx3_quants` (nmax 3); the 4-bit scales and mins by `make_qp_quants` weighted by
/// each sub-block's total weight; quants recomputed against the stored values.
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
        let (dm, mm) = (y.d(), y.dmin());
        for j in 0..QK_K / 16 {
            y.scales[j] = ls[j] | (lm[j] << 4);
        }
        for j in 0..QK_K / 16 {
            let d = dm * (y.scales[j] & 0x0F) as f32;
            if d == 0.0 {
                continue;
            }
            let m = mm * (y.scales[j] >> 4) as f32;
            for ii in 0..16 {
                l[16 * j + ii] = nearest_int((x[16 * j + ii] + m) / d).clamp(0, 3) as u8;
            }
        }
        for n in 0..2 {
            for i in 0..32 {
                let e = 128 * n + i;
                y.qs[32 * n + i] = l[e] | (l[e + 32] << 2) | (l[e + 64] << 4) | (l[e + 96] << 6);
            }
        }
    }
}

/// ggml `quantize_row_q3_K_impl`: σ² = 2·Σx²/256 per super-block; per sub-block of 16
/// `make_qx_quants` (nmax 4) with the weights; the 6-bit scales by `make_qx_quants`
/// (nmax 32) weighted by each sub-block's total weight; quants recomputed.
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
        y.scales = [0; 12];
        let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
        for (j, &lj) in ls.iter().enumerate() {
            let lv = lj as u8;
            if j < 8 {
                y.scales[j] = lv & 0x0F;
            } else {
                y.scales[j - 8] |= (lv & 0x0F) << 4;
            }
            y.scales[j % 4 + 8] |= (lv >> 4) << (2 * (j / 4));
        }
        y.d = f32_to_f16(d_block);
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
}

/// The search shared by Q4_K and Q5_K (`quantize_row_q{4,5}_K_impl`): σ² = 2·Σx²/256;
/// per sub-block of 32 `make_qkx3_quants`; 6-bit scales and mins by `make_qp_quants`
/// (nmax 63) weighted by each sub-block's total weight (`cap_63`: Q5_K also caps them at
/// 63); quants recomputed. Returns `(d, dmin, packed scales, quants in 0..=nmax)`.
fn k_super_block_weighted(x: &[f32], qw: &[f32], nmax: i32, cap_63: bool) -> ([u8; 2], [u8; 2], [u8; 12], [u8; QK_K]) {
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
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = f32_to_f16(d_block);
    let dmin = f32_to_f16(m_block);
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

/// ggml `quantize_row_q4_K_impl`.
fn quantize_q4_k(x: &[f32], out: &mut [BlockQ4K], qw: &[f32]) {
    for ((x, qw), y) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.iter_mut()) {
        let (d, dmin, scales, l) = k_super_block_weighted(x, qw, 15, false);
        y.d = d;
        y.dmin = dmin;
        y.scales = scales;
        for (qs, lj) in y.qs.chunks_exact_mut(32).zip(l.chunks_exact(64)) {
            for (i, q) in qs.iter_mut().enumerate() {
                *q = lj[i] | (lj[i + 32] << 4);
            }
        }
    }
}

/// ggml `quantize_row_q5_K_impl`.
fn quantize_q5_k(x: &[f32], out: &mut [BlockQ5K], qw: &[f32]) {
    for ((x, qw), y) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.iter_mut()) {
        let (d, dmin, scales, l) = k_super_block_weighted(x, qw, 31, true);
        y.d = d;
        y.dmin = dmin;
        y.scales = scales;
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
}

/// ggml `quantize_row_q6_K_impl`: the reference algorithm with the importance itself (no
/// σ² term) as `make_qx_quants`' weights.
fn quantize_q6_k(x: &[f32], out: &mut [BlockQ6K], qw: &[f32]) {
    for ((x, qw), y) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.iter_mut()) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for (ib, s) in scales.iter_mut().enumerate() {
            let r = 16 * ib..16 * ib + 16;
            *s = make_qx_quants(32, &x[r.clone()], &mut l[r.clone()], 1, Some(&qw[r]));
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = *s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *y = bytemuck::Zeroable::zeroed();
            continue;
        }
        let iscale = -128.0 / max_scale;
        y.d = f32_to_f16(1.0 / iscale);
        for (dst, &s) in y.scales.iter_mut().zip(&scales) {
            *dst = nearest_int(iscale * s).min(127) as i8;
        }
        let d_all = y.d();
        for j in 0..QK_K / 16 {
            let d = d_all * y.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for (n, (ql, qh)) in y.ql.chunks_exact_mut(64).zip(y.qh.chunks_exact_mut(32)).enumerate() {
            let ln = &l[128 * n..128 * n + 128];
            for i in 0..32 {
                let (q1, q2, q3, q4) = (ln[i] as u8, ln[i + 32] as u8, ln[i + 64] as u8, ln[i + 96] as u8);
                ql[i] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
                ql[i + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
                qh[i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

/// The per-block search of `quantize_row_iq4_nl_impl` (ntry 7) with weights `weight`:
/// fills `l` with table indices and returns the block scale (0 for an all-zero block,
/// `l` then untouched).
fn iq4_block_scale_weighted(xb: &[f32], weight: &[f32], l: &mut [u8]) -> f32 {
    const NTRY: i32 = 7;
    let values = &KVALUES_IQ4NL;
    let (max, amax) = signed_abs_max(xb);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let mut d = -max / values[0] as f32;
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for ((lj, &v), &w) in l.iter_mut().zip(xb).zip(weight) {
        let idx = best_index_int8(values, id * v);
        *lj = idx as u8;
        let q = values[idx] as f32;
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        id = (itry + values[0] as i32) as f32 / max;
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for (&v, &w) in xb.iter().zip(weight) {
            let q = values[best_index_int8(values, id * v)] as f32;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// ggml `quantize_iq4_nl` with importance (`quantize_row_iq4_nl_impl`, super-block 32):
/// σ² = 2·Σx²/32 per block; levels recomputed against the unrounded best scale.
fn quantize_iq4_nl(x: &[f32], out: &mut [BlockIQ4NL], qw: &[f32]) {
    let mut weight = [0f32; QK4_NL];
    let mut l = [0u8; QK4_NL];
    for ((xb, qb), y) in x.chunks_exact(QK4_NL).zip(qw.chunks_exact(QK4_NL)).zip(out.iter_mut()) {
        let sigma2 = sum_squares(xb) * (2.0 / QK4_NL as f32);
        fill_weights(&mut weight, qb, xb, sigma2);
        let d = iq4_block_scale_weighted(xb, &weight, &mut l);
        y.d = f32_to_f16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (lj, &v) in l.iter_mut().zip(xb) {
            *lj = best_index_int8(&KVALUES_IQ4NL, id * v) as u8;
        }
        pack_nibbles(&l, &mut y.qs);
    }
}

/// ggml `quantize_iq4_xs` with importance (`quantize_row_iq4_nl_impl`, super-block 256):
/// σ² = 2·Σx²/256; per block of 32 the weighted search, then 6-bit block scales against
/// `d = −max_scale/32` and levels recomputed against them.
fn quantize_iq4_xs(x: &[f32], out: &mut [BlockIQ4XS], qw: &[f32]) {
    for ((x, qw), y) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.iter_mut()) {
        let mut l = [0u8; QK_K];
        let mut weight = [0f32; 32];
        let mut scales = [0f32; QK_K / 32];
        let sigma2 = sum_squares(x) * (2.0 / QK_K as f32);
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        for (ib, s) in scales.iter_mut().enumerate() {
            let r = 32 * ib..32 * ib + 32;
            fill_weights(&mut weight, &qw[r.clone()], &x[r.clone()], sigma2);
            let d = iq4_block_scale_weighted(&x[r.clone()], &weight, &mut l[r]);
            *s = d;
            if d.abs() > amax_scale {
                amax_scale = d.abs();
                max_scale = d;
            }
        }
        let d = -max_scale / 32.0;
        y.d = f32_to_f16(d);
        let id = inverse_or_zero(d);
        let mut scales_h = 0u16;
        y.scales_l = [0; QK_K / 64];
        for (ib, &s) in scales.iter().enumerate() {
            let ls = nearest_int(id * s).clamp(-32, 31);
            let idl = inverse_or_zero(d * ls as f32);
            for (lj, &v) in l[32 * ib..32 * ib + 32].iter_mut().zip(&x[32 * ib..32 * ib + 32]) {
                *lj = best_index_int8(&KVALUES_IQ4NL, idl * v) as u8;
            }
            let ls = (ls + 32) as u8;
            y.scales_l[ib / 2] |= (ls & 0x0F) << (4 * (ib % 2));
            scales_h |= ((ls >> 4) as u16) << (2 * ib);
        }
        y.scales_h = scales_h.to_le_bytes();
        pack_nibbles(&l, &mut y.qs);
    }
}
