//! Producing a planned tensor's bytes in its output type, a slab of rows at a time: source
//! rows are converted to f32, transformed, quantized and written, and the source pages are
//! released behind them, so memory stays near one slab whatever the tensor's size.

use std::io::{self, Write};

use owl_formats::gguf::GgmlType;
use owl_formats::safetensors::{SafetensorsModel, TensorView};
use owl_kernels::quant::{quantize_row, quantize_row_weighted};
use owl_kernels::BlockFormat;

use crate::plan::{KvPart, PlannedTensor, Producer};
use crate::tensor_names::{permuted_row, Transform};

/// Rows converted per slab: about 8 MiB of f32.
const SLAB_BYTES: usize = 8 << 20;

/// The kernel format that writes `t` (every output type of the converter has one).
pub fn block_format(t: GgmlType) -> Option<BlockFormat> {
    Some(match t {
        GgmlType::F32 => BlockFormat::F32,
        GgmlType::F16 => BlockFormat::F16,
        GgmlType::BF16 => BlockFormat::BF16,
        GgmlType::Q4_0 => BlockFormat::Q4_0,
        GgmlType::Q4_1 => BlockFormat::Q4_1,
        GgmlType::Q5_0 => BlockFormat::Q5_0,
        GgmlType::Q5_1 => BlockFormat::Q5_1,
        GgmlType::Q8_0 => BlockFormat::Q8_0,
        GgmlType::Q2_K => BlockFormat::Q2_K,
        GgmlType::Q3_K => BlockFormat::Q3_K,
        GgmlType::Q4_K => BlockFormat::Q4_K,
        GgmlType::Q5_K => BlockFormat::Q5_K,
        GgmlType::Q6_K => BlockFormat::Q6_K,
        GgmlType::IQ4_NL => BlockFormat::IQ4_NL,
        GgmlType::IQ4_XS => BlockFormat::IQ4_XS,
        _ => return None,
    })
}

fn invalid(name: &str, reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("tensor {name}: {reason}"))
}

/// Quantizes `rows` rows of `cols` f32 values into `ty` and writes them.
pub(crate) struct RowSink<'w> {
    out: &'w mut dyn Write,
    format: BlockFormat,
    cols: usize,
    row_bytes: usize,
    buf: Vec<u8>,
    name: String,
    /// Per-column importance (`n_mat` blocks of `cols`) and rows per matrix, when an
    /// importance matrix steers this tensor.
    importance: Option<(Vec<f32>, usize)>,
    /// Rows written so far (which matrix of a stack the next row belongs to).
    row: usize,
}

impl<'w> RowSink<'w> {
    pub(crate) fn new(out: &'w mut dyn Write, name: &str, ty: GgmlType, cols: usize) -> io::Result<Self> {
        let format = block_format(ty).ok_or_else(|| invalid(name, format!("cannot write {ty}")))?;
        let row_bytes = format
            .row_bytes(cols)
            .ok_or_else(|| invalid(name, format!("rows of {cols} are not whole {} blocks", format.name())))?;
        Ok(RowSink { out, format, cols, row_bytes, buf: Vec::new(), name: name.to_string(), importance: None, row: 0 })
    }

    /// Quantizes with per-column importance: `importance` holds one block of `cols` values
    /// per matrix of `rows_per_matrix` rows (one per expert of a stack).
    pub(crate) fn with_importance(mut self, importance: Vec<f32>, rows_per_matrix: usize) -> Self {
        self.importance = Some((importance, rows_per_matrix.max(1)));
        self
    }

    /// Writes whole rows (`values.len()` a multiple of `cols`).
    pub(crate) fn rows(&mut self, values: &[f32]) -> io::Result<()> {
        let n = values.len() / self.cols.max(1);
        self.buf.resize(n * self.row_bytes, 0);
        for (src, dst) in values.chunks_exact(self.cols).zip(self.buf.chunks_exact_mut(self.row_bytes)) {
            let done = match &self.importance {
                Some((w, per)) => {
                    let m = self.row / per;
                    let w = &w[m * self.cols..(m + 1) * self.cols];
                    quantize_row_weighted(self.format, src, dst, w)
                }
                None => quantize_row(self.format, src, dst),
            };
            done.map_err(|e| invalid(&self.name, e))?;
            self.row += 1;
        }
        self.out.write_all(&self.buf)
    }
}

/// f32 values of `count` elements of `view` starting at element `first`.
fn read_elements(view: &TensorView<'_>, first: usize, count: usize, out: &mut [f32]) -> io::Result<()> {
    let size = view.dtype.bits() / 8;
    let bytes = &view.data[first * size..(first + count) * size];
    let part = TensorView { name: view.name, dtype: view.dtype, shape: &[count], data: bytes };
    part.to_f32_into(&mut out[..count]).map_err(|e| invalid(view.name, e))
}

/// Writes `t` as `ty`.
pub(crate) fn write_tensor(
    st: &SafetensorsModel,
    t: &PlannedTensor,
    ty: GgmlType,
    out: &mut dyn Write,
) -> io::Result<()> {
    let cols = t.cols();
    let mut sink = RowSink::new(out, &t.name, ty, cols)?;
    match &t.producer {
        Producer::Values(v) => sink.rows(v),
        Producer::Tensor { hf, transform } => {
            let view = st.require(hf).map_err(|e| invalid(&t.name, e))?;
            write_source(st, &view, *transform, cols, &mut sink)
        }
        Producer::Experts { hf } => {
            for name in hf {
                let view = st.require(name).map_err(|e| invalid(&t.name, e))?;
                write_source(st, &view, Transform::Copy, cols, &mut sink)?;
            }
            Ok(())
        }
        Producer::KvB { hf, part, heads, nope, v, rank } => {
            let view = st.require(hf).map_err(|e| invalid(&t.name, e))?;
            let all = view.to_f32_vec().map_err(|e| invalid(&t.name, e))?;
            sink.rows(&kv_b_part(&all, *part, *heads, *nope, *v, *rank))
        }
    }
}

/// One source tensor, slab by slab.
fn write_source(
    st: &SafetensorsModel,
    view: &TensorView<'_>,
    transform: Transform,
    cols: usize,
    sink: &mut RowSink<'_>,
) -> io::Result<()> {
    let n = view.n_elements();
    let rows = n / cols.max(1);
    if rows * cols != n {
        return Err(invalid(view.name, format!("{n} elements are not rows of {cols}")));
    }
    match transform {
        Transform::PermuteRope { heads } if view.shape.len() == 1 => {
            // A bias: the same reordering, on elements.
            let all = view.to_f32_vec().map_err(|e| invalid(view.name, e))?;
            let perm: Vec<f32> = (0..n).map(|i| all[permuted_row(i, n, heads)]).collect();
            return sink.rows(&perm);
        }
        Transform::PermuteRope { heads } if heads == 0 || !rows.is_multiple_of(2 * heads) => {
            return Err(invalid(view.name, format!("{rows} rows do not split into {heads} heads of pairs")));
        }
        _ => {}
    }
    let slab_rows = (SLAB_BYTES / 4 / cols.max(1)).clamp(1, rows.max(1));
    let mut buf = vec![0f32; slab_rows * cols];
    let size = view.dtype.bits() / 8;
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + slab_rows).min(rows);
        let slab = &mut buf[..(r1 - r0) * cols];
        match transform {
            Transform::PermuteRope { heads } => {
                for (i, row) in slab.chunks_exact_mut(cols).enumerate() {
                    let src = permuted_row(r0 + i, rows, heads);
                    read_elements(view, src * cols, cols, row)?;
                }
            }
            Transform::Copy | Transform::AddOne => read_elements(view, r0 * cols, (r1 - r0) * cols, slab)?,
        }
        if transform == Transform::AddOne {
            slab.iter_mut().for_each(|x| *x += 1.0);
        }
        sink.rows(slab)?;
        if !matches!(transform, Transform::PermuteRope { .. }) {
            st.release_pages(&view.data[r0 * cols * size..r1 * cols * size]);
        }
        r0 = r1;
    }
    if matches!(transform, Transform::PermuteRope { .. }) {
        st.release_pages(view.data);
    }
    Ok(())
}

/// Rows of `attn_k_b` or `attn_v_b` from DeepSeek's `kv_b_proj` `[H·(nope+v)][rank]`
/// (per head: `nope` key rows, then `v` value rows). `attn_k_b` holds each head's key
/// rows transposed (`[H][rank][nope]`), `attn_v_b` each head's value rows (`[H][v][rank]`).
fn kv_b_part(all: &[f32], part: KvPart, heads: usize, nope: usize, v: usize, rank: usize) -> Vec<f32> {
    let per_head = (nope + v) * rank;
    let mut out = Vec::with_capacity(heads * per_head);
    for h in 0..heads {
        let head = &all[h * per_head..(h + 1) * per_head];
        match part {
            KvPart::K => {
                for r in 0..rank {
                    for i in 0..nope {
                        out.push(head[i * rank + r]);
                    }
                }
            }
            KvPart::V => out.extend_from_slice(&head[nope * rank..]),
        }
    }
    out
}
