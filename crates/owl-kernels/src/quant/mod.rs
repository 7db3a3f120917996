//! Block formats as GGUF stores them (layouts from ggml's `ggml-common.h`).
//!
//! Each format lives in its own module with the `#[repr(C)]` block struct, `dequantize`,
//! `quantize` and a scalar `vec_dot` against its companion activation format
//! ([`BlockFormat::vec_dot_format`]); SIMD versions sit beside the scalar reference.
//!
//! Every weight block struct has alignment 1 (f16 scales are stored as `[u8; 2]` with an
//! accessor), so any byte slice of a memory-mapped GGUF tensor casts to blocks with
//! `bytemuck::cast_slice`. The one exception is the activation-only [`q8_k::BlockQ8K`],
//! which keeps ggml's native `f32`/`i16` fields (alignment 4): the matmul driver fills it
//! into its own buffers. All multi-byte fields are little-endian, as in GGUF.
//!
//! The byte-level entry points [`dequantize_row`], [`quantize_row`] and [`vec_dot_scalar`]
//! take a [`BlockFormat`] and raw bytes; they are what `owl tensor` and the matmul driver's
//! scalar fallback use.

pub mod bf16;
#[cfg(target_arch = "x86_64")]
pub mod dequantize_avx2;
pub mod f16;
pub mod f32;
pub mod interleave;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;

mod row;
mod scale_search;
#[cfg(target_arch = "aarch64")]
pub(crate) mod simd_neon;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd_x86;
mod util;
mod weighted;
#[cfg(target_arch = "x86_64")]
pub mod x8_avx512;

pub use row::{dequantize_row, quantize_row, vec_dot_scalar};
#[cfg(test)]
pub(crate) use row::{test_rows, test_values};
pub use util::{f16_bits_to_f32, f16_to_f32, f32_to_f16, nearest_int};
pub use weighted::quantize_row_weighted;

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
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q2_K,
        Self::Q3_K,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
        Self::Q8_K,
        Self::IQ4_NL,
        Self::IQ4_XS,
    ];

    /// Whether elements are stored as plain floats (F32, F16, BF16), not quantized blocks.
    pub const fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16)
    }

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
        if !n.is_multiple_of(self.block_elems()) {
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
            Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K | Self::Q8_K | Self::IQ4_XS => Self::Q8_K,
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
