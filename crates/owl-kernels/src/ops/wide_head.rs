//! The output head with 16-bit activations: `y = W·x` for a Q8_0 weight matrix with the
//! activations quantized to [`BlockQ16`] (see [`crate::quant::q8_0::wide`]) instead of
//! Q8_0, for every token count.
//!
//! Why only the head: the logits are the model's output, so the head's activation rounding
//! reaches the distribution undamped — on the demo models it was 5–28 % of the default
//! path's KL divergence from float32, while every other projection shares its error with
//! the layers after it. The head streams the same weight bytes either way; widening each
//! weight to 16 bits costs 0–4 % of decode speed where the head sits in cache
//! (docs/PERFORMANCE.md). A many-token call (perplexity, all-logits scoring, training) runs
//! the same per-token arithmetic, not a tiled GEMM, with each group of rows in L1 while
//! every token passes; on AVX-512 four tokens share each widened weight block
//! (`wide::avx512::dot_rows_tokens`, the bits of the one-token kernel).
//!
//! Each (row, token) value comes from the same kernel and lane arithmetic whatever the
//! token count, thread count or chunking, so the result is batch invariant by construction.

use crate::dispatch;
#[cfg(target_arch = "x86_64")]
use crate::dispatch::Isa;
use crate::pool::ThreadPool;
use crate::quant::interleave::{RowLayout, INTERLEAVE_ROWS};
use crate::quant::q8_0::wide::{self, BlockQ16};
use crate::quant::q8_0::{BlockQ8_0, QK8_0};
use crate::quant::BlockFormat;
use crate::KernelError;

use super::matmul::{compute_threads, for_each_chunk, Matrix, SharedOut};

/// Row-major rows per kernel call.
const GROUP: usize = 4;

/// Tokens per call of the many-token kernel.
const TOKENS: usize = 4;

/// One-token chunks per thread (the pool balances chunks).
const CHUNKS_PER_THREAD: usize = 8;

/// Many tokens: rows per chunk, a multiple of 8 (interleaved groups); 32 rows of a
/// 1024-wide head are 34 KiB, which stay in L1/L2 while every token passes.
const MANY_CHUNK_BYTES: usize = 32 * 1024;

/// The kernel of an instruction set: `GROUP` rows or one row against one token.
#[derive(Clone, Copy)]
enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// Whether the CPU has AVX-512 F/BW and `OWL_AVX512` is not `0` (read once), as for the
/// prefill tiles.
#[cfg(target_arch = "x86_64")]
fn avx512_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| wide::avx512::available() && super::avx512_allowed())
}

/// [`avx512_enabled`] and AVX-512 VNNI (read once).
#[cfg(target_arch = "x86_64")]
fn avx512_vnni_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| avx512_enabled() && wide::avx512::vnni_available())
}

impl Kernel {
    /// The best kernel of the active set (`OWL_KERNELS=scalar` gives the scalar one).
    fn select() -> Result<Self, KernelError> {
        Ok(match dispatch::active_isa()? {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if avx512_enabled() => Kernel::Avx512,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Kernel::Avx2,
            _ => Kernel::Scalar,
        })
    }

    #[inline(always)]
    fn rows<const R: usize>(self, w: [&[BlockQ8_0]; R], a: &[BlockQ16]) -> [f32; R] {
        match self {
            Kernel::Scalar => std::array::from_fn(|r| wide::vec_dot(&w[r][..a.len()], a)),
            // SAFETY: chosen only where the active set is AVX2 (AVX2, FMA, F16C present),
            // and AVX-512 only where `available` said so.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { wide::avx2::dot_rows::<R>(w, a) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { wide::avx512::dot_rows::<R>(w, a) },
        }
    }

    /// `R` rows against `T` tokens, each value the bits of [`Kernel::rows`]; None where
    /// the kernel set has no many-token kernel.
    #[inline(always)]
    fn rows_tokens<const R: usize, const T: usize>(
        self,
        w: [&[BlockQ8_0]; R],
        a: [&[BlockQ16]; T],
    ) -> Option<[[f32; R]; T]> {
        match self {
            // SAFETY: AVX-512 only where `available` said so.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => Some(unsafe { wide::avx512::dot_rows_tokens::<R, T>(w, a) }),
            _ => None,
        }
    }

    /// One interleaved group of 8 rows against one token: the scalar reference's bits.
    #[inline(always)]
    fn group(self, group: &[u8], a: &[BlockQ16]) -> [f32; 8] {
        match self {
            Kernel::Scalar => wide::dot_x8(group, a),
            // SAFETY: as in `rows`; the VNNI kernel only where `vnni_available` said so.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if avx512_vnni_enabled() => unsafe { wide::avx512::dot_x8(group, a) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 => unsafe { wide::avx2::dot_x8(group, a) },
        }
    }
}

/// `y[t·rows + r] = Σ_c W[r, c]·x[t·cols + c]` for a Q8_0 `w` (row-major or interleaved),
/// with each token's activations quantized to 16 bits per 32-element block.
pub fn matmul_q8_0_wide(
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    if w.format != BlockFormat::Q8_0 {
        return Err(KernelError::Unsupported { format: w.format, op: "matmul with 16-bit activations" });
    }
    let row_bytes = w.format.row_bytes(w.cols).ok_or(KernelError::RowNotBlockMultiple {
        format: w.format,
        len: w.cols,
        block: QK8_0,
    })?;
    let length = |what, expected: Option<usize>, got, unit| match expected {
        Some(e) if e == got => Ok(()),
        e => Err(KernelError::Length { what, expected: e.unwrap_or(usize::MAX), got, unit }),
    };
    length("matmul W", w.rows.checked_mul(row_bytes), w.data.len(), "bytes")?;
    length("matmul x", n_tokens.checked_mul(w.cols), x.len(), "f32")?;
    length("matmul y", n_tokens.checked_mul(w.rows), y.len(), "f32")?;
    if w.layout == RowLayout::Interleaved8 && !w.rows.is_multiple_of(INTERLEAVE_ROWS) {
        return Err(KernelError::Length {
            what: "interleaved rows",
            expected: INTERLEAVE_ROWS,
            got: w.rows,
            unit: "rows (multiple)",
        });
    }
    if w.rows == 0 || n_tokens == 0 {
        return Ok(());
    }
    let kernel = Kernel::select()?;
    let nb = w.cols / QK8_0;
    let lease = pool.lease();
    let n_threads = compute_threads(&lease, w, n_tokens);
    let chunk = if n_tokens == 1 {
        w.rows.div_ceil(n_threads * CHUNKS_PER_THREAD)
    } else {
        MANY_CHUNK_BYTES / row_bytes.max(1)
    }
    .max(1)
    .next_multiple_of(INTERLEAVE_ROWS);
    let act_bytes = n_tokens * nb * size_of::<BlockQ16>();
    let mut scratch = lease.take_scratch();
    // The scratch buffer is 64-byte aligned and BlockQ16 needs 4.
    let acts: &mut [BlockQ16] = bytemuck::cast_slice_mut(scratch.bytes_mut(act_bytes));
    for (x, a) in x.chunks_exact(w.cols).zip(acts.chunks_exact_mut(nb)) {
        wide::quantize(x, a);
    }
    let acts: &[BlockQ16] = acts;
    let out = SharedOut { ptr: y.as_mut_ptr(), len: y.len() };
    let rows_total = w.rows;
    let data = w.data;
    // SAFETY (every write below): the rows of a chunk belong to one thread only.
    let run = |rows: std::ops::Range<usize>| {
        if w.layout == RowLayout::Interleaved8 {
            // Whole groups (the chunk size and the row count are multiples of 8), read in
            // place; each group stays in L1 while every token passes.
            for r in rows.step_by(INTERLEAVE_ROWS) {
                let group = &data[r * row_bytes..(r + INTERLEAVE_ROWS) * row_bytes];
                for (t, a) in acts.chunks_exact(nb).enumerate() {
                    for (i, v) in kernel.group(group, a).into_iter().enumerate() {
                        unsafe { out.write(t * rows_total + r + i, v) };
                    }
                }
            }
            return;
        }
        let blocks: &[BlockQ8_0] = bytemuck::cast_slice(&data[rows.start * row_bytes..rows.end * row_bytes]);
        let row = |r: usize| &blocks[(r - rows.start) * nb..(r - rows.start + 1) * nb];
        let mut r = rows.start;
        while r < rows.end {
            let n = GROUP.min(rows.end - r);
            // Four tokens at a time through the many-token kernel where there is one (the
            // same bits per value), the rest one by one.
            let mut first = 0;
            if n == GROUP {
                let ws: [&[BlockQ8_0]; GROUP] = std::array::from_fn(|i| row(r + i));
                while first + TOKENS <= n_tokens {
                    let a: [&[BlockQ16]; TOKENS] =
                        std::array::from_fn(|k| &acts[(first + k) * nb..(first + k + 1) * nb]);
                    let Some(v) = kernel.rows_tokens::<GROUP, TOKENS>(ws, a) else { break };
                    for (k, v) in v.into_iter().enumerate() {
                        for (i, v) in v.into_iter().enumerate() {
                            unsafe { out.write((first + k) * rows_total + r + i, v) };
                        }
                    }
                    first += TOKENS;
                }
            }
            for (t, a) in acts.chunks_exact(nb).enumerate().skip(first) {
                let base = t * rows_total + r;
                if n == GROUP {
                    let v = kernel.rows::<GROUP>(std::array::from_fn(|i| row(r + i)), a);
                    for (i, v) in v.into_iter().enumerate() {
                        unsafe { out.write(base + i, v) };
                    }
                } else {
                    for i in 0..n {
                        unsafe { out.write(base + i, kernel.rows::<1>([row(r + i)], a)[0]) };
                    }
                }
            }
            r += n;
        }
    };
    if n_threads > 1 {
        lease.parallel_for(w.rows, chunk, &|_, rows| run(rows));
    } else {
        for_each_chunk(w.rows, chunk, run);
    }
    lease.put_scratch(scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::interleave::interleave_matrix;
    use crate::quant::q8_0::wide::tests::random;

    #[test]
    fn every_token_count_layout_and_thread_count_gives_the_same_bits() {
        // 75 rows: chunks of 8 and a 3-row tail; 96 columns: three blocks.
        let (rows, cols) = (75usize, 96usize);
        let mut w = vec![BlockQ8_0 { d: [0; 2], qs: [0; 32] }; rows * cols / 32];
        crate::quant::q8_0::quantize(&random(rows * cols, 1), &mut w);
        let bytes: &[u8] = bytemuck::cast_slice(&w);
        let m = Matrix::new(BlockFormat::Q8_0, rows, cols, bytes);
        let x = random(5 * cols, 2);
        // The scalar reference, token by token.
        let want: Vec<f32> = (0..5)
            .flat_map(|t| {
                let mut a = vec![BlockQ16 { d: 0.0, qs: [0; 32] }; cols / 32];
                wide::quantize(&x[t * cols..(t + 1) * cols], &mut a);
                let w = &w;
                (0..rows).map(move |r| wide::vec_dot(&w[r * 3..(r + 1) * 3], &a))
            })
            .collect();
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        let mut first: Option<Vec<f32>> = None;
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            let mut y = vec![0.0; 5 * rows];
            assert!(matmul_q8_0_wide(&pool, &m, &x, 5, &mut y).is_ok());
            for (g, e) in y.iter().zip(&want) {
                assert!((g - e).abs() <= 1e-5 * scale, "{threads} threads: {g} vs {e}");
            }
            for t in 0..5 {
                let mut one = vec![0.0; rows];
                assert!(matmul_q8_0_wide(&pool, &m, &x[t * cols..(t + 1) * cols], 1, &mut one).is_ok());
                assert_eq!(one[..], y[t * rows..(t + 1) * rows], "token {t} alone, {threads} threads");
            }
            match &first {
                None => first = Some(y),
                Some(f) => assert_eq!(f, &y, "{threads} threads"),
            }
        }
        // Interleaved rows (72 of them: whole groups) give the scalar reference's bits, for
        // every token count and thread count.
        let mut inter = vec![0u8; 72 * 3 * 34];
        assert!(interleave_matrix(BlockFormat::Q8_0, 72, cols, &bytes[..72 * 3 * 34], &mut inter).is_ok());
        let mi = Matrix::interleaved(BlockFormat::Q8_0, 72, cols, &inter);
        let want72: Vec<f32> = (0..5).flat_map(|t| want[t * rows..t * rows + 72].iter().copied()).collect();
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            let mut b = vec![0.0; 5 * 72];
            assert!(matmul_q8_0_wide(&pool, &mi, &x, 5, &mut b).is_ok());
            assert_eq!(b, want72, "interleaved, {threads} threads");
            let mut one = vec![0.0; 72];
            assert!(matmul_q8_0_wide(&pool, &mi, &x[2 * cols..3 * cols], 1, &mut one).is_ok());
            assert_eq!(one[..], want72[2 * 72..3 * 72], "interleaved, one token, {threads} threads");
        }
        let pool = ThreadPool::new(2);
        // Wrong inputs are errors, not panics.
        let mut y = vec![0.0; rows];
        assert!(matmul_q8_0_wide(&pool, &m, &x[..cols - 1], 1, &mut y).is_err());
        let f32m = Matrix::new(BlockFormat::F32, 1, 4, &[0u8; 16]);
        assert!(matmul_q8_0_wide(&pool, &f32m, &[0.0; 4], 1, &mut [0.0]).is_err());
    }
}
