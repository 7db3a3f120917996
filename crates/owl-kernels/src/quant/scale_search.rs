//! ggml's scale searches for the K-quants and IQ4 quantizers (`ggml-quants.c`:
//! `make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`, `best_index_int8`, and for
//! the importance-weighted quantizers `make_qkx3_quants` and `make_qp_quants`).
//!
//! They pick, per sub-block, the scale (and for the "x = a·q + b" formats the minimum)
//! that minimises a weighted squared (or absolute) error, by trying a few scales around
//! the naive one. The arithmetic follows ggml's C expression by expression (f32, same
//! evaluation order), so our quantized files match llama.cpp's reference quantizer.

use super::util::nearest_int;

/// ggml's `GROUP_MAX_EPS`: a sub-block whose largest magnitude is below this is all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Symmetric quants `L[i] = l + nmax`, `l` in `-nmax..nmax`, for `x ≈ scale·l`; returns
/// the scale. `rmse_type` 0: plain rounding of `x·(−nmax/max)`; 1: weights `x²` and a
/// search over 18 nearby scales (the only variants the reference quantizers use;
/// `qw` replaces the weights when given).
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], rmse_type: i32, qw: Option<&[f32]>) -> f32 {
    let (max, amax) = super::util::signed_abs_max(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    if rmse_type == 0 {
        for (dst, &v) in l_out.iter_mut().zip(x) {
            *dst = (nmax + clamp(nearest_int(iscale * v))) as i8;
        }
        return 1.0 / iscale;
    }
    let weight = |i: usize, v: f32| -> f32 {
        match qw {
            Some(w) => w[i],
            None => match rmse_type {
                1 => v * v,
                2 => 1.0,
                3 => v.abs(),
                _ => v.abs().sqrt(),
            },
        }
    };
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, (dst, &v)) in l_out.iter_mut().zip(x).enumerate() {
        let l = clamp(nearest_int(iscale * v));
        *dst = (l + nmax) as i8;
        let w = weight(i, v);
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for (i, &v) in x.iter().enumerate() {
            let lf = clamp(nearest_int(iscale * v)) as f32;
            let w = weight(i, v);
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (dst, &v) in l_out.iter_mut().zip(x) {
                *dst = (nmax + clamp(nearest_int(iscale * v))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q3_K's sub-block search (`make_q3_quants` with `do_rmse`): start from plain rounding,
/// then up to 5 passes of coordinate descent on each quant with weights `x²`.
/// `L[i] = l + nmax`; returns the scale.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (max, amax) = super::util::signed_abs_max(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (dst, &v) in l_out.iter_mut().zip(x) {
        let l = clamp(nearest_int(iscale * v));
        *dst = l as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (dst, &v) in l_out.iter_mut().zip(x) {
            let w = v * v;
            let li = *dst as f32;
            let mut slx = sumlx - w * v * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = clamp(nearest_int(v * sl2 / slx));
                if new_l != *dst as i32 {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *dst = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for dst in l_out.iter_mut() {
        *dst += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Asymmetric quants `L[i]` in `0..=nmax` for `x ≈ scale·L − min`: tries `nstep + 1`
/// scales `(rmin + rdelta·is + nmax)/(max − min)`, solves the weighted least-squares scale
/// and min for each and keeps the one with the smallest weighted error (squared, or
/// absolute with `use_mad`). Returns `(scale, min)` with `min ≥ 0` the amount subtracted;
/// scale 0 for a constant block. `l_aux` is scratch of `x.len()`.
///
/// This is ggml's `make_qkx2_quants` and, with `weights` given, its `make_qkx3_quants`:
/// the two run the same operations in the same order and differ only in the test for a
/// degenerate block, `max == min` against `max <= min`. Those agree: `max ≥ min` holds
/// after clamping `min ≤ 0` (both are seeded with `x[0]`, and `min` is raised to 0 only
/// when `max ≥ min > 0`), and both comparisons are false for a NaN.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    l_aux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((dst, &v), &w) in l_out.iter_mut().zip(x).zip(weights) {
        let l = nearest_int(iscale * (v - min)).clamp(0, nmax);
        *dst = l as u8;
        best_error += w * err(scale * l as f32 + min - v);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((dst, &v), &w) in l_aux.iter_mut().zip(x).zip(weights) {
            let l = nearest_int(iscale * (v - min)).clamp(0, nmax);
            *dst = l as u8;
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&l, &v), &w) in l_aux.iter().zip(x).zip(weights) {
                cur_error += w * err(this_scale * l as f32 + this_min - v);
            }
            if cur_error < best_error {
                l_out.copy_from_slice(&l_aux[..l_out.len()]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qkx3_quants` with `weights` given, the importance-weighted quantizers'
/// search: the same function as [`make_qkx2_quants`] (see there).
pub(crate) use self::make_qkx2_quants as make_qkx3_quants;

/// Non-negative quants `L[i]` in `0..=nmax` for `x ≈ scale·L` with weights `qw`
/// (`make_qp_quants`): the K-quants' search for the super-block scale of their sub-block
/// scales and mins. Tries 8 scales `(nmax + 0.1·is)/max` around the naive one by weighted
/// squared error, then up to 5 passes of coordinate descent on each quant. Returns the
/// scale (0 for an all-zero or all-negative `x`).
///
/// As in ggml, `L` is a `uint8_t` that takes the plain `nearest_int` result (only capped at
/// `nmax`), so a negative `x` wraps; `as u8` reproduces that.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for &v in x {
        // C's MAX(max, v): `max > v ? max : v`.
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (dst, &v) in l_out.iter_mut().zip(x) {
        *dst = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for ((&l, &v), &w) in l_out.iter().zip(x).zip(qw) {
        let diff = v - scale * l as f32;
        best_mse += w * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for (&v, &w) in x.iter().zip(qw) {
            let l = nearest_int(iscale_is * v).min(nmax);
            let diff = v - scale_is * l as f32;
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for ((dst, &v), &w) in l_out.iter_mut().zip(x).zip(qw) {
        let l = nearest_int(iscale * v).min(nmax);
        *dst = l as u8;
        // These sums take the int `l`; the descent below reads the stored (wrapped) byte.
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for ((dst, &v), &w) in l_out.iter_mut().zip(x).zip(qw) {
            let li = *dst as f32;
            let mut slx = sumlx - w * v * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(v * sl2 / slx).min(nmax);
                if new_l != *dst as i32 {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *dst = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Index of the entry of the ascending table `values` nearest to `x` (ties go up).
#[inline]
pub(crate) fn best_index_int8(values: &[i8; 16], x: f32) -> usize {
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < values[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}
