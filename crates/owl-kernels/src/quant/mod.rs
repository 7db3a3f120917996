//! Block formats as GGUF stores them (layouts from ggml's `ggml-common.h`).
//!
//! Each format lives in its own module with the `#[repr(C)]` block struct, `dequantize`,
//! `quantize` and a scalar `vec_dot` against its companion activation format
//! ([`BlockFormat::vec_dot_format`]); SIMD versions sit beside the scalar reference.

/// A tensor element format. Not the GGUF type id (that is owl-formats' `GgmlType`): this is
/// what the kernels compute with; owl-models maps one to the other.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ4_NL,
    IQ4_XS,
}

/// Elements per super-block of the K-quants (and IQ4_XS, Q8_K).
pub const QK_K: usize = 256;

impl BlockFormat {
    pub const ALL: [BlockFormat; 17] = [
        Self::F32, Self::F16, Self::BF16, Self::Q4_0, Self::Q4_1, Self::Q5_0, Self::Q5_1,
        Self::Q8_0, Self::Q8_1, Self::Q2_K, Self::Q3_K, Self::Q4_K, Self::Q5_K, Self::Q6_K,
        Self::Q8_K, Self::IQ4_NL, Self::IQ4_XS,
    ];

    /// Elements in one block.
    pub const fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 | Self::IQ4_NL => 32,
            Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K | Self::Q8_K | Self::IQ4_XS => QK_K,
        }
    }

    /// Bytes in one block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 2 + 16,
            Self::Q4_1 => 2 + 2 + 16,
            Self::Q5_0 => 2 + 4 + 16,
            Self::Q5_1 => 2 + 2 + 4 + 16,
            Self::Q8_0 => 2 + 32,
            Self::Q8_1 => 2 + 2 + 32,
            Self::Q2_K => QK_K / 16 + QK_K / 4 + 2 + 2,
            Self::Q3_K => QK_K / 8 + QK_K / 4 + 12 + 2,
            Self::Q4_K => 2 + 2 + 12 + QK_K / 2,
            Self::Q5_K => 2 + 2 + 12 + QK_K / 8 + QK_K / 2,
            Self::Q6_K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
            Self::Q8_K => 4 + QK_K + QK_K / 16 * 2,
            Self::IQ4_NL => 2 + 16,
            Self::IQ4_XS => 2 + 2 + QK_K / 64 + QK_K / 2,
        }
    }

    /// Bytes of a row of `n` elements, or `None` when `n` is not a whole number of blocks.
    pub const fn row_bytes(self, n: usize) -> Option<usize> {
        if n % self.block_elems() != 0 {
            return None;
        }
        Some(n / self.block_elems() * self.block_bytes())
    }

    /// The activation format this weight format's dot product consumes (ggml's
    /// `vec_dot_type`): activations are quantized to it on the fly.
    pub const fn vec_dot_format(self) -> BlockFormat {
        match self {
            Self::F32 => Self::F32,
            Self::F16 => Self::F16,
            Self::BF16 => Self::BF16,
            Self::Q4_0 | Self::Q5_0 | Self::Q8_0 | Self::IQ4_NL => Self::Q8_0,
            Self::Q4_1 | Self::Q5_1 | Self::Q8_1 => Self::Q8_1,
            Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K | Self::Q8_K | Self::IQ4_XS => {
                Self::Q8_K
            }
        }
    }

    /// The name ggml and GGUF use ("Q4_K", "F16", …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2_K => "Q2_K",
            Self::Q3_K => "Q3_K",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
            Self::Q8_K => "Q8_K",
            Self::IQ4_NL => "IQ4_NL",
            Self::IQ4_XS => "IQ4_XS",
        }
    }
}
