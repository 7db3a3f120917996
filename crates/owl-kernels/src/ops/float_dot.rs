//! SIMD dot products of float weight rows (F32, F16, BF16, as raw little-endian bytes of
//! any alignment) with f32 activations. The scalar references are `quant::{f32, f16,
//! bf16}`; the dispatch table picks these on CPUs that have the features.

#[cfg(target_arch = "aarch64")]
pub mod neon;

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    /// Horizontal sum of 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Generates `$name::<N>(w, a: [&[f32]; N]) -> [f32; N]`: one weight row against `N`
    /// activation rows, each weight vector loaded (and widened) once. The weight element is
    /// `$bytes` bytes, loaded as 8 f32 lanes by `$load(ptr)`, one by one by `$one(ptr)`.
    /// Each column's arithmetic is the same for every `N` (two accumulators, then the tail),
    /// so column `t` equals the `N = 1` result bit for bit.
    macro_rules! float_dot {
        ($(#[$doc:meta])* $name:ident, $bytes:expr, $load:expr, $one:expr) => {
            $(#[$doc])*
            ///
            /// # Safety
            /// The CPU must support AVX2, FMA and F16C. `w` must hold at least as many
            /// elements as every `a[t]`, and all `a[t]` the same number.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $name<const N: usize>(w: &[u8], a: [&[f32]; N]) -> [f32; N] {
                let n = if N == 0 { 0 } else { a[0].len() };
                assert!(w.len() >= n * $bytes && a.iter().all(|a| a.len() == n));
                let wp = w.as_ptr();
                let ap = a.map(|a| a.as_ptr());
                let mut acc = [[_mm256_setzero_ps(); 2]; N];
                let mut i = 0;
                // SAFETY: every load is inside the first n elements of each row (asserted).
                unsafe {
                    while i + 16 <= n {
                        let w0 = $load(wp.add(i * $bytes));
                        let w1 = $load(wp.add((i + 8) * $bytes));
                        for t in 0..N {
                            acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(ap[t].add(i)), acc[t][0]);
                            acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(ap[t].add(i + 8)), acc[t][1]);
                        }
                        i += 16;
                    }
                    if i + 8 <= n {
                        let w0 = $load(wp.add(i * $bytes));
                        for t in 0..N {
                            acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(ap[t].add(i)), acc[t][0]);
                        }
                        i += 8;
                    }
                    let mut out = [0f32; N];
                    for t in 0..N {
                        let mut s = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
                        for j in i..n {
                            s += $one(wp.add(j * $bytes)) * *ap[t].add(j);
                        }
                        out[t] = s;
                    }
                    out
                }
            }
        };
    }

    /// Generates `$name::<RM, RN>(w: [&[u8]; RM], a: [&[f32]; RN]) -> [[f32; RN]; RM]`: a
    /// register tile of `RM` weight rows × `RN` activation rows (prefill). Each weight vector
    /// is loaded once for `RN` tokens and each activation vector once for `RM` rows, so the
    /// loop is bound by the FMAs rather than by L2 (3 × 4 uses 12 accumulators + 4 registers).
    macro_rules! float_tile {
        ($(#[$doc:meta])* $name:ident, $bytes:expr, $load:expr, $one:expr) => {
            $(#[$doc])*
            ///
            /// # Safety
            /// The CPU must support AVX2, FMA and F16C. Every `w[r]` must hold at least as
            /// many elements as every `a[t]`, and all `a[t]` the same number.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $name<const RM: usize, const RN: usize>(w: [&[u8]; RM], a: [&[f32]; RN]) -> [[f32; RN]; RM] {
                let n = if RN == 0 { 0 } else { a[0].len() };
                assert!(w.iter().all(|w| w.len() >= n * $bytes) && a.iter().all(|a| a.len() == n));
                let wp = w.map(|w| w.as_ptr());
                let ap = a.map(|a| a.as_ptr());
                let mut acc = [[_mm256_setzero_ps(); RN]; RM];
                let mut i = 0;
                // SAFETY: every load is inside the first n elements of each row (asserted).
                unsafe {
                    while i + 8 <= n {
                        let wv: [__m256; RM] = std::array::from_fn(|r| $load(wp[r].add(i * $bytes)));
                        for t in 0..RN {
                            let av = _mm256_loadu_ps(ap[t].add(i));
                            for r in 0..RM {
                                acc[r][t] = _mm256_fmadd_ps(wv[r], av, acc[r][t]);
                            }
                        }
                        i += 8;
                    }
                    let mut out = [[0f32; RN]; RM];
                    for (r, out_r) in out.iter_mut().enumerate() {
                        for (t, o) in out_r.iter_mut().enumerate() {
                            let mut s = hsum(acc[r][t]);
                            for j in i..n {
                                s += $one(wp[r].add(j * $bytes)) * *ap[t].add(j);
                            }
                            *o = s;
                        }
                    }
                    out
                }
            }
        };
    }

    float_tile!(
        /// Register tile over little-endian f32 weight bytes.
        tile_f32, 4, load_f32, one_f32
    );
    float_tile!(
        /// Register tile over IEEE half weight bytes.
        tile_f16, 2, load_f16, one_f16
    );
    float_tile!(
        /// Register tile over bfloat16 weight bytes.
        tile_bf16, 2, load_bf16, one_bf16
    );

    #[inline(always)]
    unsafe fn load_f32(p: *const u8) -> __m256 {
        // SAFETY: caller keeps 32 bytes in bounds; loadu has no alignment requirement.
        unsafe { _mm256_loadu_ps(p.cast()) }
    }
    #[inline(always)]
    unsafe fn one_f32(p: *const u8) -> f32 {
        // SAFETY: caller keeps 4 bytes in bounds.
        f32::from_le_bytes(unsafe { p.cast::<[u8; 4]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u8) -> __m256 {
        // SAFETY: 16 bytes in bounds; F16C is enabled in every caller.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    unsafe fn one_f16(p: *const u8) -> f32 {
        // SAFETY: 2 bytes in bounds.
        crate::quant::f16_to_f32(unsafe { p.cast::<[u8; 2]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u8) -> __m256 {
        // SAFETY: 16 bytes in bounds; bf16 is the top half of an f32.
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())), 16)) }
    }
    #[inline(always)]
    unsafe fn one_bf16(p: *const u8) -> f32 {
        // SAFETY: 2 bytes in bounds.
        let b = unsafe { p.cast::<[u8; 2]>().read_unaligned() };
        f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
    }

    float_dot!(
        /// Σ w·a for little-endian f32 weight bytes.
        dot_f32, 4, load_f32, one_f32
    );
    float_dot!(
        /// Σ w·a for IEEE half weight bytes (widened with F16C, exact).
        dot_f16, 2, load_f16, one_f16
    );
    float_dot!(
        /// Σ w·a for bfloat16 weight bytes (widened by a shift, exact).
        dot_bf16, 2, load_bf16, one_bf16
    );
}
