//! AVX2 dot products against the scalar references, for every weight format with an AVX2
//! kernel: random blocks (every quant value, extreme f16 scales), the real and random blocks
//! of the shared fixtures, and the multi-row (`vec_dot_n`) variants.
//!
//! Tolerances:
//! - 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL): the integer block sums are
//!   exact on both sides; only the order of the f32 per-block scaling and accumulation
//!   differs, so |avx2 − scalar| ≤ [`REL_TOL`] · Σ|w_i·a_i| (plus Σ|m·s| for the formats with
//!   a minimum). One wrong element would cost ~1/n of Σ|w·a| (≥ 1e-4 here), far above it.
//! - K-quants and IQ4_XS: the AVX2 kernels reduce each super-block to the same integers and
//!   then do the scalar code's float operations in its order: bit-identical results.
//! - `vec_dot_n::<N>` column t: bit-identical to `vec_dot(w, a[t])`.

use bytemuck::{Pod, Zeroable};
use owl_kernels::quant::{self, BlockFormat};

use crate::quant_common::{fixture_cases, Rng};
use crate::simd_common::{
    abs_dot, activation_row, as_bytes, avx2_available, blocks_from_bytes, dequant, random_bytes, random_scale,
};

/// Relative tolerance of the 32-element formats (see the module docs). Measured maximum on
/// these tests: printed by each test (≈ 1e-7).
const REL_TOL: f64 = 2e-6;

type Avx2Dot<W, A> = unsafe fn(&[W], &[A]) -> f32;
type Avx2DotN<W, A, const N: usize> = unsafe fn(&[W], [&[A]; N]) -> [f32; N];

/// One weight format's kernels and how to make test blocks for it.
struct Kernel<W: 'static, A: 'static> {
    format: BlockFormat,
    scalar: fn(&[W], &[A]) -> f32,
    avx2: Avx2Dot<W, A>,
    avx2_n4: Avx2DotN<W, A, 4>,
    avx2_n3: Avx2DotN<W, A, 3>,
    quantize_act: fn(&[f32], &mut [A]),
    /// Overwrites the random bytes of the f16 scale fields with [`random_scale`] values.
    patch_scales: fn(&mut W, &mut Rng),
    /// `Σ |m·s|` of the min term (Q4_1/Q5_1), 0 elsewhere.
    min_magnitude: fn(&[W], &[A]) -> f64,
    /// True where the AVX2 kernel promises the scalar result bit for bit.
    bit_exact: bool,
}

fn no_min<W, A>(_: &[W], _: &[A]) -> f64 {
    0.0
}

/// The K-quants with a minimum are checked bit for bit, so no extra magnitude is needed.
fn k_min_magnitude<W, A>(_: &[W], _: &[A]) -> f64 {
    0.0
}

/// Checks `avx2` (and the N-row variants) against `scalar` on one weight row and
/// activation row; returns |avx2 − scalar| / Σ|w·a|.
fn check_row<W: Pod, A: Pod + Zeroable>(k: &Kernel<W, A>, w: &[W], x: &[f32], what: &str) -> f64 {
    let act = k.format.vec_dot_format();
    let n = x.len();
    let mut a = vec![A::zeroed(); n / act.block_elems()];
    (k.quantize_act)(x, &mut a);
    let want = (k.scalar)(w, &a);
    // SAFETY: the caller checked avx2_available().
    let got = unsafe { (k.avx2)(w, &a) };

    if k.bit_exact {
        assert_eq!(got.to_bits(), want.to_bits(), "{:?} {what}: avx2 {got:e} vs scalar {want:e}", k.format);
    }
    let mag = abs_dot(&dequant(k.format, as_bytes(w), n), &dequant(act, as_bytes(&a), n)) + (k.min_magnitude)(w, &a);
    let err = (got as f64 - want as f64).abs();
    assert!(
        err <= REL_TOL * mag,
        "{:?} {what}: avx2 {got:e} vs scalar {want:e}: |Δ| {err:e} > {REL_TOL:e} · Σ|w·a| ({mag:e})",
        k.format
    );

    // Multi-row variants: each column equals the single-row kernel bit for bit.
    let mut others: Vec<Vec<A>> = Vec::new();
    for s in 1..4u64 {
        let mut rng = Rng::new(s ^ n as u64);
        let xs = activation_row(&mut rng, n, act.block_elems());
        let mut b = vec![A::zeroed(); a.len()];
        (k.quantize_act)(&xs, &mut b);
        others.push(b);
    }
    let rows4 = [&a[..], &others[0][..], &others[1][..], &others[2][..]];
    // SAFETY: as above.
    let got4 = unsafe { (k.avx2_n4)(w, rows4) };
    let got3 = unsafe { (k.avx2_n3)(w, [rows4[1], rows4[2], rows4[3]]) };
    for t in 0..4 {
        // SAFETY: as above.
        let single = unsafe { (k.avx2)(w, rows4[t]) };
        assert_eq!(got4[t].to_bits(), single.to_bits(), "{:?} {what}: vec_dot_n::<4> column {t}", k.format);
        if t > 0 {
            assert_eq!(
                got3[t - 1].to_bits(),
                single.to_bits(),
                "{:?} {what}: vec_dot_n::<3> column {}",
                k.format,
                t - 1
            );
        }
    }
    if mag > 0.0 {
        err / mag
    } else {
        0.0
    }
}

/// Random blocks (every quant value, extreme scales) of several row lengths, odd and even
/// block counts, and the fixture blocks of this format.
fn check_format<W: Pod, A: Pod + Zeroable>(k: &Kernel<W, A>, seed: u64) {
    if !avx2_available() {
        return;
    }
    let mut rng = Rng::new(seed);
    let be = k.format.block_elems();
    let (mut worst, mut rows) = (0.0f64, 0);
    let counts: &[usize] = if be == 32 { &[1, 2, 3, 8, 33, 128, 257] } else { &[1, 2, 3, 16, 33] };
    for &nb in counts {
        for rep in 0..4 {
            let mut w: Vec<W> = blocks_from_bytes(&random_bytes(&mut rng, nb * std::mem::size_of::<W>()));
            for b in &mut w {
                (k.patch_scales)(b, &mut rng);
            }
            let x = activation_row(&mut rng, nb * be, k.format.vec_dot_format().block_elems());
            worst = worst.max(check_row(k, &w, &x, &format!("random nb={nb} #{rep}")));
            rows += 1;
        }
    }
    for case in fixture_cases().into_iter().filter(|c| c.format == k.format) {
        let w: Vec<W> = blocks_from_bytes(&case.raw);
        let x = activation_row(&mut rng, w.len() * be, k.format.vec_dot_format().block_elems());
        worst = worst.max(check_row(k, &w, &x, &format!("fixture {}", case.kind)));
        // The fixture rows in odd-length pieces too (tail handling on real data).
        let cut = w.len() / 2 + 1;
        worst = worst.max(check_row(k, &w[..cut], &x[..cut * be], &format!("fixture {} first {cut}", case.kind)));
        rows += 2;
    }
    println!(
        "{:<7} {rows} rows: max |avx2 − scalar| / Σ|w·a| = {worst:.1e}{}",
        k.format.name(),
        if k.bit_exact { " (bit-identical asserted)" } else { "" }
    );
}

// --- per-format kernels ------------------------------------------------------------------

use quant::{iq4_nl, iq4_xs, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_1, q8_k};

fn q8_1_min_magnitude<W: Pod>(m: fn(&W) -> f32) -> impl Fn(&[W], &[q8_1::BlockQ8_1]) -> f64 {
    move |w, a| w.iter().zip(a).map(|(w, a)| (m(w) as f64 * a.s() as f64).abs()).sum()
}

#[test]
fn q8_0_avx2_matches_scalar() {
    check_format(
        &Kernel {
            format: BlockFormat::Q8_0,
            scalar: q8_0::vec_dot,
            avx2: q8_0::avx2::vec_dot,
            avx2_n4: q8_0::avx2::vec_dot_n::<4>,
            avx2_n3: q8_0::avx2::vec_dot_n::<3>,
            quantize_act: q8_0::quantize,
            patch_scales: |b, r| b.d = random_scale(r),
            min_magnitude: no_min,
            bit_exact: false,
        },
        0x5180,
    );
}

#[test]
fn q4_0_avx2_matches_scalar() {
    check_format(
        &Kernel {
            format: BlockFormat::Q4_0,
            scalar: q4_0::vec_dot,
            avx2: q4_0::avx2::vec_dot,
            avx2_n4: q4_0::avx2::vec_dot_n::<4>,
            avx2_n3: q4_0::avx2::vec_dot_n::<3>,
            quantize_act: q8_0::quantize,
            patch_scales: |b, r| b.d = random_scale(r),
            min_magnitude: no_min,
            bit_exact: false,
        },
        0x5140,
    );
}

#[test]
fn q4_1_avx2_matches_scalar() {
    check_format(
        &Kernel {
            format: BlockFormat::Q4_1,
            scalar: q4_1::vec_dot,
            avx2: q4_1::avx2::vec_dot,
            avx2_n4: q4_1::avx2::vec_dot_n::<4>,
            avx2_n3: q4_1::avx2::vec_dot_n::<3>,
            quantize_act: q8_1::quantize,
            patch_scales: |b, r| {
                b.d = random_scale(r);
                b.m = random_scale(r);
            },
            min_magnitude: |w, a| q8_1_min_magnitude(q4_1::BlockQ4_1::m)(w, a),
            bit_exact: false,
        },
        0x5141,
    );
}

#[test]
fn q5_0_avx2_matches_scalar() {
    check_format(
        &Kernel {
            format: BlockFormat::Q5_0,
            scalar: q5_0::vec_dot,
            avx2: q5_0::avx2::vec_dot,
            avx2_n4: q5_0::avx2::vec_dot_n::<4>,
            avx2_n3: q5_0::avx2::vec_dot_n::<3>,
            quantize_act: q8_0::quantize,
            patch_scales: |b, r| b.d = random_scale(r),
            min_magnitude: no_min,
            bit_exact: false,
        },
        0x5150,
    );
}

#[test]
fn q5_1_avx2_matches_scalar() {
    check_format(
        &Kernel {
            format: BlockFormat::Q5_1,
            scalar: q5_1::vec_dot,
            avx2: q5_1::avx2::vec_dot,
            avx2_n4: q5_1::avx2::vec_dot_n::<4>,
            avx2_n3: q5_1::avx2::vec_dot_n::<3>,
            quantize_act: q8_1::quantize,
            patch_scales: |b, r| {
                b.d = random_scale(r);
                b.m = random_scale(r);
            },
            min_magnitude: |w, a| q8_1_min_magnitude(q5_1::BlockQ5_1::m)(w, a),
            bit_exact: false,
        },
        0x5151,
    );
}

#[test]
fn iq4_nl_avx2_matches_scalar() {
    check_format(
        &Kernel {
            format: BlockFormat::IQ4_NL,
            scalar: iq4_nl::vec_dot,
            avx2: iq4_nl::avx2::vec_dot,
            avx2_n4: iq4_nl::avx2::vec_dot_n::<4>,
            avx2_n3: iq4_nl::avx2::vec_dot_n::<3>,
            quantize_act: q8_0::quantize,
            patch_scales: |b, r| b.d = random_scale(r),
            min_magnitude: no_min,
            bit_exact: false,
        },
        0x514e,
    );
}

#[test]
fn q4_k_avx2_matches_scalar_bit_for_bit() {
    check_format(
        &Kernel {
            format: BlockFormat::Q4_K,
            scalar: q4_k::vec_dot,
            avx2: q4_k::avx2::vec_dot,
            avx2_n4: q4_k::avx2::vec_dot_n::<4>,
            avx2_n3: q4_k::avx2::vec_dot_n::<3>,
            quantize_act: q8_k::quantize,
            patch_scales: |b, r| {
                b.d = random_scale(r);
                b.dmin = random_scale(r);
            },
            min_magnitude: k_min_magnitude,
            bit_exact: true,
        },
        0x514b,
    );
}

#[test]
fn q6_k_avx2_matches_scalar_bit_for_bit() {
    check_format(
        &Kernel {
            format: BlockFormat::Q6_K,
            scalar: q6_k::vec_dot,
            avx2: q6_k::avx2::vec_dot,
            avx2_n4: q6_k::avx2::vec_dot_n::<4>,
            avx2_n3: q6_k::avx2::vec_dot_n::<3>,
            quantize_act: q8_k::quantize,
            patch_scales: |b, r| b.d = random_scale(r),
            min_magnitude: no_min,
            bit_exact: true,
        },
        0x516b,
    );
}

#[test]
fn q5_k_avx2_matches_scalar_bit_for_bit() {
    check_format(
        &Kernel {
            format: BlockFormat::Q5_K,
            scalar: q5_k::vec_dot,
            avx2: q5_k::avx2::vec_dot,
            avx2_n4: q5_k::avx2::vec_dot_n::<4>,
            avx2_n3: q5_k::avx2::vec_dot_n::<3>,
            quantize_act: q8_k::quantize,
            patch_scales: |b, r| {
                b.d = random_scale(r);
                b.dmin = random_scale(r);
            },
            min_magnitude: k_min_magnitude,
            bit_exact: true,
        },
        0x515b,
    );
}

#[test]
fn q3_k_avx2_matches_scalar_bit_for_bit() {
    check_format(
        &Kernel {
            format: BlockFormat::Q3_K,
            scalar: q3_k::vec_dot,
            avx2: q3_k::avx2::vec_dot,
            avx2_n4: q3_k::avx2::vec_dot_n::<4>,
            avx2_n3: q3_k::avx2::vec_dot_n::<3>,
            quantize_act: q8_k::quantize,
            patch_scales: |b, r| b.d = random_scale(r),
            min_magnitude: no_min,
            bit_exact: true,
        },
        0x513b,
    );
}

#[test]
fn q2_k_avx2_matches_scalar_bit_for_bit() {
    check_format(
        &Kernel {
            format: BlockFormat::Q2_K,
            scalar: q2_k::vec_dot,
            avx2: q2_k::avx2::vec_dot,
            avx2_n4: q2_k::avx2::vec_dot_n::<4>,
            avx2_n3: q2_k::avx2::vec_dot_n::<3>,
            quantize_act: q8_k::quantize,
            patch_scales: |b, r| {
                b.d = random_scale(r);
                b.dmin = random_scale(r);
            },
            min_magnitude: k_min_magnitude,
            bit_exact: true,
        },
        0x512b,
    );
}

#[test]
fn iq4_xs_avx2_matches_scalar_bit_for_bit() {
    check_format(
        &Kernel {
            format: BlockFormat::IQ4_XS,
            scalar: iq4_xs::vec_dot,
            avx2: iq4_xs::avx2::vec_dot,
            avx2_n4: iq4_xs::avx2::vec_dot_n::<4>,
            avx2_n3: iq4_xs::avx2::vec_dot_n::<3>,
            quantize_act: q8_k::quantize,
            patch_scales: |b, r| b.d = random_scale(r),
            min_magnitude: no_min,
            bit_exact: true,
        },
        0x5145,
    );
}
