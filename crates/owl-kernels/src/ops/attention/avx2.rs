//! The AVX2+FMA body of [`super::attend`], written for many queries (a prompt chunk) as well
//! as one (a decode step).
//!
//! The rows of a block — every (query, head) pair, `r = query * n_heads + head` — are taken
//! [`ROW_GROUP`] at a time against each key tile, so that every key and value row loaded
//! from the tile serves several rows of the group from registers:
//!
//! - scores: a 2-row × 4-key register tile (8 FMA accumulators) over the head dimension, the
//!   four sums of a row reduced together with `hadd`;
//! - softmax: per row, 8 scores at a time — running-maximum update, the vector exp of
//!   `super::super::activation`, the sum; keys a row may not see (causal mask, window,
//!   outside the tile) get weight exactly 0;
//! - values: a group-rows × 16-or-32-column register tile of the outputs, which is loaded
//!   once per key tile, rescaled by `exp(m_old - m_new)` there, accumulates every key of
//!   the tile, and is stored once.
//!
//! The group's keys are the union of its rows' visible ranges, so rows that see fewer keys
//! (only in a block's diagonal tile or a window's edge) do a little wasted, zero-weighted
//! work. Head sizes that are not a multiple of 8 take a scalar tail.

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::{KeyWindow, Queries, RowState, Rows, ScoreParams, KEY_TILE};
use crate::ops::exp::avx2::exp;
use crate::ops::exp::exp_poly;

/// Rows (query, head pairs) attended together against each key tile.
pub(super) const ROW_GROUP: usize = 4;

/// f32 working memory of [`attend`] beyond the portable path's: the group's scores/weights.
pub(super) const GROUP_SCRATCH: usize = ROW_GROUP * KEY_TILE;

/// See [`super::attend_span`]; `work` holds [`super::work_floats`] values.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend<K: Rows, V: Rows>(
    queries: &Queries<'_>,
    keys: K,
    values: V,
    k_dim: usize,
    v_dim: usize,
    keys_seen: KeyWindow,
    params: ScoreParams,
    span: Range<usize>,
    work: &mut [f32],
    state: &mut RowState<'_>,
) {
    let (nb, nh) = (queries.positions.len(), queries.n_heads);
    let n_rows = nb * nh;
    let (k_tile, rest) = work.split_at_mut(KEY_TILE * k_dim);
    let (v_tile, rest) = rest.split_at_mut(KEY_TILE * v_dim);
    let weights = &mut rest[..GROUP_SCRATCH];
    let run_max = &mut state.max[..n_rows];
    let run_sum = &mut state.sum[..n_rows];
    run_max.fill(f32::NEG_INFINITY);
    run_sum.fill(0.0);
    let out = &mut state.out[..n_rows * v_dim];
    out.fill(0.0);
    let Some(&last) = queries.positions.iter().max() else { return };
    if span.is_empty() {
        return;
    }
    let last = last.min(span.end - 1);
    let first = queries.positions.iter().map(|&p| keys_seen.first(p)).min().unwrap_or(0).max(span.start);
    // Every row's query vector must be in bounds before the raw-pointer kernels read it.
    let q_end = (nb - 1) * queries.stride + nh * k_dim;
    let q = &queries.q[..q_end];

    let mut pos = first;
    while pos <= last {
        // A tile of consecutive positions that are also consecutive rows of the ring.
        let slot = pos % keys_seen.slots;
        let n = (last + 1 - pos).min(keys_seen.slots - slot).min(KEY_TILE);
        // SAFETY: this function's contract includes F16C.
        unsafe {
            keys.load_f16c(slot * k_dim, &mut k_tile[..n * k_dim]);
            values.load_f16c(slot * v_dim, &mut v_tile[..n * v_dim]);
        }

        let mut r0 = 0;
        while r0 < n_rows {
            let g = (n_rows - r0).min(ROW_GROUP);
            // Each row's visible part of the tile, [j0, j1) (empty: j0 == j1), and their union.
            let mut range = [(0usize, 0usize); ROW_GROUP];
            let (mut u0, mut u1) = (KEY_TILE, 0);
            for (k, rg) in range.iter_mut().enumerate().take(g) {
                let p = queries.positions[(r0 + k) / nh];
                let (a, b) = (keys_seen.first(p).max(pos), p.min(pos + n - 1));
                if a <= b {
                    *rg = (a - pos, b + 1 - pos);
                    u0 = u0.min(rg.0);
                    u1 = u1.max(rg.1);
                }
            }
            if u0 >= u1 {
                r0 += g;
                continue;
            }
            // Whole 8-key chunks covering the union (KEY_TILE is a multiple of 8; keys past
            // the tile's n are stale scratch, scored but masked to weight 0).
            let (lo, hi) = (u0 & !7, (u1 + 7) & !7);
            let row_q = |k: usize| {
                let r = r0 + k;
                &q[(r / nh) * queries.stride + (r % nh) * k_dim..][..k_dim]
            };

            // Scores, two rows at a time.
            let mut k = 0;
            while k < g {
                let (s0, s1) = weights.split_at_mut((k + 1) * KEY_TILE);
                let s0 = &mut s0[k * KEY_TILE..];
                if k + 1 < g {
                    scores_2x(row_q(k), row_q(k + 1), k_tile, k_dim, lo, hi, s0, &mut s1[..KEY_TILE]);
                    k += 2;
                } else {
                    scores_1x(row_q(k), k_tile, k_dim, lo, hi, s0);
                    k += 1;
                }
            }

            // Softmax bookkeeping per row: weights in place of the scores.
            let mut rescale = [1.0f32; ROW_GROUP];
            for k in 0..g {
                let w = &mut weights[k * KEY_TILE..(k + 1) * KEY_TILE];
                let (j0, j1) = range[k];
                if j0 == j1 {
                    w[lo..hi].fill(0.0);
                    continue;
                }
                let r = r0 + k;
                for s in &mut w[lo..hi] {
                    *s *= params.scale;
                }
                if let Some(cap) = params.softcap {
                    for s in &mut w[j0..j1] {
                        *s = cap * (*s / cap).tanh();
                    }
                }
                let new_max = run_max[r].max(masked_max(w, lo, hi, j0, j1));
                if run_max[r] != f32::NEG_INFINITY && new_max > run_max[r] {
                    rescale[k] = exp_poly(run_max[r] - new_max);
                }
                run_max[r] = new_max;
                run_sum[r] = run_sum[r] * rescale[k] + exp_masked(w, lo, hi, j0, j1, new_max);
            }

            // Values.
            let o = &mut out[r0 * v_dim..(r0 + g) * v_dim];
            let vt = &v_tile[u0 * v_dim..u1 * v_dim];
            match g {
                1 => accumulate::<1, 4>(o, weights, &rescale, vt, v_dim, u0),
                2 => accumulate::<2, 4>(o, weights, &rescale, vt, v_dim, u0),
                3 => accumulate::<3, 2>(o, weights, &rescale, vt, v_dim, u0),
                _ => accumulate::<4, 2>(o, weights, &rescale, vt, v_dim, u0),
            }
            r0 += g;
        }
        pos += n;
    }
}

/// How far ahead [`f16_to_f32`] prefetches: 4 KiB.
const PREFETCH_HALVES: usize = 2048;

/// `dst = src` converted, 8 values per instruction (half's slice conversion goes through a
/// call per 8 values and bounds-checked copies: 4x slower, most of a decode step's
/// attention time).
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // The next tile's rows, a page ahead: the hardware prefetcher stops at page bounds,
        // and a tile of 32 keys × 64 halves is one page. A prefetch never faults.
        if i % 32 == 0 {
            _mm_prefetch::<_MM_HINT_T0>(sp.wrapping_add(i + PREFETCH_HALVES).cast::<i8>());
        }
        // SAFETY: 8 halves (16 bytes) and 8 floats at i + 8 <= n of both slices.
        unsafe { _mm256_storeu_ps(dp.add(i), _mm256_cvtph_ps(_mm_loadu_si128(sp.add(i).cast::<__m128i>()))) };
        i += 8;
    }
    for j in i..n {
        dst[j] = src[j].to_f32();
    }
}

/// Lanes `c..c + 8` that lie in `[j0, j1)`, as an all-ones/all-zeros float mask.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn lane_mask(c: usize, j0: usize, j1: usize) -> __m256 {
    let idx = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(c as i32));
    let ge = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(j0 as i32 - 1));
    let lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(j1 as i32), idx);
    _mm256_castsi256_ps(_mm256_and_si256(ge, lt))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hmax(v: __m256) -> f32 {
    let m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)))
}

/// The largest of `s[j0..j1]`, read in the 8-lane chunks of `lo..hi`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn masked_max(s: &[f32], lo: usize, hi: usize, j0: usize, j1: usize) -> f32 {
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in (lo..hi).step_by(8) {
        // SAFETY: c + 8 <= hi <= KEY_TILE <= s.len().
        let v = unsafe { _mm256_loadu_ps(s[c..c + 8].as_ptr()) };
        m = _mm256_max_ps(m, _mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), v, lane_mask(c, j0, j1)));
    }
    hmax(m)
}

/// `s[j] = exp(s[j] - max)` for `j` in `[j0, j1)` and exactly 0 elsewhere in `lo..hi`;
/// returns the sum.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn exp_masked(s: &mut [f32], lo: usize, hi: usize, j0: usize, j1: usize, max: f32) -> f32 {
    let (m, mut sum) = (_mm256_set1_ps(max), _mm256_setzero_ps());
    for c in (lo..hi).step_by(8) {
        let chunk = &mut s[c..c + 8];
        // SAFETY: `chunk` holds 8 floats.
        unsafe {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(chunk.as_ptr()), m));
            // `and` clears masked lanes whatever they held (stale scores may be NaN).
            let e = _mm256_and_ps(e, lane_mask(c, j0, j1));
            _mm256_storeu_ps(chunk.as_mut_ptr(), e);
            sum = _mm256_add_ps(sum, e);
        }
    }
    hsum(sum)
}

/// The four sums of `acc[0..4]` (one per key) as one vector.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum4(acc: [__m256; 4]) -> __m128 {
    let t0 = _mm256_hadd_ps(acc[0], acc[1]);
    let t1 = _mm256_hadd_ps(acc[2], acc[3]);
    let t = _mm256_hadd_ps(t0, t1);
    _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t))
}

/// Unscaled scores `q·k_j` of two query rows for the keys `lo..hi` of the tile (a multiple
/// of 4 apart), into `s0[j]`, `s1[j]`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn scores_2x(q0: &[f32], q1: &[f32], kt: &[f32], d: usize, lo: usize, hi: usize, s0: &mut [f32], s1: &mut [f32]) {
    let d8 = d & !7;
    assert!(q0.len() >= d && q1.len() >= d && kt.len() >= hi * d && s0.len() >= hi && s1.len() >= hi);
    let (p0, p1) = (q0.as_ptr(), q1.as_ptr());
    for j in (lo..hi).step_by(4) {
        let kp = kt[j * d..].as_ptr();
        let mut a = [_mm256_setzero_ps(); 4];
        let mut b = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < d8 {
            // SAFETY: c + 8 <= d, and keys j..j + 4 lie within kt (asserted above).
            unsafe {
                let k = [
                    _mm256_loadu_ps(kp.add(c)),
                    _mm256_loadu_ps(kp.add(d + c)),
                    _mm256_loadu_ps(kp.add(2 * d + c)),
                    _mm256_loadu_ps(kp.add(3 * d + c)),
                ];
                let x = _mm256_loadu_ps(p0.add(c));
                for i in 0..4 {
                    a[i] = _mm256_fmadd_ps(x, k[i], a[i]);
                }
                let y = _mm256_loadu_ps(p1.add(c));
                for i in 0..4 {
                    b[i] = _mm256_fmadd_ps(y, k[i], b[i]);
                }
            }
            c += 8;
        }
        let (mut sa, mut sb) = ([0.0f32; 4], [0.0f32; 4]);
        // SAFETY: 4-float arrays.
        unsafe {
            _mm_storeu_ps(sa.as_mut_ptr(), hsum4(a));
            _mm_storeu_ps(sb.as_mut_ptr(), hsum4(b));
        }
        for i in 0..4 {
            let key = &kt[(j + i) * d..(j + i + 1) * d];
            for c in d8..d {
                sa[i] += q0[c] * key[c];
                sb[i] += q1[c] * key[c];
            }
        }
        s0[j..j + 4].copy_from_slice(&sa);
        s1[j..j + 4].copy_from_slice(&sb);
    }
}

/// [`scores_2x`] for one row.
#[target_feature(enable = "avx2,fma")]
fn scores_1x(q0: &[f32], kt: &[f32], d: usize, lo: usize, hi: usize, s0: &mut [f32]) {
    let d8 = d & !7;
    assert!(q0.len() >= d && kt.len() >= hi * d && s0.len() >= hi);
    let p0 = q0.as_ptr();
    for j in (lo..hi).step_by(4) {
        let kp = kt[j * d..].as_ptr();
        let mut a = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < d8 {
            // SAFETY: c + 8 <= d, and keys j..j + 4 lie within kt (asserted above).
            unsafe {
                let x = _mm256_loadu_ps(p0.add(c));
                for (i, acc) in a.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(x, _mm256_loadu_ps(kp.add(i * d + c)), *acc);
                }
            }
            c += 8;
        }
        let mut sa = [0.0f32; 4];
        // SAFETY: a 4-float array.
        unsafe { _mm_storeu_ps(sa.as_mut_ptr(), hsum4(a)) };
        for (i, s) in sa.iter_mut().enumerate() {
            let key = &kt[(j + i) * d..(j + i + 1) * d];
            for c in d8..d {
                *s += q0[c] * key[c];
            }
        }
        s0[j..j + 4].copy_from_slice(&sa);
    }
}

/// `o[r] = o[r] * rescale[r] + Σ_j w[r][u0 + j] · vt[j]` for the `G` rows of a group, with
/// the outputs held in registers `COLS` vectors (8 columns each) at a time across all the
/// tile's keys. `w` is the group's weights, `[G][KEY_TILE]`; `vt` the value rows from u0.
#[target_feature(enable = "avx2,fma")]
fn accumulate<const G: usize, const COLS: usize>(
    o: &mut [f32],
    w: &[f32],
    rescale: &[f32; ROW_GROUP],
    vt: &[f32],
    d: usize,
    u0: usize,
) {
    let keys = vt.len() / d;
    assert!(o.len() >= G * d && w.len() >= G * KEY_TILE && u0 + keys <= KEY_TILE);
    let (op, wp, vp) = (o.as_mut_ptr(), w.as_ptr(), vt.as_ptr());
    let mut c = 0;
    // Full register tiles, then 8-column ones, then single columns.
    while c + 8 * COLS <= d {
        // SAFETY: columns c..c + 8*COLS < d of G output rows and of `keys` value rows;
        // weights w[r][u0 + j] with u0 + j < KEY_TILE (asserted above).
        unsafe { accumulate_cols::<G, COLS>(op.add(c), wp.add(u0), rescale, vp.add(c), d, keys) };
        c += 8 * COLS;
    }
    while c + 8 <= d {
        // SAFETY: as above, 8 columns.
        unsafe { accumulate_cols::<G, 1>(op.add(c), wp.add(u0), rescale, vp.add(c), d, keys) };
        c += 8;
    }
    for c in c..d {
        for r in 0..G {
            let mut x = o[r * d + c] * rescale[r];
            for j in 0..keys {
                x = w[r * KEY_TILE + u0 + j].mul_add(vt[j * d + c], x);
            }
            o[r * d + c] = x;
        }
    }
}

/// The register tile of [`accumulate`]: `8 * COLS` columns of `G` rows.
///
/// # Safety
/// `o` (row stride `d`) and `v` (row stride `d`, `keys` rows) must be valid for `8 * COLS`
/// floats per row; `w` (row stride `KEY_TILE`) for `keys` floats per row.
#[target_feature(enable = "avx2,fma")]
#[inline]
// Index loops over the const-sized register tile read best (and fully unroll).
#[allow(clippy::needless_range_loop)]
unsafe fn accumulate_cols<const G: usize, const COLS: usize>(
    o: *mut f32,
    w: *const f32,
    rescale: &[f32; ROW_GROUP],
    v: *const f32,
    d: usize,
    keys: usize,
) {
    // SAFETY (whole body): every pointer offset stays within the ranges of the contract.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); COLS]; G];
        for r in 0..G {
            let c = _mm256_set1_ps(rescale[r]);
            for x in 0..COLS {
                acc[r][x] = _mm256_mul_ps(_mm256_loadu_ps(o.add(r * d + 8 * x)), c);
            }
        }
        for j in 0..keys {
            let mut vv = [_mm256_setzero_ps(); COLS];
            for (x, v8) in vv.iter_mut().enumerate() {
                *v8 = _mm256_loadu_ps(v.add(j * d + 8 * x));
            }
            for r in 0..G {
                let wr = _mm256_broadcast_ss(&*w.add(r * KEY_TILE + j));
                for x in 0..COLS {
                    acc[r][x] = _mm256_fmadd_ps(wr, vv[x], acc[r][x]);
                }
            }
        }
        for r in 0..G {
            for x in 0..COLS {
                _mm256_storeu_ps(o.add(r * d + 8 * x), acc[r][x]);
            }
        }
    }
}
