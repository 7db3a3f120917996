//! matmul vs a straightforward reference, for every weight format, token count, thread
//! count and every instruction set this CPU runs.
//!
//! Reference: each weight row dequantized, each activation row quantized to the kernel's
//! activation format and dequantized again (f32 activations for float weights), dot in
//! f64. The kernels differ from it only by f32 rounding of partial sums and scales, and —
//! for the Q8_1 formats — by the f16-rounded block sum `s` that Q4_1/Q5_1 use for their
//! offset term. Tolerance: `|y − ref| ≤ rel · Σ|w·a| + 1e-6` with `rel` below.

use crate::quant_common::Rng;
use owl_kernels::dispatch::{self, Isa, KernelTable};
use owl_kernels::ops::matmul::{matmul, matmul_with, Matrix};
use owl_kernels::quant::{self, BlockFormat};
use owl_kernels::{KernelError, ThreadPool};

/// Relative tolerance (to Σ|w·a|) per weight format; see the module docs.
fn rel_tolerance(format: BlockFormat) -> f64 {
    match format {
        // m·s with s rounded to f16: up to 2^-11 of |m·s| per block.
        BlockFormat::Q4_1 | BlockFormat::Q5_1 | BlockFormat::Q8_1 => 1e-3,
        _ => 5e-6,
    }
}

/// Random weights of `format` (quantized from gaussians whose scale varies per row, so
/// the block scales differ) and their dequantized values.
fn random_matrix(format: BlockFormat, rows: usize, cols: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let row_bytes = format.row_bytes(cols).expect("cols fit the format");
    let mut data = vec![0u8; rows * row_bytes];
    let mut deq = vec![0f32; rows * cols];
    for r in 0..rows {
        let sigma = 0.02 * (1.0 + (r % 7) as f64);
        let mut src = rng.gaussian_row(cols, sigma);
        // An outlier per row now and then, as real weights have.
        if r % 3 == 0 {
            src[(r * 31) % cols] = (8.0 * sigma) as f32;
        }
        let bytes = &mut data[r * row_bytes..(r + 1) * row_bytes];
        quant::quantize_row(format, &src, bytes).expect("quantize weights");
        quant::dequantize_row(format, bytes, &mut deq[r * cols..(r + 1) * cols]).expect("dequantize weights");
    }
    (data, deq)
}

/// Reference y and the per-output scale Σ|w·a|.
fn reference(act: BlockFormat, deq_w: &[f32], rows: usize, cols: usize, x: &[f32], n_tokens: usize) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0); rows * n_tokens];
    let mut a = vec![0f32; cols];
    let mut buf = vec![0u8; act.row_bytes(cols).expect("act row")];
    for t in 0..n_tokens {
        let xt = &x[t * cols..(t + 1) * cols];
        if act == BlockFormat::F32 {
            a.copy_from_slice(xt);
        } else {
            quant::quantize_row(act, xt, &mut buf).expect("quantize act");
            quant::dequantize_row(act, &buf, &mut a).expect("dequantize act");
        }
        for r in 0..rows {
            let w = &deq_w[r * cols..(r + 1) * cols];
            let (mut s, mut m) = (0f64, 0f64);
            for (&wv, &av) in w.iter().zip(&a) {
                s += wv as f64 * av as f64;
                m += (wv as f64 * av as f64).abs();
            }
            out[t * rows + r] = (s, m);
        }
    }
    out
}

fn available_tables() -> Vec<&'static KernelTable> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).map(|i| dispatch::table(i).expect("available")).collect()
}

/// Checks `matmul_with` against the reference for one format and shape on every table,
/// token count and thread count; returns the worst error ratio seen (error / tolerance).
fn check_format(format: BlockFormat, rows: usize, cols: usize, tokens: &[usize], pools: &[ThreadPool]) -> f64 {
    let (data, deq) = random_matrix(format, rows, cols, 0x5eed ^ format as u64);
    let w = Matrix::new(format, rows, cols, &data);
    let max_tokens = tokens.iter().copied().max().unwrap_or(1);
    let x = Rng::new(7 + format as u64).gaussian_row(max_tokens * cols, 1.0);
    let mut worst = 0f64;
    for table in available_tables() {
        let act = table.get(format).expect("every format has kernels").act_format();
        for &n in tokens {
            let xs = &x[..n * cols];
            let want = reference(act, &deq, rows, cols, xs, n);
            for pool in pools {
                let mut y = vec![f32::NAN; rows * n];
                matmul_with(table, pool, &w, xs, n, &mut y).expect("matmul");
                for (i, (&got, &(r, scale))) in y.iter().zip(&want).enumerate() {
                    let tol = rel_tolerance(format) * scale + 1e-6;
                    let err = (got as f64 - r).abs();
                    assert!(
                        err <= tol,
                        "{format:?} {isa} rows={rows} cols={cols} tokens={n} threads={} out[t={}, r={}] = {got}, \
                         reference {r} (err {err:.3e} > tol {tol:.3e})",
                        pool.n_threads(),
                        i / rows,
                        i % rows,
                        isa = table.isa(),
                    );
                    worst = worst.max(err / tol);
                }
            }
        }
    }
    worst
}

fn pools() -> [ThreadPool; 2] {
    [ThreadPool::new(1), ThreadPool::new(2)]
}

#[test]
fn matmul_every_format_matches_reference() {
    let pools = pools();
    // 133 rows: odd, several chunks per thread; 512 columns: two K super-blocks.
    for format in BlockFormat::ALL {
        let worst = check_format(format, 133, 512, &[1, 3, 17, 64], &pools);
        eprintln!("{format:?}: worst error {:.1}% of tolerance", worst * 100.0);
    }
}

#[test]
fn matmul_small_and_odd_shapes() {
    let pools = pools();
    for format in BlockFormat::ALL {
        let cols = format.block_elems() * 3;
        for rows in [1, 3, 5] {
            check_format(format, rows, cols, &[1, 2, 5], &pools);
        }
    }
    // Float rows whose length is not a multiple of the SIMD width.
    for format in [BlockFormat::F32, BlockFormat::F16, BlockFormat::BF16] {
        for cols in [1, 7, 9, 31, 33, 45] {
            check_format(format, 9, cols, &[1, 4], &pools);
        }
    }
}

#[test]
fn matmul_large_rows_many_chunks() {
    // Enough work that both threads claim many chunks, for the formats of the demo models.
    let pools = pools();
    for format in [BlockFormat::Q4_1, BlockFormat::Q5_0, BlockFormat::Q8_0, BlockFormat::Q4_K, BlockFormat::Q6_K] {
        check_format(format, 1031, 1024, &[1, 9], &pools);
    }
}

#[test]
fn matmul_default_table_matches_explicit_one() {
    let pool = ThreadPool::new(2);
    let format = BlockFormat::Q4_0;
    let (data, _) = random_matrix(format, 64, 256, 1);
    let w = Matrix::new(format, 64, 256, &data);
    let x = Rng::new(2).gaussian_row(3 * 256, 1.0);
    let (mut a, mut b) = (vec![0f32; 192], vec![0f32; 192]);
    matmul(&pool, &w, &x, 3, &mut a).expect("matmul");
    let table = dispatch::active().expect("OWL_KERNELS is usable in tests");
    matmul_with(table, &pool, &w, &x, 3, &mut b).expect("matmul_with");
    assert_eq!(a, b);
}

#[test]
fn matmul_zero_sizes() {
    let pool = ThreadPool::new(2);
    let w = Matrix::new(BlockFormat::Q8_0, 0, 64, &[]);
    matmul(&pool, &w, &[0.0; 128], 2, &mut []).expect("no rows");
    let data = vec![0u8; 4 * 34 * 2];
    let w = Matrix::new(BlockFormat::Q8_0, 4, 64, &data);
    matmul(&pool, &w, &[], 0, &mut []).expect("no tokens");
    let w = Matrix::new(BlockFormat::F32, 3, 0, &[]);
    let mut y = [f32::NAN; 6];
    matmul(&pool, &w, &[], 2, &mut y).expect("no columns");
    assert_eq!(y, [0.0; 6]);
}

#[test]
fn matmul_rejects_bad_shapes() {
    let pool = ThreadPool::new(2);
    let data = vec![0u8; 4 * 18 * 2]; // 4 rows × 64 columns of Q4_0
    let w = Matrix::new(BlockFormat::Q4_0, 4, 64, &data);
    let x = vec![0f32; 64 * 2];
    let mut y = vec![0f32; 4 * 2];

    let err = matmul(&pool, &w, &x[..100], 2, &mut y).expect_err("must fail");
    assert!(matches!(err, KernelError::Length { what: "matmul x", expected: 128, got: 100, .. }), "{err}");
    let err = matmul(&pool, &w, &x, 2, &mut y[..7]).expect_err("must fail");
    assert!(matches!(err, KernelError::Length { what: "matmul y", expected: 8, got: 7, .. }), "{err}");
    let short = Matrix { data: &data[..data.len() - 1], ..w };
    let err = matmul(&pool, &short, &x, 2, &mut y).expect_err("must fail");
    assert!(matches!(err, KernelError::Length { what: "matmul W", expected: 144, got: 143, .. }), "{err}");
    let ragged = Matrix { cols: 48, ..w };
    let err = matmul(&pool, &ragged, &x[..96], 2, &mut y).expect_err("must fail");
    assert!(matches!(err, KernelError::RowNotBlockMultiple { format: BlockFormat::Q4_0, len: 48, block: 32 }), "{err}");
    // Sizes whose products overflow are errors, not panics or huge allocations.
    let huge = Matrix { rows: usize::MAX / 2, ..w };
    assert!(matches!(matmul(&pool, &huge, &x, 2, &mut y), Err(KernelError::Length { .. })));
    let err = matmul(&pool, &w, &x, usize::MAX / 8, &mut y).expect_err("must fail");
    assert!(matches!(err, KernelError::Length { .. }), "{err}");
    // K-quant rows need whole super-blocks.
    let kq = Matrix::new(BlockFormat::Q4_K, 1, 128, &[]);
    let err = matmul(&pool, &kq, &x[..128], 1, &mut y[..1]).expect_err("must fail");
    assert!(matches!(err, KernelError::RowNotBlockMultiple { format: BlockFormat::Q4_K, .. }), "{err}");
}

#[test]
fn matmul_inside_pool_job_runs_inline() {
    // A matmul issued from inside a job of the same pool must not deadlock: it runs on the
    // calling thread with a scratch buffer of its own.
    let pool = ThreadPool::new(2);
    let format = BlockFormat::Q8_0;
    let (data, deq) = random_matrix(format, 96, 512, 3);
    let w = Matrix::new(format, 96, 512, &data);
    let x = Rng::new(4).gaussian_row(2 * 512, 1.0);
    let want = reference(BlockFormat::Q8_0, &deq, 96, 512, &x, 2);
    let results = std::sync::Mutex::new(Vec::new());
    pool.run(&|i, _| {
        let mut y = vec![0f32; 192];
        matmul(&pool, &w, &x, 2, &mut y).expect("nested matmul");
        results.lock().expect("lock").push((i, y));
    });
    let results = results.into_inner().expect("lock");
    assert_eq!(results.len(), 2);
    for (_, y) in results {
        for (&got, &(r, scale)) in y.iter().zip(&want) {
            assert!((got as f64 - r).abs() <= 2e-5 * scale + 1e-6);
        }
    }
}

#[test]
fn matmul_simd_tables_agree_with_scalar() {
    // Same inputs through every table: the SIMD kernels may round differently from the
    // scalar ones, but by no more than the reference tolerance.
    let scalar = dispatch::table(Isa::Scalar).expect("scalar");
    let pool = ThreadPool::new(2);
    for table in available_tables().into_iter().filter(|t| t.isa() != Isa::Scalar) {
        for format in BlockFormat::ALL {
            let (rows, cols, n) = (37, 768, 5);
            let (data, deq) = random_matrix(format, rows, cols, 11);
            let w = Matrix::new(format, rows, cols, &data);
            let x = Rng::new(12).gaussian_row(n * cols, 1.0);
            let (mut ys, mut yv) = (vec![0f32; rows * n], vec![0f32; rows * n]);
            matmul_with(scalar, &pool, &w, &x, n, &mut ys).expect("scalar");
            matmul_with(table, &pool, &w, &x, n, &mut yv).expect("simd");
            let act = table.get(format).expect("kernels").act_format();
            let want = reference(act, &deq, rows, cols, &x, n);
            for ((&s, &v), &(_, scale)) in ys.iter().zip(&yv).zip(&want) {
                let tol = 2.0 * rel_tolerance(format) * scale + 1e-6;
                assert!((s - v).abs() as f64 <= tol, "{format:?} {}: scalar {s} vs {v}", table.isa());
            }
        }
    }
}

#[test]
fn matmul_batch_equals_single_token_calls() {
    // The multi-token kernels' columns equal the one-token kernel bit for bit, so a token's
    // output does not depend on the batch (prefill vs decode give the same logits). The int8
    // panel path sums in another order: there, batch and single agree within the tolerance.
    let pool = ThreadPool::new(2);
    for table in available_tables() {
        for format in BlockFormat::ALL {
            let (rows, cols, n) = (45, 512, 11);
            let (data, deq) = random_matrix(format, rows, cols, 21);
            let w = Matrix::new(format, rows, cols, &data);
            let x = Rng::new(22).gaussian_row(n * cols, 1.0);
            let mut batch = vec![0f32; rows * n];
            matmul_with(table, &pool, &w, &x, n, &mut batch).expect("batch");
            let kernels = table.get(format).expect("kernels");
            let want = reference(kernels.act_format(), &deq, rows, cols, &x, n);
            for t in 0..n {
                let mut one = vec![0f32; rows];
                matmul_with(table, &pool, &w, &x[t * cols..(t + 1) * cols], 1, &mut one).expect("one");
                let got = &batch[t * rows..(t + 1) * rows];
                if kernels.prefill_rounds_differently() {
                    for (r, (&b, &o)) in got.iter().zip(&one).enumerate() {
                        let tol = 2.0 * rel_tolerance(format) * want[t * rows + r].1 + 1e-6;
                        assert!(
                            (b - o).abs() as f64 <= tol,
                            "{format:?} {} token {t} row {r}: {b} vs {o}",
                            table.isa()
                        );
                    }
                } else {
                    let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                    let want: Vec<u32> = one.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want, "{format:?} {} token {t}", table.isa());
                }
            }
        }
    }
}

#[test]
fn matmul_avx2_table_uses_simd_for_every_weight_format() {
    // Guards against a table wiring mistake silently leaving a format on scalar code. (Q8_1
    // and Q8_K are activation formats; as weights they keep the scalar kernels.)
    let Ok(table) = dispatch::table(Isa::Avx2) else { return };
    for format in [
        BlockFormat::F32,
        BlockFormat::F16,
        BlockFormat::BF16,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q8_0,
        BlockFormat::IQ4_NL,
        BlockFormat::Q2_K,
        BlockFormat::Q3_K,
        BlockFormat::Q4_K,
        BlockFormat::Q5_K,
        BlockFormat::Q6_K,
        BlockFormat::IQ4_XS,
    ] {
        let k = table.get(format).expect("kernels");
        assert_eq!(k.dot_isa(), Isa::Avx2, "{format:?}");
        assert!(k.has_multi_token_kernel(), "{format:?}");
    }
}

/// The formats with prefill panels on AVX2 (int8 and K panels).
const PANEL_FORMATS: [BlockFormat; 9] = [
    BlockFormat::Q4_0,
    BlockFormat::Q4_1,
    BlockFormat::Q5_0,
    BlockFormat::Q5_1,
    BlockFormat::Q8_0,
    BlockFormat::IQ4_NL,
    BlockFormat::Q4_K,
    BlockFormat::Q5_K,
    BlockFormat::Q6_K,
];

#[test]
fn matmul_panel_formats_use_the_panel() {
    // Guards the wiring: these formats' prefill must go through the panels on AVX2 (the
    // reference checks below would pass on the slower path too).
    let Ok(table) = dispatch::table(Isa::Avx2) else { return };
    for format in PANEL_FORMATS {
        assert!(table.get(format).expect("kernels").has_prefill_panel(), "{format:?}");
    }
}

#[test]
fn matmul_panel_tile_edges() {
    // Row counts around the lane panels' 8-row halves and 16-row chunks; token counts below
    // the panel thresholds (4, and 12 for the K-quants), around the tiles (4 tokens on AVX2,
    // 8 and 6 on AVX-512) and their 4/2/1-token remainders.
    let pools = pools();
    for format in PANEL_FORMATS {
        let cols = format.block_elems().max(256) * 2;
        for rows in [1, 2, 3, 5, 8, 9, 16, 17, 35] {
            check_format(format, rows, cols, &[1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13, 15, 16, 17, 19], &pools);
        }
    }
}

#[test]
fn matmul_panel_demo_shapes() {
    // The demo models' FFN shapes (few blocks per row: gemma3 640/2048, qwen2.5 896/4864
    // columns), with a token count that leaves remainders for every tile width.
    let pools = [ThreadPool::new(2)];
    let shapes = [(640, 2048), (2048, 640), (896, 4864), (4864, 896)];
    for format in PANEL_FORMATS {
        for (rows, cols) in shapes {
            if format.row_bytes(cols).is_none() {
                continue; // K-quants need whole 256-element super-blocks (640, 896 are not)
            }
            let worst = check_format(format, rows, cols, &[13], &pools);
            eprintln!("{format:?} {rows}x{cols}: worst error {:.1}% of tolerance", worst * 100.0);
        }
    }
}

/// The 8-row interleaved layout gives what the row-major one gives: prefill and the
/// float32-activation path bit for bit (they run the same kernels on rows made row-major
/// again), decode within the reference tolerance (its group kernels only fuse the last
/// multiply-add of each block differently) — on every table, 1 and 2 threads, every
/// format with the layout, shapes of one group up to many chunks.
#[test]
fn matmul_interleaved_layout_matches_row_major() {
    use owl_kernels::ops::ActivationPrecision;
    use owl_kernels::quant::interleave::{can_interleave, has_interleaved_layout, interleave_matrix};
    let mut pools = pools();
    let mut formats = 0;
    for format in BlockFormat::ALL.into_iter().filter(|&f| has_interleaved_layout(f)) {
        formats += 1;
        for (rows, cols) in [(8, format.block_elems()), (136, 512), (1024, 256)] {
            assert!(can_interleave(format, rows, cols));
            let (data, deq) = random_matrix(format, rows, cols, 0x1eaf ^ format as u64);
            let mut packed = vec![0u8; data.len()];
            interleave_matrix(format, rows, cols, &data, &mut packed).expect("interleave");
            let (plain, inter) =
                (Matrix::new(format, rows, cols, &data), Matrix::interleaved(format, rows, cols, &packed));
            let x = Rng::new(3 + format as u64).gaussian_row(64 * cols, 1.0);
            for table in available_tables() {
                let act = table.get(format).expect("kernels").act_format();
                for precision in [ActivationPrecision::Quantized, ActivationPrecision::F32] {
                    for pool in pools.iter_mut() {
                        pool.set_activation_precision(precision);
                        for n in [1, 2, 5, 64] {
                            let xs = &x[..n * cols];
                            let (mut want, mut got) = (vec![f32::NAN; rows * n], vec![f32::NAN; rows * n]);
                            matmul_with(table, pool, &plain, xs, n, &mut want).expect("row-major");
                            matmul_with(table, pool, &inter, xs, n, &mut got).expect("interleaved");
                            let ctx = format!(
                                "{format:?} {} {precision:?} {rows}x{cols} tokens={n} threads={}",
                                table.isa(),
                                pool.n_threads()
                            );
                            if n > 1 || precision == ActivationPrecision::F32 {
                                assert!(
                                    want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                                    "{ctx}: not bit-identical"
                                );
                                continue;
                            }
                            let reference = reference(act, &deq, rows, cols, xs, 1);
                            for (r, (&g, &(v, scale))) in got.iter().zip(&reference).enumerate() {
                                let tol = rel_tolerance(format) * scale + 1e-6;
                                assert!(
                                    (g as f64 - v).abs() <= tol,
                                    "{ctx} row {r}: {g} vs reference {v} (tol {tol:.2e})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(formats >= 2, "the formats with the layout are tested");
    for pool in pools.iter_mut() {
        pool.set_activation_precision(ActivationPrecision::Quantized);
    }
}

/// Interleaved matrices whose shape cannot be interleaved, or of a format without the layout,
/// are errors, not wrong answers.
#[test]
fn matmul_rejects_impossible_interleaved_matrices() {
    let pool = ThreadPool::new(1);
    let data = vec![0u8; 12 * BlockFormat::Q4_0.row_bytes(64).expect("row")];
    let x = vec![0f32; 64];
    let mut y = vec![0f32; 12];
    let twelve = Matrix::interleaved(BlockFormat::Q4_0, 12, 64, &data);
    assert!(matches!(matmul(&pool, &twelve, &x, 1, &mut y), Err(KernelError::Unsupported { .. })));
    let data = vec![0u8; 8 * BlockFormat::F16.row_bytes(64).expect("row")];
    let f16 = Matrix::interleaved(BlockFormat::F16, 8, 64, &data);
    assert!(matches!(matmul(&pool, &f16, &x, 1, &mut y[..8]), Err(KernelError::Unsupported { .. })));
}

/// `matmul_batch_invariant`: a one-token row gets the bits of a one-token call, a many-token
/// row the same bits in every batch it lands in (alone, first, last, beside 1 or 40 others),
/// for every format, both layouts, every table and thread count.
#[test]
fn matmul_batch_invariant_rows_do_not_depend_on_the_batch() {
    use owl_kernels::ops::matmul::matmul_batch_invariant_with;
    use owl_kernels::quant::interleave::{can_interleave, has_interleaved_layout, interleave_matrix};
    let pools = pools();
    let (rows, cols) = (48, 512);
    for format in BlockFormat::ALL {
        let (data, _) = random_matrix(format, rows, cols, 0xba7c ^ format as u64);
        let mut packed = vec![0u8; data.len()];
        let interleaved = has_interleaved_layout(format) && can_interleave(format, rows, cols);
        if interleaved {
            interleave_matrix(format, rows, cols, &data, &mut packed).expect("interleave");
        }
        let mut matrices = vec![Matrix::new(format, rows, cols, &data)];
        if interleaved {
            matrices.push(Matrix::interleaved(format, rows, cols, &packed));
        }
        let x = Rng::new(7 + format as u64).gaussian_row(41 * cols, 1.0);
        let token = |t: usize| &x[t * cols..(t + 1) * cols];
        for table in available_tables() {
            for pool in &pools {
                for w in &matrices {
                    let ctx = format!("{format:?} {:?} {} threads={}", w.layout, table.isa(), pool.n_threads());
                    // Token 0 as a one-token row: alone (a plain one-token call), and first of
                    // 1, 3 or 9 one-token rows followed by many-token rows.
                    let mut alone = vec![0f32; rows];
                    matmul_with(table, pool, w, token(0), 1, &mut alone).expect("one token");
                    // Token 5 as a many-token row: alone, and at several places of bigger batches.
                    let mut many_alone = vec![0f32; rows];
                    matmul_batch_invariant_with(table, pool, w, token(5), 1, 0, &mut many_alone).expect("many");
                    for (n_single, n) in [(1, 1), (1, 2), (2, 3), (3, 8), (9, 41), (0, 41), (0, 2)] {
                        // Batch: token 0 first, then tokens 1.., with token 5 moved to slot `n - 1`.
                        let mut order: Vec<usize> = (0..n).collect();
                        if n > 5 {
                            order.swap(5, n - 1);
                        }
                        let xs: Vec<f32> = order.iter().flat_map(|&t| token(t).iter().copied()).collect();
                        let mut y = vec![f32::NAN; n * rows];
                        matmul_batch_invariant_with(table, pool, w, &xs, n, n_single, &mut y).expect("batch");
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        if n_single > 0 {
                            assert_eq!(bits(&y[..rows]), bits(&alone), "{ctx} ({n_single}, {n}): one-token row");
                            // Every one-token row, wherever it sits among the others (the
                            // several-token group kernels take them four at a time).
                            for (slot, &t) in order.iter().enumerate().take(n_single).skip(1) {
                                let mut one = vec![0f32; rows];
                                matmul_with(table, pool, w, token(t), 1, &mut one).expect("one token");
                                let got = &y[slot * rows..(slot + 1) * rows];
                                assert_eq!(bits(got), bits(&one), "{ctx} ({n_single}, {n}): one-token row {slot}");
                            }
                        } else {
                            assert_eq!(
                                bits(&y[..rows]),
                                bits(&{
                                    let mut v = vec![0f32; rows];
                                    matmul_batch_invariant_with(table, pool, w, token(0), 1, 0, &mut v)
                                        .expect("many 0");
                                    v
                                }),
                                "{ctx} ({n_single}, {n}): first many-token row"
                            );
                        }
                        if n > 5 && n_single < n {
                            let last = &y[(n - 1) * rows..];
                            assert_eq!(bits(last), bits(&many_alone), "{ctx} ({n_single}, {n}): many-token row");
                        }
                    }
                    assert!(matmul_batch_invariant_with(table, pool, w, token(0), 1, 2, &mut alone).is_err());
                }
            }
        }
    }
}
