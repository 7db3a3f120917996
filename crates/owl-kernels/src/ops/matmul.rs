//! y = W·x for a weight matrix in any block format and a batch of f32 activations.
//!
//! PLACEHOLDER: F32 only, scalar. The kernels work replaces the body with quantized
//! activations, SIMD dot products and tiling; the signature stays.

use crate::pool::ThreadPool;
use crate::quant::BlockFormat;
use crate::KernelError;

/// A row-major weight matrix as stored: `rows` rows of `cols` elements in `format`
/// (GGUF's `[ne0 = cols, ne1 = rows]`; PyTorch's `nn.Linear.weight` `[out = rows, in = cols]`).
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub format: BlockFormat,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

/// `y[t * w.rows + r] = Σ_c W[r, c] · x[t * w.cols + c]` for `t < n_tokens`.
pub fn matmul(
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let _ = pool;
    if x.len() != n_tokens * w.cols {
        return Err(KernelError::Length { what: "matmul x", expected: n_tokens * w.cols, got: x.len(), unit: "f32" });
    }
    if y.len() != n_tokens * w.rows {
        return Err(KernelError::Length { what: "matmul y", expected: n_tokens * w.rows, got: y.len(), unit: "f32" });
    }
    if w.format != BlockFormat::F32 {
        return Err(KernelError::Unsupported { format: w.format, op: "matmul (placeholder)" });
    }
    let row_bytes = w.cols * 4;
    if w.data.len() != w.rows * row_bytes {
        return Err(KernelError::Length { what: "matmul W", expected: w.rows * row_bytes, got: w.data.len(), unit: "bytes" });
    }
    for t in 0..n_tokens {
        let xt = &x[t * w.cols..(t + 1) * w.cols];
        for r in 0..w.rows {
            let row = &w.data[r * row_bytes..(r + 1) * row_bytes];
            let mut acc = 0.0f32;
            for (c, xv) in row.chunks_exact(4).zip(xt) {
                acc += f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * xv;
            }
            y[t * w.rows + r] = acc;
        }
    }
    Ok(())
}
