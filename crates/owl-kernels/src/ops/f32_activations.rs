//! Matmul of a quantized weight with float32 activations: the reference-faithful mode.
//!
//! The default matmul quantizes activations to the weight format's companion format (Q8_0,
//! Q8_1, Q8_K) and multiplies in integers, as llama.cpp does. That rounding — each
//! activation to 8 bits of its block's maximum — moves a small model's log-probabilities by
//! 0.2–1.0 nats against a float32 forward pass over the same dequantized weights
//! (transformers' GGUF loader), which is enough to flip greedy choices whose top two are
//! ~0.2 apart. In this mode the activations stay float32: each thread dequantizes a chunk
//! of weight rows (exactly as the format defines them, the same code as `owl tensor`) into
//! its own f32 panel and multiplies it with the float kernels, so results equal the float32
//! reference to accumulation rounding (measured on the demo models: ≤ 0.017 nats, docs/NUMERICS.md).
//!
//! Cost: prefill reuses each dequantized panel for every token and runs near the speed of
//! the quantized path. Decode dequantizes every weight once per token; with the AVX2 kernels
//! of `quant::dequantize_avx2` (fused dequantize-and-dot, no panel) it measured 1.4–2.1×
//! slower than the integer kernels on the demo models (one thread), against 3–8× with the
//! scalar dequantization. It is a choice for studying and checking models, not the default.

#[cfg(target_arch = "x86_64")]
use crate::dispatch::Isa;
use crate::dispatch::{FormatKernels, KernelTable};
use crate::pool::Lease;
#[cfg(target_arch = "x86_64")]
use crate::quant::dequantize_avx2;
use crate::quant::{self, BlockFormat};

use super::matmul::{compute_threads, for_each_chunk, Matrix, RowMajorChunks, SharedOut};
use crate::quant::interleave::RowLayout;

/// How a matmul treats the activations of a quantized weight (float weights always take
/// float32 activations as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationPrecision {
    /// Quantized on the fly to the weight format's companion format and multiplied in
    /// integers: llama.cpp's numerics and the fastest kernels.
    #[default]
    Quantized,
    /// Kept in float32 against dequantized weight rows: a float32 reference's numerics;
    /// slower (see the module documentation).
    F32,
}

impl ActivationPrecision {
    /// Whether a weight of `format` takes the float32 path under this precision.
    pub(crate) fn dequantizes(self, format: BlockFormat) -> bool {
        self == ActivationPrecision::F32 && !format.is_float()
    }
}

/// Rows a thread dequantizes at a time: a multiple of the float tile's 3 rows.
const PANEL_ROWS: usize = 12;

/// Rows per chunk of interleaved weights: whole groups of 8, a multiple of the float tile's
/// 3 rows and of the fused kernel's rows.
const GROUP_CHUNK_ROWS: usize = 24;

/// One-token chunks per thread that the fused path aims for (the pool balances chunks).
#[cfg(target_arch = "x86_64")]
const FUSED_CHUNKS_PER_THREAD: usize = 8;

/// `y[t·rows + r] = Σ_c W[r, c]·x[t·cols + c]` with `W` dequantized to f32. Shapes were
/// validated by the caller (`w.data` holds `rows` rows of `row_bytes`; `x` and `y` sizes).
///
/// With the AVX2 float kernels and a weight format `quant::dequantize_avx2` covers, rows
/// are dequantized with those kernels, and one token takes the fused dequantize-and-dot
/// instead of a panel; both give the same bits as the scalar dequantization followed by
/// the float dot (see that module).
pub(crate) fn matmul(
    table: &KernelTable,
    lease: &Lease<'_>,
    w: &Matrix<'_>,
    row_bytes: usize,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) {
    // Every table has the F32 entry: it is the float kernel set of this instruction set.
    let Some(float) = table.get(BlockFormat::F32) else { unreachable!("kernel table without F32") };
    let n_threads = compute_threads(lease, w, n_tokens);
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = avx2_kernels(float, w.format) {
        if n_tokens == 1 {
            fused_matvec(k, lease, n_threads, w, row_bytes, x, y);
        } else {
            // SAFETY: `avx2_kernels` only returns kernels when the float kernels are the
            // AVX2 ones, which the dispatch table hands out only on CPUs with AVX2, FMA
            // and F16C; every row is exactly `row_bytes` for `cols` elements.
            let dequantize = |src: &[u8], dst: &mut [f32]| unsafe { (k.dequantize)(src, dst) };
            panel_matmul(float, lease, n_threads, w, row_bytes, x, n_tokens, y, dequantize);
        }
        return;
    }
    let dequantize = |src: &[u8], dst: &mut [f32]| {
        // Lengths are the validated row sizes, so this cannot fail.
        if let Err(e) = quant::dequantize_row(w.format, src, dst) {
            unreachable!("validated row: {e}");
        }
    };
    panel_matmul(float, lease, n_threads, w, row_bytes, x, n_tokens, y, dequantize);
}

/// The AVX2 row kernels for `format`, when `float` (the table's F32 entry) is the AVX2
/// float kernel set — the one the fused dot reproduces — and the format has them.
#[cfg(target_arch = "x86_64")]
fn avx2_kernels(float: &FormatKernels, format: BlockFormat) -> Option<dequantize_avx2::RowKernels> {
    if float.dot_isa() != Isa::Avx2 {
        return None;
    }
    dequantize_avx2::kernels(format)
}

/// One token: each output is a fused dequantize-and-dot of its weight row, `DOT_ROWS`
/// rows per kernel call; no panel is written or read back.
#[cfg(target_arch = "x86_64")]
fn fused_matvec(
    k: dequantize_avx2::RowKernels,
    lease: &Lease<'_>,
    n_threads: usize,
    w: &Matrix<'_>,
    row_bytes: usize,
    x: &[f32],
    y: &mut [f32],
) {
    use dequantize_avx2::DOT_ROWS;
    let x = &x[..w.cols];
    let out = SharedOut { ptr: y.as_mut_ptr(), len: y.len() };
    let chunk =
        (w.rows / (n_threads * FUSED_CHUNKS_PER_THREAD)).next_multiple_of(GROUP_CHUNK_ROWS).max(GROUP_CHUNK_ROWS);
    let interleaved = w.layout == RowLayout::Interleaved8;
    let mut scratch = lease.take_scratch();
    let region = chunk * row_bytes;
    let regions = scratch.bytes_mut(if interleaved { n_threads * region } else { 0 });
    let row_major = RowMajorChunks::new(w, row_bytes, regions, region);
    let run = |thread: usize, rows: std::ops::Range<usize>| {
        // SAFETY: each thread index makes one chunk at a time row-major in its own region.
        let chunk = unsafe { row_major.rows(thread, rows.clone()) };
        let row = |r: usize| &chunk[(r - rows.start) * row_bytes..(r - rows.start + 1) * row_bytes];
        let mut r = rows.start;
        // SAFETY (kernel calls): see `avx2_kernels`; each row is `row_bytes` for
        // `x.len()` elements. (writes): rows of this chunk belong to this thread only.
        while r + DOT_ROWS <= rows.end {
            let v = unsafe { (k.dot_rows)(std::array::from_fn(|i| row(r + i)), x) };
            for (i, &vi) in v.iter().enumerate() {
                unsafe { out.write(r + i, vi) };
            }
            r += DOT_ROWS;
        }
        for r in r..rows.end {
            let v = unsafe { (k.dot)(row(r), x) };
            unsafe { out.write(r, v) };
        }
    };
    if n_threads > 1 {
        lease.parallel_for(w.rows, chunk, &run);
    } else if interleaved {
        for_each_chunk(w.rows, chunk, |rows| run(0, rows));
    } else {
        run(0, 0..w.rows);
    }
    lease.put_scratch(scratch);
}

/// Each thread dequantizes `PANEL_ROWS` rows at a time into its f32 panel with
/// `dequantize(row bytes, row floats)` and multiplies the panel with every token.
#[allow(clippy::too_many_arguments)]
fn panel_matmul(
    float: &FormatKernels,
    lease: &Lease<'_>,
    n_threads: usize,
    w: &Matrix<'_>,
    row_bytes: usize,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
    dequantize: impl Fn(&[u8], &mut [f32]) + Sync,
) {
    let cols = w.cols;
    // Whole groups of 8 for interleaved weights (made row-major chunk by chunk).
    let panel_rows = if w.layout == RowLayout::Interleaved8 { GROUP_CHUNK_ROWS } else { PANEL_ROWS };
    let panel_floats = panel_rows * cols;
    let region = if w.layout == RowLayout::Interleaved8 { panel_rows * row_bytes } else { 0 };
    let mut scratch = lease.take_scratch();
    let (panels, regions) =
        scratch.bytes_mut(n_threads * (panel_floats * 4 + region)).split_at_mut(n_threads * panel_floats * 4);
    let panels = bytemuck::cast_slice_mut::<u8, f32>(panels);
    let panels = SharedOut { ptr: panels.as_mut_ptr(), len: panels.len() };
    let row_major = RowMajorChunks::new(w, row_bytes, regions, region);
    let out = SharedOut { ptr: y.as_mut_ptr(), len: y.len() };
    let run = |thread: usize, rows: std::ops::Range<usize>| {
        // SAFETY: each thread index owns its panel and row region; a thread works on one
        // chunk at a time.
        let (panel, src) =
            unsafe { (panels.slice(thread * panel_floats, rows.len() * cols), row_major.rows(thread, rows.clone())) };
        for (src, dst) in src.chunks_exact(row_bytes).zip(panel.chunks_exact_mut(cols)) {
            dequantize(src, dst);
        }
        multiply_panel(float, panel, cols, rows, x, n_tokens, w.rows, &out);
    };
    if n_threads == 1 {
        for_each_chunk(w.rows, panel_rows, |rows| run(0, rows));
    } else {
        lease.parallel_for(w.rows, panel_rows, &run);
    }
    lease.put_scratch(scratch);
}

/// The products of one dequantized panel (matrix rows `rows`) with every token: 3-row ×
/// 4-token float tiles where the kernel set has them, single dot products elsewhere.
#[allow(clippy::too_many_arguments)]
fn multiply_panel(
    float: &FormatKernels,
    panel: &[f32],
    cols: usize,
    rows: std::ops::Range<usize>,
    x: &[f32],
    n_tokens: usize,
    n_rows: usize,
    out: &SharedOut<f32>,
) {
    let dot = float.raw_dot();
    let w_row = |i: usize| -> &[u8] { bytemuck::cast_slice(&panel[i * cols..(i + 1) * cols]) };
    let x_row = |t: usize| -> &[u8] { bytemuck::cast_slice(&x[t * cols..(t + 1) * cols]) };
    // SAFETY (every write below): rows of this chunk belong to this thread only.
    let put = |t: usize, i: usize, v: f32| unsafe { out.write(t * n_rows + rows.start + i, v) };
    let n = rows.len();
    let mut i = 0;
    if let (Some(tile), true) = (float.raw_tile3x4(), n_tokens >= 4) {
        while i + 3 <= n {
            let wr = [w_row(i), w_row(i + 1), w_row(i + 2)];
            let mut t = 0;
            while t + 4 <= n_tokens {
                let v = tile(wr, [x_row(t), x_row(t + 1), x_row(t + 2), x_row(t + 3)]);
                for (r, vr) in v.iter().enumerate() {
                    for (k, &val) in vr.iter().enumerate() {
                        put(t + k, i + r, val);
                    }
                }
                t += 4;
            }
            for t in t..n_tokens {
                for (r, wr) in wr.iter().enumerate() {
                    put(t, i + r, dot(wr, x_row(t)));
                }
            }
            i += 3;
        }
    }
    for i in i..n {
        for t in 0..n_tokens {
            put(t, i, dot(w_row(i), x_row(t)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{self, Isa};
    use crate::pool::ThreadPool;

    /// Deterministic values in [-0.5, 0.5).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        quant::test_values(n, seed | 1, 0.5, 1.0)
    }

    /// Every format, every instruction set, 1 to 7 tokens, one and two threads: the
    /// result is the float64 product of the dequantized weights and the unrounded
    /// activations, to float32 accumulation error — and it differs from the quantized
    /// path by the activation rounding that this mode exists to avoid.
    #[test]
    fn equals_the_dequantized_float_product() {
        let (rows, cols) = (37, 512);
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let table = dispatch::table(isa).expect("table");
            for threads in [1, 2] {
                let mut pool = ThreadPool::new(threads);
                pool.set_activation_precision(ActivationPrecision::F32);
                let quantized = ThreadPool::new(threads);
                for format in BlockFormat::ALL {
                    if table.get(format).is_none() || format.row_bytes(cols).is_none() {
                        continue;
                    }
                    let (data, deq) = quant::test_rows(format, &values(rows * cols, 7), rows, cols);
                    let w = Matrix::new(format, rows, cols, &data);
                    for n in 1..=7 {
                        let x = values(n * cols, 11 + n as u64);
                        let mut y = vec![0f32; n * rows];
                        crate::ops::matmul_with(table, &pool, &w, &x, n, &mut y).expect("matmul");
                        let mut yq = vec![0f32; n * rows];
                        crate::ops::matmul_with(table, &quantized, &w, &x, n, &mut yq).expect("matmul");
                        let (mut worst, mut worst_q) = (0f64, 0f64);
                        for t in 0..n {
                            for r in 0..rows {
                                let want: f64 = deq[r * cols..(r + 1) * cols]
                                    .iter()
                                    .zip(&x[t * cols..(t + 1) * cols])
                                    .map(|(&a, &b)| a as f64 * b as f64)
                                    .sum();
                                let scale: f64 = deq[r * cols..(r + 1) * cols]
                                    .iter()
                                    .zip(&x[t * cols..(t + 1) * cols])
                                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                                    .sum();
                                worst = worst.max((y[t * rows + r] as f64 - want).abs() / scale);
                                worst_q = worst_q.max((yq[t * rows + r] as f64 - want).abs() / scale);
                            }
                        }
                        // f32 sums of 512 products: a few ulps of the absolute sum.
                        assert!(worst < 1e-6, "{isa:?} {format:?} {threads}t {n} tokens: {worst:e}");
                        if !format.is_float() {
                            // The quantized path rounds activations (Q8: ~1e-3 of the absolute sum).
                            assert!(worst_q > 10.0 * worst, "{isa:?} {format:?}: {worst_q:e} vs {worst:e}");
                        }
                    }
                }
            }
        }
    }
}
