//! AVX2 row dequantization (`quant::dequantize_avx2`) against the scalar reference, bit
//! for bit: random rows of every length class, raw random bytes (Inf/NaN scales too), the
//! gguf-py fixtures; and the float32-activation matmul that uses those kernels (fused
//! one-token dot and panels) against scalar dequantization followed by the AVX2 float dot.

use owl_kernels::dispatch::{self, Isa};
use owl_kernels::ops::float_dot::avx2::{dot_f32, tile_f32};
use owl_kernels::ops::{matmul_with, ActivationPrecision, Matrix};
use owl_kernels::quant::{self, dequantize_avx2, BlockFormat};
use owl_kernels::ThreadPool;

use crate::quant_common::{fixture_cases, Rng};
use crate::simd_common::{activation_row, avx2_available, random_bytes, random_scale};

/// The formats the AVX2 dequantization must cover, with the byte offsets of each block's
/// f16 scales (overwritten with sane or extreme values in the "random" rows).
const COVERED: [(BlockFormat, &[usize]); 12] = [
    (BlockFormat::Q4_0, &[0]),
    (BlockFormat::Q4_1, &[0, 2]),
    (BlockFormat::Q5_0, &[0]),
    (BlockFormat::Q5_1, &[0, 2]),
    (BlockFormat::Q8_0, &[0]),
    (BlockFormat::IQ4_NL, &[0]),
    (BlockFormat::Q2_K, &[80, 82]),
    (BlockFormat::Q3_K, &[108]),
    (BlockFormat::Q4_K, &[0, 2]),
    (BlockFormat::Q5_K, &[0, 2]),
    (BlockFormat::Q6_K, &[208]),
    (BlockFormat::IQ4_XS, &[0]),
];

/// Same bits, or both NaN (a NaN's payload may differ: F16C quiets signalling NaNs).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Asserts `got == want` element for element (see [`same`]).
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| !same(got[i], want[i])) {
        panic!(
            "{what}: element {i}: avx2 {:e} ({:#010x}), scalar {:e} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

/// `n_blocks` random blocks of `format` with the scales at `scale_at` replaced by
/// [`random_scale`] (or left as raw random bits when `raw`).
fn random_row(rng: &mut Rng, format: BlockFormat, scale_at: &[usize], n_blocks: usize, raw: bool) -> Vec<u8> {
    let bb = format.block_bytes();
    let mut bytes = random_bytes(rng, n_blocks * bb);
    if !raw {
        for block in bytes.chunks_exact_mut(bb) {
            for &at in scale_at {
                block[at..at + 2].copy_from_slice(&random_scale(rng));
            }
        }
    }
    bytes
}

fn scalar(format: BlockFormat, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    quant::dequantize_row(format, bytes, &mut y).expect("scalar dequantize");
    y
}

fn avx2(format: BlockFormat, bytes: &[u8], n: usize) -> Vec<f32> {
    // Poisoned, so an element the kernel skips cannot pass by accident.
    let mut y = vec![f32::from_bits(0x7fa5_a5a5); n];
    dequantize_avx2::dequantize_row(format, bytes, &mut y).expect("avx2 dequantize");
    y
}

#[test]
fn covers_exactly_the_weight_block_formats() {
    for f in BlockFormat::ALL {
        let want = COVERED.iter().any(|&(c, _)| c == f);
        assert_eq!(dequantize_avx2::covers(f), want, "{f:?}");
    }
}

#[test]
fn random_rows_are_bit_identical_to_scalar() {
    if !avx2_available() {
        return;
    }
    let mut rng = Rng::new(0xDE0_A5C2);
    for &(f, scale_at) in &COVERED {
        let be = f.block_elems();
        // One block, a few, odd counts, and a model-sized row.
        for n_blocks in [1, 2, 3, 5, 7, 8, 13, 64, 4096 / be] {
            for raw in [false, true] {
                let bytes = random_row(&mut rng, f, scale_at, n_blocks, raw);
                let n = n_blocks * be;
                assert_same(&format!("{f:?} {n_blocks} blocks raw={raw}"), &avx2(f, &bytes, n), &scalar(f, &bytes, n));
            }
        }
    }
}

#[test]
fn every_quant_value_and_scale_code_round_trips_exactly() {
    if !avx2_available() {
        return;
    }
    // Blocks of all-equal bytes 0x00..=0xFF (every nibble / bit pattern in every position,
    // every packed scale code) with a fixed scale: a systematic sweep beside the random one.
    for &(f, scale_at) in &COVERED {
        let bb = f.block_bytes();
        let mut bytes = Vec::with_capacity(256 * bb);
        for v in 0..=255u8 {
            let mut block = vec![v; bb];
            for &at in scale_at {
                block[at..at + 2].copy_from_slice(&quant::f32_to_f16(0.0123));
            }
            bytes.extend_from_slice(&block);
        }
        let n = 256 * f.block_elems();
        assert_same(&format!("{f:?} sweep"), &avx2(f, &bytes, n), &scalar(f, &bytes, n));
    }
}

#[test]
fn fixtures_are_bit_identical_to_gguf_py() {
    if !avx2_available() {
        return;
    }
    let mut checked = std::collections::HashSet::new();
    for case in fixture_cases() {
        if !dequantize_avx2::covers(case.format) {
            continue;
        }
        let got = avx2(case.format, &case.raw, case.dequantized.len());
        assert_same(&format!("{:?} {}", case.format, case.kind), &got, &case.dequantized);
        checked.insert(case.format);
    }
    for &(f, _) in &COVERED {
        assert!(checked.contains(&f), "no fixture case for {f:?}");
    }
}

#[test]
fn length_errors_match_the_scalar_entry_point() {
    let f = BlockFormat::Q4_K;
    let mut y = vec![0f32; 256];
    assert!(dequantize_avx2::dequantize_row(f, &[0u8; 143], &mut y).is_err());
    assert!(dequantize_avx2::dequantize_row(f, &[0u8; 145], &mut y).is_err());
    let mut y = vec![0f32; 100];
    assert!(dequantize_avx2::dequantize_row(f, &[0u8; 144], &mut y).is_err());
    // Formats without AVX2 kernels go to the scalar code.
    let mut y = vec![0f32; 2];
    dequantize_avx2::dequantize_row(BlockFormat::F16, &[0x00, 0x3c, 0x00, 0xc0], &mut y).expect("F16");
    assert_eq!(y, [1.0, -2.0]);
}

/// The float32-activation matmul on the AVX2 table must equal, bit for bit, the scalar
/// dequantization of every row followed by the AVX2 float dot (`dot_f32`): for one token
/// (the fused path, rows in groups of 4 and a remainder) and for several (panels; from 4
/// tokens on, rows in whole groups of 3 go through the 3×4 float tile, whose value for
/// one row and token is `tile_f32::<1, 1>`'s).
#[test]
fn f32_activation_matmul_equals_scalar_dequantize_then_float_dot() {
    if !avx2_available() {
        return;
    }
    let table = dispatch::table(Isa::Avx2).expect("avx2 table");
    let mut rng = Rng::new(0xF32_A771);
    for threads in [1, 2] {
        let mut pool = ThreadPool::new(threads);
        pool.set_activation_precision(ActivationPrecision::F32);
        for &(f, scale_at) in &COVERED {
            let be = f.block_elems();
            // Rows: not a multiple of 4 (fused remainder) nor of 12 (panel remainder);
            // enough work that two threads split it.
            for (rows, n_blocks) in [(7, 1), (13, 2), (70, 512 / be.min(512))] {
                let cols = n_blocks * be;
                let data = random_row(&mut rng, f, scale_at, rows * n_blocks, false);
                let w = Matrix::new(f, rows, cols, &data);
                let row_bytes = data.len() / rows;
                let deq: Vec<Vec<f32>> =
                    (0..rows).map(|r| scalar(f, &data[r * row_bytes..(r + 1) * row_bytes], cols)).collect();
                for n_tokens in [1, 2, 5] {
                    let x = activation_row(&mut rng, n_tokens * cols, 32);
                    let mut y = vec![f32::NAN; n_tokens * rows];
                    matmul_with(table, &pool, &w, &x, n_tokens, &mut y).expect("matmul");
                    let (tile_rows, tile_tokens) = (rows / 3 * 3, if n_tokens >= 4 { n_tokens / 4 * 4 } else { 0 });
                    let want: Vec<f32> = (0..n_tokens)
                        .flat_map(|t| {
                            let xt = &x[t * cols..(t + 1) * cols];
                            deq.iter().enumerate().map(move |(r, d)| {
                                let d: &[u8] = bytemuck::cast_slice(d);
                                // SAFETY: AVX2 checked above; equal lengths.
                                unsafe {
                                    if r < tile_rows && t < tile_tokens {
                                        tile_f32::<1, 1>([d], [xt])[0][0]
                                    } else {
                                        dot_f32::<1>(d, [xt])[0]
                                    }
                                }
                            })
                        })
                        .collect();
                    assert_same(&format!("{f:?} {rows}x{cols} tokens={n_tokens} threads={threads}"), &y, &want);
                }
            }
        }
    }
}

/// On-CPU nanoseconds of this thread (`simd_bench`'s clock; wall time off Linux).
fn thread_cpu_ns() -> u64 {
    crate::simd_bench::thread_cpu_ns()
        .unwrap_or_else(|| std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos() as u64))
}

/// Best on-CPU nanoseconds per call of each candidate, the candidates interleaved in
/// batches of `reps` calls over `rounds` rounds (A/B on a noisy machine).
fn best_ns(candidates: &mut [&mut dyn FnMut()], reps: usize, rounds: usize) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; candidates.len()];
    for c in candidates.iter_mut() {
        c(); // warm-up
    }
    for _ in 0..rounds {
        for (c, b) in candidates.iter_mut().zip(&mut best) {
            let t = thread_cpu_ns();
            for _ in 0..reps {
                c();
            }
            *b = b.min((thread_cpu_ns() - t) as f64 / reps as f64);
        }
    }
    best
}

/// Timings, not a check (run with `--ignored --nocapture`): ns per element of scalar vs
/// AVX2 row dequantization (a hot 8192-element row), and of a one-token matmul on one
/// thread — quantized activations vs float32 activations (fused) — over a 1024 × 4096 matrix (L3-resident, not DRAM-streamed).
#[test]
#[ignore]
fn bench_dequantize_and_f32_matvec() {
    if !avx2_available() {
        return;
    }
    let mut rng = Rng::new(7);
    println!(
        "{:<7} {:>10} {:>10} {:>6} | matvec ns/elem: {:>9} {:>9} {:>6}",
        "format", "scalar", "avx2", "ratio", "quant", "f32", "ratio"
    );
    let table = dispatch::table(Isa::Avx2).expect("avx2 table");
    let mut quantized = ThreadPool::new(1);
    quantized.set_activation_precision(ActivationPrecision::Quantized);
    let mut float = ThreadPool::new(1);
    float.set_activation_precision(ActivationPrecision::F32);
    for &(f, scale_at) in &COVERED {
        let n = 8192;
        let bytes = random_row(&mut rng, f, scale_at, n / f.block_elems(), false);
        let mut y = vec![0f32; n];
        let mut y2 = vec![0f32; n];
        let t = best_ns(
            &mut [&mut || quant::dequantize_row(f, std::hint::black_box(&bytes), &mut y).expect("scalar"), &mut || {
                dequantize_avx2::dequantize_row(f, std::hint::black_box(&bytes), &mut y2).expect("avx2")
            }],
            20,
            30,
        );
        let (rows, cols) = (1024, 4096);
        let data = random_row(&mut rng, f, scale_at, rows * cols / f.block_elems(), false);
        let w = Matrix::new(f, rows, cols, &data);
        let x = activation_row(&mut rng, cols, 32);
        let (mut out, mut out2) = (vec![0f32; rows], vec![0f32; rows]);
        let m = best_ns(
            &mut [&mut || matmul_with(table, &quantized, &w, &x, 1, &mut out).expect("quantized"), &mut || {
                matmul_with(table, &float, &w, &x, 1, &mut out2).expect("f32")
            }],
            3,
            15,
        );
        let (ne, me) = (n as f64, (rows * cols) as f64);
        println!(
            "{:<7} {:>10.4} {:>10.4} {:>6.1} | {:>24.4} {:>9.4} {:>6.2}",
            f.name(),
            t[0] / ne,
            t[1] / ne,
            t[0] / t[1],
            m[0] / me,
            m[1] / me,
            m[1] / m[0]
        );
    }
}
