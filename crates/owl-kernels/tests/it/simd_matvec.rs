//! The multi-row decode kernels (`quant::<format>::avx2::vec_dot_rows::<R>`: R consecutive
//! weight rows · one activation row) against the one-row AVX2 kernels and the scalar
//! references, and the matmul driver's one-token path that uses them.
//!
//! Tolerances:
//! - `vec_dot_rows::<R>` row r is **bit-identical** to `avx2::vec_dot(row r, a)`: the same
//!   integer block sums and the same float operations in the same order (asserted for every R
//!   in 1..=4 and every start row of a matrix, so each row is checked in every slot).
//! - against the scalar reference: |Δ| ≤ 2e-6 · Σ|w·a| (+ Σ|m·s| for Q4_1), as the one-row
//!   32-element kernels are checked in `simd_dot` (K-quants: bit-identical).
//! - `matmul_with` (AVX2 table, one token, 1..=9 rows: whole groups of 4 and every tail)
//!   equals `FormatKernels::vec_dot` of each row bit for bit.
//!
//! Data: random blocks (every quant value, extreme f16 scales), odd and even block counts, and
//! the real/random blocks of the shared fixtures laid out as matrices.

use bytemuck::{Pod, Zeroable};
use owl_kernels::dispatch::{self, Isa};
use owl_kernels::ops::matmul::{matmul_with, Matrix};
use owl_kernels::quant::{self, BlockFormat};
use owl_kernels::ThreadPool;

use crate::quant_common::{fixture_cases, Rng};
use crate::simd_common::{
    abs_dot, activation_row, as_bytes, avx2_available, blocks_from_bytes, dequant, random_bytes, random_scale,
};

use quant::{q4_0, q4_1, q4_k, q5_0, q8_0, q8_1, q8_k};

const REL_TOL: f64 = 2e-6;

type Rows<W, A, const R: usize> = unsafe fn(&[W], &[A]) -> [f32; R];

/// One weight format's multi-row kernels and how to make test blocks for it.
struct Kernels<W: 'static, A: 'static> {
    format: BlockFormat,
    scalar: fn(&[W], &[A]) -> f32,
    avx2: unsafe fn(&[W], &[A]) -> f32,
    rows1: Rows<W, A, 1>,
    rows2: Rows<W, A, 2>,
    rows3: Rows<W, A, 3>,
    rows4: Rows<W, A, 4>,
    quantize_act: fn(&[f32], &mut [A]),
    patch_scales: fn(&mut W, &mut Rng),
    /// `Σ |m·s|` of a row's min term (Q4_1), 0 elsewhere.
    min_magnitude: fn(&[W], &[A]) -> f64,
}

/// The [`Kernels`] of one format module: its scalar and AVX2 one-row dots, its 1–4-row
/// kernels and its activation quantizer.
macro_rules! kernels {
    ($m:ident, $format:ident, $act:ident, $patch:expr, $min:expr) => {
        Kernels {
            format: BlockFormat::$format,
            scalar: $m::vec_dot,
            avx2: $m::avx2::vec_dot,
            rows1: $m::avx2::vec_dot_rows::<1>,
            rows2: $m::avx2::vec_dot_rows::<2>,
            rows3: $m::avx2::vec_dot_rows::<3>,
            rows4: $m::avx2::vec_dot_rows::<4>,
            quantize_act: $act::quantize,
            patch_scales: $patch,
            min_magnitude: $min,
        }
    };
}

/// Every window of `R` consecutive rows of `w` (`n_rows` rows of `nb` blocks) through
/// `rows`, each output bit-compared with the one-row kernel.
fn check_windows<W: Pod, A: Pod, const R: usize>(
    k: &Kernels<W, A>,
    rows: Rows<W, A, R>,
    w: &[W],
    nb: usize,
    a: &[A],
    single: &[f32],
    what: &str,
) {
    let n_rows = w.len() / nb;
    for s in 0..=n_rows.saturating_sub(R) {
        if s + R > n_rows {
            break;
        }
        // SAFETY: the caller checked avx2_available().
        let got = unsafe { rows(&w[s * nb..(s + R) * nb], a) };
        for (j, g) in got.iter().enumerate() {
            assert_eq!(
                g.to_bits(),
                single[s + j].to_bits(),
                "{:?} {what}: vec_dot_rows::<{R}> from row {s}, row {j}: {g:e} vs vec_dot {:e}",
                k.format,
                single[s + j]
            );
        }
    }
}

/// A matrix of `n_rows` rows of `nb` blocks against one activation row: every window size
/// and position bit-compared with the one-row kernel, which is compared with the scalar
/// reference. Returns the largest |avx2 − scalar| / Σ|w·a|.
fn check_matrix<W: Pod, A: Pod + Zeroable>(k: &Kernels<W, A>, w: &[W], nb: usize, x: &[f32], what: &str) -> f64 {
    let act = k.format.vec_dot_format();
    let n = x.len();
    let mut a = vec![A::zeroed(); n / act.block_elems()];
    (k.quantize_act)(x, &mut a);
    let a_deq = dequant(act, as_bytes(&a), n);
    let mut worst = 0.0f64;
    let single: Vec<f32> = w
        .chunks_exact(nb)
        .enumerate()
        .map(|(r, row)| {
            // SAFETY: the caller checked avx2_available().
            let got = unsafe { (k.avx2)(row, &a) };
            let want = (k.scalar)(row, &a);
            let mag = abs_dot(&dequant(k.format, as_bytes(row), n), &a_deq) + (k.min_magnitude)(row, &a);
            let err = (got as f64 - want as f64).abs();
            assert!(
                err <= REL_TOL * mag,
                "{:?} {what} row {r}: avx2 {got:e} vs scalar {want:e}: |Δ| {err:e} > {REL_TOL:e} · {mag:e}",
                k.format
            );
            if mag > 0.0 {
                worst = worst.max(err / mag);
            }
            got
        })
        .collect();
    check_windows(k, k.rows1, w, nb, &a, &single, what);
    check_windows(k, k.rows2, w, nb, &a, &single, what);
    check_windows(k, k.rows3, w, nb, &a, &single, what);
    check_windows(k, k.rows4, w, nb, &a, &single, what);
    worst
}

/// Random matrices (1..=9 rows, several block counts) and the fixture blocks as matrices.
fn check_format<W: Pod, A: Pod + Zeroable>(k: &Kernels<W, A>, seed: u64) {
    if !avx2_available() {
        return;
    }
    let mut rng = Rng::new(seed);
    let be = k.format.block_elems();
    let counts: &[usize] = if be == 32 { &[1, 2, 3, 18, 28, 33, 128] } else { &[1, 2, 3, 6, 19] };
    let (mut worst, mut cases) = (0.0f64, 0);
    for &nb in counts {
        for n_rows in [1, 2, 3, 4, 5, 7, 9] {
            let mut w: Vec<W> = blocks_from_bytes(&random_bytes(&mut rng, n_rows * nb * std::mem::size_of::<W>()));
            for b in &mut w {
                (k.patch_scales)(b, &mut rng);
            }
            let x = activation_row(&mut rng, nb * be, k.format.vec_dot_format().block_elems());
            worst = worst.max(check_matrix(k, &w, nb, &x, &format!("random {n_rows}x{nb} blocks")));
            cases += 1;
        }
    }
    for case in fixture_cases().into_iter().filter(|c| c.format == k.format) {
        let w: Vec<W> = blocks_from_bytes(&case.raw);
        // The fixture's blocks as matrices of several shapes (odd row lengths, tail rows).
        for nb in [1, 2, 3, 5] {
            let n_rows = w.len() / nb;
            if n_rows == 0 {
                continue;
            }
            let x = activation_row(&mut rng, nb * be, k.format.vec_dot_format().block_elems());
            let what = format!("fixture {} as {n_rows}x{nb} blocks", case.kind);
            worst = worst.max(check_matrix(k, &w[..n_rows * nb], nb, &x, &what));
            cases += 1;
        }
    }
    println!(
        "{:<5} {cases} matrices: vec_dot_rows bit-identical to vec_dot; max |avx2 − scalar| / Σ|w·a| = {worst:.1e}",
        k.format.name()
    );
}

fn q4_1_min_magnitude(w: &[q4_1::BlockQ4_1], a: &[q8_1::BlockQ8_1]) -> f64 {
    w.iter().zip(a).map(|(w, a)| (w.m() as f64 * a.s() as f64).abs()).sum()
}

fn no_min<W, A>(_: &[W], _: &[A]) -> f64 {
    0.0
}

#[test]
fn q4_0_rows_match_single_row_kernel() {
    check_format(&kernels!(q4_0, Q4_0, q8_0, |b, r| b.d = random_scale(r), no_min), 0x4d40);
}

#[test]
fn q4_1_rows_match_single_row_kernel() {
    check_format(
        &kernels!(
            q4_1,
            Q4_1,
            q8_1,
            |b, r| {
                b.d = random_scale(r);
                b.m = random_scale(r);
            },
            q4_1_min_magnitude
        ),
        0x4d41,
    );
}

#[test]
fn q5_0_rows_match_single_row_kernel() {
    check_format(&kernels!(q5_0, Q5_0, q8_0, |b, r| b.d = random_scale(r), no_min), 0x4d50);
}

#[test]
fn q8_0_rows_match_single_row_kernel() {
    check_format(&kernels!(q8_0, Q8_0, q8_0, |b, r| b.d = random_scale(r), no_min), 0x4d08);
}

#[test]
fn q4_k_rows_match_single_row_kernel() {
    check_format(
        &kernels!(
            q4_k,
            Q4_K,
            q8_k,
            |b, r| {
                b.d = random_scale(r);
                b.dmin = random_scale(r);
            },
            no_min
        ),
        0x4d4b,
    );
}

/// The driver's one-token path (multi-row kernel in groups of 4, then the tail rows) equals
/// the one-row kernel of the same table for every row, for every row count up to 9 and
/// several column counts; and the formats with a multi-row kernel say so.
#[test]
fn matvec_driver_equals_row_kernel() {
    if !avx2_available() {
        return;
    }
    let table = dispatch::table(Isa::Avx2).expect("avx2 table");
    let pool = ThreadPool::new(1);
    let mut rng = Rng::new(0x4d56);
    for format in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q5_0, BlockFormat::Q8_0, BlockFormat::Q4_K] {
        let k = table.get(format).expect("kernels");
        assert!(k.has_multi_row_matvec(), "{format:?} has a multi-row matvec kernel");
        let be = format.block_elems();
        for blocks in [1, 3, 18] {
            let cols = blocks * be;
            for rows in 1..=9 {
                let src = rng.gaussian_row(rows * cols, 1.0);
                let rb = format.row_bytes(cols).expect("row bytes");
                let mut data = vec![0u8; rows * rb];
                for (s, d) in src.chunks_exact(cols).zip(data.chunks_exact_mut(rb)) {
                    quant::quantize_row(format, s, d).expect("quantize");
                }
                let x = activation_row(&mut rng, cols, be);
                let mut y = vec![0f32; rows];
                matmul_with(table, &pool, &Matrix::new(format, rows, cols, &data), &x, 1, &mut y).expect("matmul");
                let act_format = k.act_format();
                // Q8_K activations hold an f32: quantize into 4-byte aligned storage.
                let mut act = vec![0u32; act_format.row_bytes(cols).expect("act row").div_ceil(4)];
                let act_bytes =
                    &mut bytemuck::cast_slice_mut::<u32, u8>(&mut act)[..act_format.row_bytes(cols).expect("act row")];
                k.quantize_act(&x, act_bytes).expect("quantize act");
                for r in 0..rows {
                    let want = k.vec_dot(&data[r * rb..(r + 1) * rb], act_bytes);
                    assert_eq!(y[r].to_bits(), want.to_bits(), "{format:?} {rows}x{cols} row {r}: {} vs {want}", y[r]);
                }
            }
        }
    }
}

/// A/B of the decode kernels on one thread (a measurement, not a check): the one-row kernel
/// per row against `vec_dot_rows` in groups of 2 and 4, alternating within each round (on-CPU
/// time of the best round), on an L2-resident matrix ("hot") and a ~96 MiB one (3× the LLC,
/// streamed from DRAM), for the column counts of the demo models. GB/s of weight bytes.
/// `cargo test --release -p owl-kernels --test it matvec_rows_ab -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
fn matvec_rows_ab() {
    if !avx2_available() {
        return;
    }
    fn run<W: Pod, A: Pod + Zeroable>(k: &Kernels<W, A>, fix: fn(&mut W)) {
        let be = k.format.block_elems();
        let mut rng = Rng::new(0xab);
        for cols in [576, 896, 1536, 4096, 4864] {
            if cols % be != 0 {
                continue;
            }
            let nb = cols / be;
            let row_bytes = nb * std::mem::size_of::<W>();
            let x = activation_row(&mut rng, cols, k.format.vec_dot_format().block_elems());
            let mut a = vec![A::zeroed(); nb];
            (k.quantize_act)(&x, &mut a);
            let mut line = format!("{:<5} cols {cols:>4}", k.format.name());
            for (label, target) in [("hot", 256usize << 10), ("streamed", 96 << 20)] {
                let rows = (target / row_bytes).max(4) / 4 * 4;
                let mut w: Vec<W> = blocks_from_bytes(&random_bytes(&mut rng, rows * row_bytes));
                w.iter_mut().for_each(fix);
                let mut y = vec![0f32; rows];
                // SAFETY (all three): avx2_available() was checked above.
                let mut one = || {
                    for (o, r) in y.iter_mut().zip(w.chunks_exact(nb)) {
                        *o = unsafe { (k.avx2)(r, &a) };
                    }
                    y[0]
                };
                let mut y2 = vec![0f32; rows];
                let mut two = || {
                    for (o, r) in y2.chunks_exact_mut(2).zip(w.chunks_exact(2 * nb)) {
                        o.copy_from_slice(&unsafe { (k.rows2)(r, &a) });
                    }
                    y2[0]
                };
                let mut y4 = vec![0f32; rows];
                let mut four = || {
                    for (o, r) in y4.chunks_exact_mut(4).zip(w.chunks_exact(4 * nb)) {
                        o.copy_from_slice(&unsafe { (k.rows4)(r, &a) });
                    }
                    y4[0]
                };
                let bytes = rows * row_bytes;
                let t = crate::simd_bench::time_passes(&mut [&mut one, &mut two, &mut four], bytes);
                let gbs = |s: f64| bytes as f64 / s / 1e9;
                line += &format!(
                    " | {label}: 1 row {:5.2}, 2 rows {:5.2}, 4 rows {:5.2} GB/s",
                    gbs(t[0]),
                    gbs(t[1]),
                    gbs(t[2])
                );
            }
            println!("{line}");
        }
    }
    run(&kernels!(q4_0, Q4_0, q8_0, |_, _| {}, no_min), |b| b.d = quant::f32_to_f16(0.01));
    run(&kernels!(q4_1, Q4_1, q8_1, |_, _| {}, no_min), |b| {
        b.d = quant::f32_to_f16(0.01);
        b.m = quant::f32_to_f16(0.01);
    });
    run(&kernels!(q5_0, Q5_0, q8_0, |_, _| {}, no_min), |b| b.d = quant::f32_to_f16(0.01));
    run(&kernels!(q8_0, Q8_0, q8_0, |_, _| {}, no_min), |b| b.d = quant::f32_to_f16(0.01));
    run(&kernels!(q4_k, Q4_K, q8_k, |_, _| {}, no_min), |b| {
        b.d = quant::f32_to_f16(0.01);
        b.dmin = quant::f32_to_f16(0.01);
    });
}
