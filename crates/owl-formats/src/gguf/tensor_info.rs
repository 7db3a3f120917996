//! Tensor infos: name, shape, type and where the data lies; sizes computed with overflow
//! checks so that a hostile shape cannot wrap around.

use std::fmt;

use super::ggml_type::GgmlType;

/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS` in ggml.h); llama.cpp refuses
/// GGUF tensor infos with more.
pub const MAX_DIMS: usize = 4;

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `shape[0]` (ne[0]) is the contiguous dimension, so a PyTorch weight of
    /// shape `[out, in]` appears here as `[in, out]`.
    pub shape: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Start of the data relative to the file's data section (`GgufFile::data_offset`).
    pub offset: u64,
    /// Product of `shape`.
    pub n_elements: u64,
    /// Bytes of data: `n_elements / block_elems * block_bytes`.
    pub n_bytes: u64,
}

/// Why a shape cannot describe ggml tensor data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeProblem {
    /// ggml writes at least one dimension; a 0-dimensional info is not something llama.cpp
    /// or gguf-py produce for model weights, so it is treated as corrupt.
    NoDims,
    TooManyDims {
        n_dims: u64,
    },
    /// The element count does not fit ggml's `int64_t`.
    ElementsOverflow {
        shape: Vec<u64>,
    },
    /// Rows must hold whole quantization blocks.
    RowNotWholeBlocks {
        row: u64,
        ggml_type: GgmlType,
        block_elems: u64,
    },
    BytesOverflow {
        n_elements: u64,
        ggml_type: GgmlType,
    },
}

impl fmt::Display for ShapeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeProblem::NoDims => f.write_str("field `n_dims` is 0; a tensor needs 1 to 4 dimensions"),
            ShapeProblem::TooManyDims { n_dims } => {
                write!(f, "field `n_dims` is {n_dims}; ggml tensors have at most {MAX_DIMS} dimensions")
            }
            ShapeProblem::ElementsOverflow { shape } => {
                write!(f, "shape {shape:?} has more elements than fit in a signed 64-bit count")
            }
            ShapeProblem::RowNotWholeBlocks { row, ggml_type, block_elems } => {
                write!(f, "row length shape[0] = {row} is not a multiple of the {ggml_type} block size {block_elems}")
            }
            ShapeProblem::BytesOverflow { n_elements, ggml_type } => {
                write!(f, "{n_elements} elements of {ggml_type} need more than 2^64 bytes")
            }
        }
    }
}

impl TensorInfo {
    /// A tensor info with `n_elements` and `n_bytes` computed and the shape checked.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<u64>,
        ggml_type: GgmlType,
        offset: u64,
    ) -> Result<TensorInfo, ShapeProblem> {
        let (n_elements, n_bytes) = shape_size(&shape, ggml_type)?;
        Ok(TensorInfo { name: name.into(), shape, ggml_type, offset, n_elements, n_bytes })
    }

    pub fn n_dims(&self) -> usize {
        self.shape.len()
    }

    /// Elements in one row (`shape[0]`).
    pub fn row_elems(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of `shape[1..]`).
    pub fn n_rows(&self) -> u64 {
        self.shape.iter().skip(1).product()
    }

    /// Bytes of one row (whole blocks by construction).
    pub fn row_bytes(&self) -> u64 {
        self.row_elems() / self.ggml_type.block_elems() * self.ggml_type.block_bytes()
    }
}

/// `(n_elements, n_bytes)` of a shape, or why it is invalid.
pub fn shape_size(shape: &[u64], ggml_type: GgmlType) -> Result<(u64, u64), ShapeProblem> {
    if shape.is_empty() {
        return Err(ShapeProblem::NoDims);
    }
    if shape.len() > MAX_DIMS {
        return Err(ShapeProblem::TooManyDims { n_dims: shape.len() as u64 });
    }
    let mut n_elements: u64 = 1;
    for &d in shape {
        n_elements = n_elements
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| ShapeProblem::ElementsOverflow { shape: shape.to_vec() })?;
    }
    let block_elems = ggml_type.block_elems();
    if !shape[0].is_multiple_of(block_elems) {
        return Err(ShapeProblem::RowNotWholeBlocks { row: shape[0], ggml_type, block_elems });
    }
    let n_bytes = ggml_type.bytes_for(n_elements).ok_or(ShapeProblem::BytesOverflow { n_elements, ggml_type })?;
    Ok((n_elements, n_bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_real_shapes() {
        let t = TensorInfo::new("token_embd.weight", vec![576, 49152], GgmlType::Q8_0, 0).unwrap();
        assert_eq!(t.n_elements, 576 * 49152);
        assert_eq!(t.n_bytes, 576 / 32 * 34 * 49152);
        assert_eq!(t.row_bytes(), 576 / 32 * 34);
        assert_eq!(t.n_rows(), 49152);
        let n = TensorInfo::new("norm", vec![640], GgmlType::F32, 0).unwrap();
        assert_eq!((n.n_elements, n.n_bytes, n.n_rows()), (640, 2560, 1));
    }

    #[test]
    fn rejects_bad_shapes() {
        use ShapeProblem::*;
        assert_eq!(shape_size(&[], GgmlType::F32), Err(NoDims));
        assert_eq!(shape_size(&[1, 1, 1, 1, 1], GgmlType::F32), Err(TooManyDims { n_dims: 5 }));
        assert!(matches!(shape_size(&[u64::MAX, 2], GgmlType::F32), Err(ElementsOverflow { .. })));
        assert!(matches!(shape_size(&[1 << 32, 1 << 31], GgmlType::I8), Err(ElementsOverflow { .. })));
        assert!(matches!(shape_size(&[100, 2], GgmlType::Q4_0), Err(RowNotWholeBlocks { row: 100, .. })));
        assert!(matches!(shape_size(&[1 << 62], GgmlType::F32), Err(BytesOverflow { .. })));
        assert_eq!(shape_size(&[0, 7], GgmlType::Q4_K), Ok((0, 0)));
    }
}
