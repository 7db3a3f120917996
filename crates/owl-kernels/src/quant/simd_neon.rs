//! NEON building blocks shared by the per-format kernels in `quant/<format>/neon.rs`.
//!
//! The recipes are ggml's (`ggml-cpu/arch/arm/quants.c`), in their baseline form (no `dotprod`
//! extension, so they run on every AArch64 CPU): signed byte products widened to i16 by
//! `vmull_s8` / `vmull_high_s8` and pairs of them accumulated into i32 lanes by `vpadalq_s16`
//! (exact: one product is at most 128² = 2^14, a pair-sum cannot overflow i32 lanes); block
//! scales applied in f32, two blocks per iteration with one accumulator each.
//!
//! Soundness: Advanced SIMD (NEON) is architecturally mandatory on AArch64 and enabled by
//! every `aarch64-*` Rust target (the compile-time check below makes a build without it an
//! error), so the kernels are safe functions. Loads take fixed-size array references or
//! bounds-checked sub-slices, so nothing reads outside its argument.
//! (NEON intrinsics are `unsafe fn`s on the workspace MSRV 1.85 and safe to call from 1.87
//! on, which makes some `unsafe` blocks redundant there; hence the `unused_unsafe` allowance.)

#![allow(unused_unsafe)]

use std::arch::aarch64::*;

#[cfg(not(target_feature = "neon"))]
compile_error!("owl-kernels' aarch64 kernels need the `neon` target feature (on by default on AArch64)");

/// 16 bytes.
#[inline(always)]
pub(crate) fn load_u8x16(b: &[u8; 16]) -> uint8x16_t {
    // SAFETY: reads exactly the 16 bytes of `b` (`ld1` has no alignment requirement); NEON is
    // always present (module docs).
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// 16 bytes starting at `s[off]` (bounds-checked; constant offsets fold the check away).
#[inline(always)]
pub(crate) fn load_u8x16_at(s: &[u8], off: usize) -> uint8x16_t {
    let b = &s[off..off + 16];
    // SAFETY: `b` is exactly 16 bytes long; NEON is always present.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// 16 signed bytes starting at `s[off]` (bounds-checked).
#[inline(always)]
pub(crate) fn load_i8x16_at(s: &[i8], off: usize) -> int8x16_t {
    let b = &s[off..off + 16];
    // SAFETY: `b` is exactly 16 bytes long; NEON is always present.
    unsafe { vld1q_s8(b.as_ptr()) }
}

/// 8 i16 starting at `s[off]` (bounds-checked).
#[inline(always)]
pub(crate) fn load_i16x8_at(s: &[i16], off: usize) -> int16x8_t {
    let b = &s[off..off + 8];
    // SAFETY: `b` is exactly 8 elements long; NEON is always present.
    unsafe { vld1q_s16(b.as_ptr()) }
}

/// The low and high nibbles of 16 bytes, each in 0..16: byte `j` of a 32-element Q4 block
/// holds element `j` (low) and `j + 16` (high).
#[inline(always)]
pub(crate) fn nibbles(b: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: register-only intrinsics; NEON is always present.
    unsafe {
        let v = load_u8x16(b);
        (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
    }
}

/// `acc + Σ a·b` over 16 signed byte pairs, in four i32 lanes (each lane sums four products).
/// Exact for every input, `-128` included (ggml's `ggml_vdotq_s32` without `dotprod`).
#[inline(always)]
pub(crate) fn dot_i8x16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: register-only intrinsics; NEON is always present.
    unsafe {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// Σ a·b over 32 signed byte pairs given as two halves, in four i32 lanes.
#[inline(always)]
pub(crate) fn dot_i8x32(a: (int8x16_t, int8x16_t), b: (int8x16_t, int8x16_t)) -> int32x4_t {
    // SAFETY: register-only intrinsic; NEON is always present.
    dot_i8x16(dot_i8x16(unsafe { vdupq_n_s32(0) }, a.0, b.0), a.1, b.1)
}

/// The 32 activation quants of a Q8_0/Q8_1 block as two halves (elements 0..16, 16..32).
#[inline(always)]
pub(crate) fn halves_i8x32(q: &[i8; 32]) -> (int8x16_t, int8x16_t) {
    (load_i8x16_at(q, 0), load_i8x16_at(q, 16))
}

/// Unsigned bytes below 128 (nibbles, 5-bit quants) as signed lanes (same bits).
#[inline(always)]
pub(crate) fn as_i8(v: uint8x16_t) -> int8x16_t {
    // SAFETY: a bit cast; NEON is always present.
    unsafe { vreinterpretq_s8_u8(v) }
}

/// `v − k` for lanes `v` in 0..=255 read as signed bytes (quant offsets: 8, 16, 32).
#[inline(always)]
pub(crate) fn sub_offset(v: uint8x16_t, k: i8) -> int8x16_t {
    // SAFETY: register-only intrinsics; NEON is always present.
    unsafe { vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(k)) }
}

/// Σ over 32-element blocks of `dot(w_i, a_i)`: per block the four i32 lanes of the block's
/// integer sum and the product of the two scales (`d_w·d_a`, computed as the scalar code
/// does); the lanes are converted to f32 and accumulated with FMA, two blocks per iteration
/// in two accumulators, summed across lanes at the end (ggml's NEON `vec_dot_q*_q8_*`
/// structure). Only the order of the float operations differs from the scalar reference.
#[inline(always)]
pub(crate) fn sum_scaled_blocks<W, A>(w: &[W], a: &[A], block: impl Fn(&W, &A) -> (int32x4_t, f32)) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    let nb = w.len().min(a.len());
    let (w, a) = (&w[..nb], &a[..nb]);
    // SAFETY: register-only intrinsics; NEON is always present.
    unsafe {
        let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let (wp, ap) = (w.chunks_exact(2), a.chunks_exact(2));
        let (wt, at) = (wp.remainder(), ap.remainder());
        for (x, y) in wp.zip(ap) {
            let (p0, d0) = block(&x[0], &y[0]);
            let (p1, d1) = block(&x[1], &y[1]);
            acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(p0), d0);
            acc1 = vfmaq_n_f32(acc1, vcvtq_f32_s32(p1), d1);
        }
        if let (Some(x), Some(y)) = (wt.first(), at.first()) {
            let (p0, d0) = block(x, y);
            acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(p0), d0);
        }
        vaddvq_f32(vaddq_f32(acc0, acc1))
    }
}

/// The 8 six-bit scales and 8 mins of a Q4_K/Q5_K super-block, unpacked from their 12
/// bytes with 32-bit masks (ggml's `utmp`/`kmask` trick); byte `j` of each equals
/// `get_scale_min_k4(j, packed)`.
#[inline(always)]
pub(crate) fn k4_scales_mins(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let word = |k: usize| u32::from_le_bytes([packed[4 * k], packed[4 * k + 1], packed[4 * k + 2], packed[4 * k + 3]]);
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let sc_lo = u0 & KMASK1;
    let sc_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let m_lo = u1 & KMASK1;
    let m_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let join = |lo: u32, hi: u32| {
        let (l, h) = (lo.to_le_bytes(), hi.to_le_bytes());
        [l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]]
    };
    (join(sc_lo, sc_hi), join(m_lo, m_hi))
}

/// `Σ_j m[j]·(bsums[2j] + bsums[2j+1])` over the 8 sub-blocks of 32 (the K-quants' min
/// term): pairs of Q8_K block sums widened to i32 as they are added (`vpaddlq_s16`, so any
/// i16 values are exact, not only the ≤ 16·128 a quantizer writes), times the mins in i32.
#[inline(always)]
pub(crate) fn mins_dot_bsums(mins: &[u8; 8], bsums: &[i16; 16]) -> i32 {
    // SAFETY: loads of exactly 8 bytes / 16 i16 from the arrays; NEON is always present.
    unsafe {
        let (s_lo, s_hi) = (vpaddlq_s16(load_i16x8_at(bsums, 0)), vpaddlq_s16(load_i16x8_at(bsums, 8)));
        let m = vmovl_u8(vld1_u8(mins.as_ptr()));
        let (m_lo, m_hi) =
            (vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(m))), vreinterpretq_s32_u32(vmovl_high_u16(m)));
        vaddvq_s32(vmlaq_s32(vmulq_s32(m_lo, s_lo), m_hi, s_hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q4_k::get_scale_min_k4;

    #[test]
    fn k4_unpacking_matches_get_scale_min_k4() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            let mut packed = [0u8; 12];
            for b in &mut packed {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = (state >> 32) as u8;
            }
            let (sc, m) = k4_scales_mins(&packed);
            for j in 0..8 {
                assert_eq!((sc[j], m[j]), get_scale_min_k4(j, &packed), "{packed:?} sub-block {j}");
            }
        }
    }

    #[test]
    fn byte_dot_is_exact_at_the_extremes() {
        let a = [-128i8; 16];
        let b = [-128i8; 16];
        let mut out = [0i32; 4];
        // SAFETY: register-only intrinsic; NEON is always present.
        let zero = unsafe { vdupq_n_s32(0) };
        let p = dot_i8x16(zero, load_i8x16_at(&a, 0), load_i8x16_at(&b, 0));
        // SAFETY: stores exactly 4 i32 into `out`.
        unsafe { vst1q_s32(out.as_mut_ptr(), p) };
        assert_eq!(out, [4 * 16384; 4]);
        let bs: [i16; 16] = std::array::from_fn(|i| if i % 2 == 0 { i16::MIN } else { i16::MAX - i as i16 });
        let m: [u8; 8] = std::array::from_fn(|j| 63 - j as u8);
        let want: i32 = (0..8).map(|j| m[j] as i32 * (bs[2 * j] as i32 + bs[2 * j + 1] as i32)).sum();
        assert_eq!(mins_dot_bsums(&m, &bs), want);
    }
}

/// The harness of the NEON kernels' unit tests: a kernel against its scalar reference on
/// reference-quantized rows and on rows of random bytes (every quant value, -128 included,
/// with finite random scales), for block counts with and without an odd tail.
#[cfg(test)]
pub(crate) mod testing {
    use bytemuck::{Pod, Zeroable};

    use crate::quant::{dequantize_row, quantize_row, test_rows, test_values, BlockFormat};

    /// Relative tolerance of the kernels that reassociate the per-block float scaling:
    /// |neon − scalar| ≤ REL_TOL · (Σ|w·a| + the min term's magnitude, Q4_1). The integer block sums are exact, so a
    /// single wrong element would cost about 1/n of Σ|w·a| (≥ 2e-4 here), far above it.
    pub(crate) const REL_TOL: f64 = 2e-6;

    /// One weight format's NEON kernel and its reference.
    pub(crate) struct Case<W: 'static, A: 'static> {
        pub format: BlockFormat,
        pub scalar: fn(&[W], &[A]) -> f32,
        pub neon: fn(&[W], &[A]) -> f32,
        /// What Σ|w·a| misses of the magnitude of the terms the kernel adds (Q4_1: its two
        /// terms per block, see there), 0 where nothing.
        pub min_magnitude: fn(&[W], &[A]) -> f64,
        /// Whether the kernel promises the scalar result bit for bit.
        pub bit_exact: bool,
    }

    pub(crate) fn no_min<W, A>(_: &[W], _: &[A]) -> f64 {
        0.0
    }

    /// What a run compared: rows pairs, and the largest |neon − scalar| / magnitude.
    #[derive(Debug)]
    pub(crate) struct Report {
        pub pairs: usize,
        pub worst_rel: f64,
    }

    /// Byte offsets of the scale fields of a block (`true`: an f32, else an f16), so that
    /// random bytes can be given finite scales.
    fn scale_fields(format: BlockFormat) -> &'static [(usize, bool)] {
        match format {
            BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0 => &[(0, false)],
            BlockFormat::Q4_1 | BlockFormat::Q8_1 | BlockFormat::Q4_K => &[(0, false), (2, false)],
            BlockFormat::Q6_K => &[(208, false)],
            BlockFormat::Q8_K => &[(0, true)],
            other => panic!("no NEON test layout for {other:?}"),
        }
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// ±(1 + u)·2^e, e in -12..=0: finite, products far from overflow.
        fn scale(&mut self) -> f32 {
            let r = self.next();
            let e = -(((r >> 8) % 13) as i32);
            let v = (1.0 + (r >> 40) as f32 / (1u64 << 24) as f32) * 2f32.powi(e);
            if r & 1 == 0 {
                v
            } else {
                -v
            }
        }
    }

    /// `nb` blocks of random bytes with random finite scales.
    fn random_blocks<T: Pod + Zeroable>(format: BlockFormat, nb: usize, rng: &mut Rng) -> Vec<T> {
        let mut v = vec![T::zeroed(); nb];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
        for b in bytes.iter_mut() {
            *b = rng.next() as u8;
        }
        for block in bytes.chunks_exact_mut(format.block_bytes()) {
            for &(off, is_f32) in scale_fields(format) {
                let s = rng.scale();
                if is_f32 {
                    block[off..off + 4].copy_from_slice(&s.to_le_bytes());
                } else {
                    block[off..off + 2].copy_from_slice(&crate::quant::f32_to_f16(s));
                }
            }
        }
        v
    }

    /// `x` quantized by the reference quantizer into blocks of `T`.
    fn quantized<T: Pod + Zeroable>(format: BlockFormat, x: &[f32]) -> Vec<T> {
        let mut v = vec![T::zeroed(); x.len() / format.block_elems()];
        quantize_row(format, x, bytemuck::cast_slice_mut(&mut v)).expect("quantize");
        v
    }

    fn dequantized<T: Pod>(format: BlockFormat, blocks: &[T]) -> Vec<f32> {
        let bytes: &[u8] = bytemuck::cast_slice(blocks);
        let mut out = vec![0f32; bytes.len() / format.block_bytes() * format.block_elems()];
        dequantize_row(format, bytes, &mut out).expect("dequantize");
        out
    }

    /// Runs `c` on every weight row × activation row of several lengths; panics on the first
    /// pair out of tolerance (or not bit-identical where promised).
    pub(crate) fn run<W: Pod + Zeroable, A: Pod + Zeroable>(c: &Case<W, A>) -> Report {
        let act = c.format.vec_dot_format();
        let block = c.format.block_elems();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ c.format as u64);
        let block_counts: &[usize] = if block == 32 { &[1, 2, 3, 8, 33, 128] } else { &[1, 2, 3, 16] };
        let mut report = Report { pairs: 0, worst_rel: 0.0 };
        for &nb in block_counts {
            let n = nb * block;
            let seed = |k: u64| (nb as u64) << 8 | k | 1;
            let mut weights: Vec<Vec<W>> = Vec::new();
            for (k, scale) in [(1, 1.0f32), (2, 1e-3), (3, 300.0)] {
                let (bytes, _) = test_rows(c.format, &test_values(n, seed(k), 0.5, scale), 1, n);
                let mut w = vec![W::zeroed(); nb];
                bytemuck::cast_slice_mut::<W, u8>(&mut w).copy_from_slice(&bytes);
                weights.push(w);
            }
            // Skewed values (all positive: the K-quants' mins), a lone spike, all zero.
            weights.push(quantized(c.format, &test_values(n, seed(4), 0.0, 2.0)));
            let mut spike = vec![0f32; n];
            spike[n / 2 + 1] = -7.5;
            weights.push(quantized(c.format, &spike));
            weights.push(quantized(c.format, &vec![0f32; n]));
            for _ in 0..4 {
                weights.push(random_blocks(c.format, nb, &mut rng));
            }
            let mut acts: Vec<Vec<A>> = vec![
                quantized(act, &test_values(n, seed(5), 0.5, 1.0)),
                quantized(act, &test_values(n, seed(6), 0.1, 50.0)),
                quantized(act, &vec![0f32; n]),
            ];
            for _ in 0..3 {
                acts.push(random_blocks(act, nb, &mut rng));
            }
            for (wi, w) in weights.iter().enumerate() {
                let wf = dequantized(c.format, w);
                for (ai, a) in acts.iter().enumerate() {
                    let want = (c.scalar)(w, a);
                    let got = (c.neon)(w, a);
                    let what = format!("{:?}, {nb} blocks, weight row {wi}, activation row {ai}", c.format);
                    if c.bit_exact {
                        assert_eq!(got.to_bits(), want.to_bits(), "{what}: neon {got:e} vs scalar {want:e}");
                    }
                    let af = dequantized(act, a);
                    let mag: f64 = wf.iter().zip(&af).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum::<f64>()
                        + (c.min_magnitude)(w, a);
                    let err = (got as f64 - want as f64).abs();
                    assert!(
                        err <= REL_TOL * mag,
                        "{what}: neon {got:e} vs scalar {want:e} (|Δ| {err:e}, Σ|w·a| {mag:e})"
                    );
                    if mag > 0.0 {
                        report.worst_rel = report.worst_rel.max(err / mag);
                    }
                    report.pairs += 1;
                }
            }
        }
        eprintln!(
            "{:?} neon vs scalar: {} row pairs, worst |Δ|/Σ|w·a| = {:e}",
            c.format, report.pairs, report.worst_rel
        );
        report
    }
}
