//! RMSNorm, `y = x / sqrt(mean(x²) + eps) * w` (Zhang & Sennrich 2019), in f32, and the
//! residual add that precedes it.
//!
//! The sum of squares runs in 8 lanes (lane `i` takes elements `i, i + 8, …`), the lanes
//! are added in order, then the tail: the portable body and the AVX2 one give the same bits,
//! so a row's result does not depend on the CPU's instruction set. A 16-lane sum would
//! change the rounding, so the AVX-512 bodies do the element-wise parts only (scaling, adds),
//! where every width gives the same bits.
//!
//! Whole batches are split over the [`ThreadPool`] by rows from [`PARALLEL_FLOATS`] floats
//! up; a row is always computed by one thread with the same arithmetic, so the result does
//! not depend on the split either.

use crate::parallel::{DisjointSlice, PARALLEL_FLOATS};
use crate::ThreadPool;

/// `1 / sqrt(mean(x²) + eps)`.
#[inline]
pub fn inv_rms(x: &[f32], eps: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::float_simd_available() {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { avx2::inv_rms(x, eps) };
    }
    inv_rms_portable(x, eps)
}

/// [`inv_rms`] in plain Rust: the reference the SIMD body is tested against.
pub fn inv_rms_portable(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            lanes[i] += c[i] * c[i];
        }
    }
    finish_inv_rms(&lanes, tail, x.len(), eps)
}

/// The lanes added in order, then the tail, then the root: shared by every body.
#[inline(always)]
fn finish_inv_rms(lanes: &[f32; 8], tail: &[f32], n: usize, eps: f32) -> f32 {
    let mut sum: f32 = lanes.iter().sum();
    for v in tail {
        sum += v * v;
    }
    1.0 / (sum / n as f32 + eps).sqrt()
}

/// `out[i] = x[i] * scale * w[i]` over the common length (`(x * scale) * w`, rounded twice,
/// in every body).
#[inline]
pub fn scale_mul(x: &[f32], scale: f32, w: &[f32], out: &mut [f32]) {
    let n = x.len().min(w.len()).min(out.len());
    #[cfg(target_arch = "x86_64")]
    if super::float_simd_available() {
        // SAFETY: AVX2 (and, where used, AVX-512 F) are present; the pointers are valid for
        // `n` floats and `out` is an exclusive borrow distinct from the inputs.
        unsafe { avx2::scale_mul(x.as_ptr(), scale, w.as_ptr(), out.as_mut_ptr(), n) };
        return;
    }
    for ((o, &v), &w) in out[..n].iter_mut().zip(&x[..n]).zip(&w[..n]) {
        *o = v * scale * w;
    }
}

/// `x[i] = x[i] * scale * w[i]` in place.
#[inline]
pub fn scale_mul_in_place(x: &mut [f32], scale: f32, w: &[f32]) {
    let n = x.len().min(w.len());
    #[cfg(target_arch = "x86_64")]
    if super::float_simd_available() {
        let p = x.as_mut_ptr();
        // SAFETY: as in `scale_mul`; the body reads element i before writing it, so the
        // output may be the input itself (one raw pointer for both roles).
        unsafe { avx2::scale_mul(p.cast_const(), scale, w.as_ptr(), p, n) };
        return;
    }
    for (v, &w) in x[..n].iter_mut().zip(&w[..n]) {
        *v = *v * scale * w;
    }
}

/// One row: `out = x * inv_rms(x) * w`.
#[inline]
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    scale_mul(x, inv_rms(x, eps), w, out);
}

/// One row in place.
#[inline]
pub fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let inv = inv_rms(x, eps);
    scale_mul_in_place(x, inv, w);
}

/// Every `w.len()`-long row of `x` normalised into `out` (the rows both hold), split over
/// `pool` for a large batch.
pub fn rms_norm_rows(pool: &ThreadPool, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    if d == 0 {
        return;
    }
    let rows = x.len().min(out.len()) / d;
    if x.len() < PARALLEL_FLOATS || pool.n_threads() < 2 {
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            rms_norm(xr, w, eps, or);
        }
        return;
    }
    let out = DisjointSlice::new(&mut out[..rows * d]);
    pool.parallel_for(rows, rows_per_chunk(d), &|_, r| {
        // SAFETY: each range of rows is claimed by one thread.
        let o = unsafe { out.range(r.start * d..r.end * d) };
        for (xr, or) in x[r.start * d..r.end * d].chunks_exact(d).zip(o.chunks_exact_mut(d)) {
            rms_norm(xr, w, eps, or);
        }
    });
}

/// Every `w.len()`-long row of `x` normalised in place (per-head q/k norms, sandwich norms).
pub fn rms_norm_rows_in_place(pool: &ThreadPool, x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    if d == 0 {
        return;
    }
    let rows = x.len() / d;
    if x.len() < PARALLEL_FLOATS || pool.n_threads() < 2 {
        x.chunks_exact_mut(d).for_each(|r| rms_norm_in_place(r, w, eps));
        return;
    }
    let x = DisjointSlice::new(&mut x[..rows * d]);
    pool.parallel_for(rows, rows_per_chunk(d), &|_, r| {
        // SAFETY: each range of rows is claimed by one thread.
        unsafe { x.range(r.start * d..r.end * d) }.chunks_exact_mut(d).for_each(|r| rms_norm_in_place(r, w, eps));
    });
}

/// `x[i] += y[i]` (the residual add), over the common length; split over `pool` for a
/// large batch.
pub fn add_assign(pool: &ThreadPool, x: &mut [f32], y: &[f32]) {
    let n = x.len().min(y.len());
    if n < PARALLEL_FLOATS || pool.n_threads() < 2 {
        add_assign_serial(&mut x[..n], &y[..n]);
        return;
    }
    let xs = DisjointSlice::new(&mut x[..n]);
    pool.parallel_for(n.div_ceil(PARALLEL_FLOATS / 4), 1, &|_, r| {
        let (a, b) = (r.start * (PARALLEL_FLOATS / 4), (r.end * (PARALLEL_FLOATS / 4)).min(n));
        // SAFETY: each range is claimed by one thread.
        add_assign_serial(unsafe { xs.range(a..b) }, &y[a..b]);
    });
}

/// `x[i] += y[i]` on the calling thread.
#[inline]
pub fn add_assign_serial(x: &mut [f32], y: &[f32]) {
    let n = x.len().min(y.len());
    #[cfg(target_arch = "x86_64")]
    if super::float_simd_available() {
        // SAFETY: AVX2 is present; both pointers are valid for `n` floats, `x` exclusive.
        unsafe { avx2::add_assign(x.as_mut_ptr(), y.as_ptr(), n) };
        return;
    }
    for (a, b) in x[..n].iter_mut().zip(&y[..n]) {
        *a += b;
    }
}

/// Rows per pool chunk for rows of `d` floats: about a quarter of [`PARALLEL_FLOATS`].
fn rows_per_chunk(d: usize) -> usize {
    (PARALLEL_FLOATS / 4 / d).max(1)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::inv_rms_portable`] with one 8-lane register: the same sums in the same order.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn inv_rms(x: &[f32], eps: f32) -> f32 {
        let chunks = x.chunks_exact(8);
        let tail = chunks.remainder();
        let mut acc = _mm256_setzero_ps();
        for c in chunks {
            // SAFETY: `c` holds 8 floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            // mul then add, as the portable loop (no FMA: it would round once, not twice).
            acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        super::finish_inv_rms(&lanes, tail, x.len(), eps)
    }

    /// `out[i] = x[i] * s * w[i]` for `i < n`, 16 lanes where AVX-512 F is present.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x`, `w` readable and `out` writable for `n` floats; `out`
    /// may equal `x` exactly (element i is read before it is written) but overlap nothing
    /// else.
    #[target_feature(enable = "avx2")]
    pub unsafe fn scale_mul(x: *const f32, s: f32, w: *const f32, out: *mut f32, n: usize) {
        let mut i = 0;
        if crate::ops::avx512_float_available() {
            // SAFETY: AVX-512 F is present (checked above); same contract.
            i = unsafe { scale_mul_avx512(x, s, w, out, n) };
        }
        // SAFETY (whole block): every access is at an index below n.
        unsafe {
            let sv = _mm256_set1_ps(s);
            while i + 8 <= n {
                let v = _mm256_mul_ps(_mm256_loadu_ps(x.add(i)), sv);
                _mm256_storeu_ps(out.add(i), _mm256_mul_ps(v, _mm256_loadu_ps(w.add(i))));
                i += 8;
            }
            while i < n {
                *out.add(i) = *x.add(i) * s * *w.add(i);
                i += 1;
            }
        }
    }

    /// The 16-lane part of [`scale_mul`]; returns how many elements it did.
    ///
    /// # Safety
    /// As [`scale_mul`], and the CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn scale_mul_avx512(x: *const f32, s: f32, w: *const f32, out: *mut f32, n: usize) -> usize {
        let sv = _mm512_set1_ps(s);
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n.
            unsafe {
                let v = _mm512_mul_ps(_mm512_loadu_ps(x.add(i)), sv);
                _mm512_storeu_ps(out.add(i), _mm512_mul_ps(v, _mm512_loadu_ps(w.add(i))));
            }
            i += 16;
        }
        i
    }

    /// The 16-lane part of [`add_assign`]; returns how many elements it did.
    ///
    /// # Safety
    /// As [`add_assign`], and the CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn add_assign_avx512(x: *mut f32, y: *const f32, n: usize) -> usize {
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n.
            unsafe { _mm512_storeu_ps(x.add(i), _mm512_add_ps(_mm512_loadu_ps(x.add(i)), _mm512_loadu_ps(y.add(i)))) };
            i += 16;
        }
        i
    }

    /// `x[i] += y[i]` for `i < n`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x` writable and `y` readable for `n` floats, not
    /// overlapping.
    #[target_feature(enable = "avx2")]
    pub unsafe fn add_assign(x: *mut f32, y: *const f32, n: usize) {
        let mut i = 0;
        if crate::ops::avx512_float_available() {
            // SAFETY: AVX-512 F is present (checked above); same contract.
            i = unsafe { add_assign_avx512(x, y, n) };
        }
        // SAFETY (whole block): every access is at an index below n.
        unsafe {
            while i + 16 <= n {
                let a = _mm256_add_ps(_mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(y.add(i)));
                let b = _mm256_add_ps(_mm256_loadu_ps(x.add(i + 8)), _mm256_loadu_ps(y.add(i + 8)));
                _mm256_storeu_ps(x.add(i), a);
                _mm256_storeu_ps(x.add(i + 8), b);
                i += 16;
            }
            while i < n {
                *x.add(i) += *y.add(i);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((((i as u32) ^ seed).wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0 - 1.0) * 3.0).collect()
    }

    #[test]
    fn matches_the_definition() {
        let x: Vec<f32> = (0..19).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..19).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut out = vec![0.0; 19];
        rms_norm(&x, &w, 1e-6, &mut out);
        let ms: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 19.0;
        for i in 0..19 {
            let want = x[i] as f64 / (ms + 1e-6).sqrt() * w[i] as f64;
            assert!((out[i] as f64 - want).abs() < 1e-6, "{i}: {} vs {want}", out[i]);
        }
        let mut y = x.clone();
        rms_norm_in_place(&mut y, &w, 1e-6);
        assert_eq!(y, out);
    }

    /// The dispatched bodies (AVX2, AVX-512 where present) give the portable bits, at every
    /// length from 0 to 70 and at model widths, at odd offsets.
    #[test]
    fn simd_bodies_give_the_portable_bits() {
        #[cfg(target_arch = "x86_64")]
        if !crate::ops::avx512_float_available() {
            println!("AVX-512 parts skipped: this CPU lacks avx512f (or OWL_AVX512=0 / OWL_KERNELS=scalar)");
        }
        for n in (0..=70).chain([576, 640, 896, 1024, 2048, 4095]) {
            let x = values(n + 1, 3);
            let (x, w) = (&x[1..], &values(n + 3, 7)[3..]);
            let inv = inv_rms(x, 1e-6);
            assert_eq!(inv.to_bits(), inv_rms_portable(x, 1e-6).to_bits(), "inv_rms n {n}");
            let mut got = vec![f32::NAN; n + 1];
            rms_norm(x, w, 1e-6, &mut got[..n]);
            assert!(got[n].is_nan(), "wrote past the end");
            let want: Vec<f32> = x.iter().zip(w).map(|(&v, &w)| v * inv * w).collect();
            assert_eq!(&got[..n], &want[..], "rms_norm n {n}");
            let mut y = x.to_vec();
            add_assign_serial(&mut y, w);
            let want: Vec<f32> = x.iter().zip(w).map(|(a, b)| a + b).collect();
            assert_eq!(y, want, "add n {n}");
        }
    }

    /// The batch ops give every row the single-row bits whether or not the pool splits them.
    #[test]
    fn batches_split_over_the_pool_give_the_row_bits() {
        let pool = ThreadPool::new(3);
        let d = 640;
        let rows = 2 * PARALLEL_FLOATS / d + 3;
        let x = values(rows * d, 11);
        let w = values(d, 5);
        let mut serial = vec![0.0; rows * d];
        for (xr, or) in x.chunks_exact(d).zip(serial.chunks_exact_mut(d)) {
            rms_norm(xr, &w, 1e-5, or);
        }
        let mut split = vec![0.0; rows * d];
        rms_norm_rows(&pool, &x, &w, 1e-5, &mut split);
        assert_eq!(split, serial);
        let mut in_place = x.clone();
        rms_norm_rows_in_place(&pool, &mut in_place, &w, 1e-5);
        assert_eq!(in_place, serial);
        let mut sum = x.clone();
        add_assign(&pool, &mut sum, &serial);
        let want: Vec<f32> = x.iter().zip(&serial).map(|(a, b)| a + b).collect();
        assert_eq!(sum, want);
    }
}
