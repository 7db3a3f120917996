//! Byte-level entry points: one format tag, raw row bytes, no typed blocks needed.
//!
//! `dequantize_row` and `quantize_row` check lengths and return [`KernelError`];
//! `vec_dot_scalar` is a hot-path reference and only debug-asserts them (it still never
//! reads out of bounds: mismatched rows are cut to the shorter one).

use bytemuck::Zeroable;

use super::q8_k::BlockQ8K;
use super::BlockFormat;
use super::{bf16, f16, iq4_nl, iq4_xs, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_1, q8_k};
use crate::KernelError;

/// Size of [`BlockQ8K`] in bytes.
const Q8K_BYTES: usize = std::mem::size_of::<BlockQ8K>();
/// Blocks copied at a time when Q8_K bytes are not 4-aligned (4.7 KiB of stack).
const Q8K_CHUNK: usize = 16;

/// Calls `$body` with `$blocks` bound to `$bytes` cast to the block type of `$fmt`, for
/// every format whose block struct has alignment 1 (all but F32 and Q8_K).
macro_rules! with_blocks {
    ($fmt:expr, $bytes:expr, |$blocks:ident, $module:ident| $body:expr, else $other:expr) => {
        match $fmt {
            BlockFormat::F16 => {
                use f16 as $module;
                let $blocks: &[f16::BlockF16] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::BF16 => {
                use bf16 as $module;
                let $blocks: &[bf16::BlockBF16] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q4_0 => {
                use q4_0 as $module;
                let $blocks: &[q4_0::BlockQ4_0] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q4_1 => {
                use q4_1 as $module;
                let $blocks: &[q4_1::BlockQ4_1] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q5_0 => {
                use q5_0 as $module;
                let $blocks: &[q5_0::BlockQ5_0] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q5_1 => {
                use q5_1 as $module;
                let $blocks: &[q5_1::BlockQ5_1] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q8_0 => {
                use q8_0 as $module;
                let $blocks: &[q8_0::BlockQ8_0] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q8_1 => {
                use q8_1 as $module;
                let $blocks: &[q8_1::BlockQ8_1] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q2_K => {
                use q2_k as $module;
                let $blocks: &[q2_k::BlockQ2K] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q3_K => {
                use q3_k as $module;
                let $blocks: &[q3_k::BlockQ3K] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q4_K => {
                use q4_k as $module;
                let $blocks: &[q4_k::BlockQ4K] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q5_K => {
                use q5_k as $module;
                let $blocks: &[q5_k::BlockQ5K] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::Q6_K => {
                use q6_k as $module;
                let $blocks: &[q6_k::BlockQ6K] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::IQ4_NL => {
                use iq4_nl as $module;
                let $blocks: &[iq4_nl::BlockIQ4NL] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::IQ4_XS => {
                use iq4_xs as $module;
                let $blocks: &[iq4_xs::BlockIQ4XS] = bytemuck::cast_slice($bytes);
                $body
            }
            BlockFormat::F32 | BlockFormat::Q8_K => $other,
        }
    };
}

/// Mutable twin of `with_blocks!`.
macro_rules! with_blocks_mut {
    ($fmt:expr, $bytes:expr, |$blocks:ident, $module:ident| $body:expr, else $other:expr) => {
        match $fmt {
            BlockFormat::F16 => {
                use f16 as $module;
                let $blocks: &mut [f16::BlockF16] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::BF16 => {
                use bf16 as $module;
                let $blocks: &mut [bf16::BlockBF16] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q4_0 => {
                use q4_0 as $module;
                let $blocks: &mut [q4_0::BlockQ4_0] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q4_1 => {
                use q4_1 as $module;
                let $blocks: &mut [q4_1::BlockQ4_1] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q5_0 => {
                use q5_0 as $module;
                let $blocks: &mut [q5_0::BlockQ5_0] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q5_1 => {
                use q5_1 as $module;
                let $blocks: &mut [q5_1::BlockQ5_1] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q8_0 => {
                use q8_0 as $module;
                let $blocks: &mut [q8_0::BlockQ8_0] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q8_1 => {
                use q8_1 as $module;
                let $blocks: &mut [q8_1::BlockQ8_1] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q2_K => {
                use q2_k as $module;
                let $blocks: &mut [q2_k::BlockQ2K] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q3_K => {
                use q3_k as $module;
                let $blocks: &mut [q3_k::BlockQ3K] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q4_K => {
                use q4_k as $module;
                let $blocks: &mut [q4_k::BlockQ4K] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q5_K => {
                use q5_k as $module;
                let $blocks: &mut [q5_k::BlockQ5K] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::Q6_K => {
                use q6_k as $module;
                let $blocks: &mut [q6_k::BlockQ6K] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::IQ4_NL => {
                use iq4_nl as $module;
                let $blocks: &mut [iq4_nl::BlockIQ4NL] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::IQ4_XS => {
                use iq4_xs as $module;
                let $blocks: &mut [iq4_xs::BlockIQ4XS] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            BlockFormat::F32 | BlockFormat::Q8_K => $other,
        }
    };
}

/// The row's byte length for `n` elements, or the error naming why there is none.
fn checked_row_bytes(format: BlockFormat, n: usize) -> Result<usize, KernelError> {
    format.row_bytes(n).ok_or(KernelError::RowNotBlockMultiple { format, len: n, block: format.block_elems() })
}

/// A quantizer's destination must hold exactly `n` elements of `format`.
pub(super) fn check_quantize_destination(
    format: BlockFormat,
    n: usize,
    dst_len: usize,
    what: &'static str,
) -> Result<(), KernelError> {
    let bytes = checked_row_bytes(format, n)?;
    if dst_len != bytes {
        return Err(KernelError::Length { what, expected: bytes, got: dst_len, unit: "bytes" });
    }
    Ok(())
}

/// Dequantizes one row: `src` holds `dst.len()` elements of `format` as GGUF stores them.
///
/// Errors: `dst.len()` not a whole number of blocks, or `src.len()` not its byte size.
pub fn dequantize_row(format: BlockFormat, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    let bytes = checked_row_bytes(format, dst.len())?;
    if src.len() != bytes {
        return Err(KernelError::Length {
            what: "dequantize_row source",
            expected: bytes,
            got: src.len(),
            unit: "bytes",
        });
    }
    with_blocks!(format, src, |blocks, m| m::dequantize(blocks, dst), else match format {
        BlockFormat::Q8_K => for_q8k_chunks(src, |first, blocks| {
            let at = first * super::QK_K;
            q8_k::dequantize(blocks, &mut dst[at..at + blocks.len() * super::QK_K]);
        }),
        _ => {
            for (y, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    });
    Ok(())
}

/// Quantizes one row of `src.len()` elements into `dst` with the format's reference
/// quantizer (F32: a little-endian copy).
///
/// Errors: `src.len()` not a whole number of blocks, or `dst.len()` not its byte size.
pub fn quantize_row(format: BlockFormat, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    check_quantize_destination(format, src.len(), dst.len(), "quantize_row destination")?;
    with_blocks_mut!(format, dst, |blocks, m| m::quantize(src, blocks), else match format {
        BlockFormat::Q8_K => match bytemuck::try_cast_slice_mut::<u8, BlockQ8K>(dst) {
            Ok(blocks) => q8_k::quantize(src, blocks),
            Err(_) => {
                let mut buf = [BlockQ8K::zeroed(); Q8K_CHUNK];
                for (x, out) in src.chunks(Q8K_CHUNK * super::QK_K).zip(dst.chunks_mut(Q8K_CHUNK * Q8K_BYTES)) {
                    let nb = x.len() / super::QK_K;
                    q8_k::quantize(x, &mut buf[..nb]);
                    out.copy_from_slice(bytemuck::cast_slice(&buf[..nb]));
                }
            }
        },
        _ => {
            for (c, x) in dst.chunks_exact_mut(4).zip(src) {
                c.copy_from_slice(&x.to_le_bytes());
            }
        }
    });
    Ok(())
}

/// Scalar reference dot product of one weight row `w` (bytes in `format`) with one
/// activation row `a` (bytes in `format.vec_dot_format()`), both of the same element count.
///
/// Lengths are only debug-asserted (the matmul driver validates shapes once per call); on
/// a mismatch in release builds the rows are cut to the shorter whole number of blocks.
pub fn vec_dot_scalar(format: BlockFormat, w: &[u8], a: &[u8]) -> f32 {
    let act = format.vec_dot_format();
    let (wb, ab) = (format.block_bytes(), act.block_bytes());
    debug_assert!(
        w.len().is_multiple_of(wb) && a.len().is_multiple_of(ab) && w.len() / wb == a.len() / ab,
        "vec_dot_scalar {format:?}: weight {} bytes vs activation {} bytes",
        w.len(),
        a.len()
    );
    let nb = (w.len() / wb).min(a.len() / ab);
    let (w, a) = (&w[..nb * wb], &a[..nb * ab]);
    match format {
        BlockFormat::F32 => super::f32::vec_dot_bytes(w, a),
        BlockFormat::F16 => f16::vec_dot(bytemuck::cast_slice(w), bytemuck::cast_slice(a)),
        BlockFormat::BF16 => bf16::vec_dot(bytemuck::cast_slice(w), bytemuck::cast_slice(a)),
        BlockFormat::Q4_0 => q4_0::vec_dot(bytemuck::cast_slice(w), bytemuck::cast_slice(a)),
        BlockFormat::Q4_1 => q4_1::vec_dot(bytemuck::cast_slice(w), bytemuck::cast_slice(a)),
        BlockFormat::Q5_0 => q5_0::vec_dot(bytemuck::cast_slice(w), bytemuck::cast_slice(a)),
        BlockFormat::Q5_1 => q5_1::vec_dot(bytemuck::cast_slice(w), bytemuck::cast_slice(a)),
        BlockFormat::Q8_0 => q8_0::vec_dot(bytemuck::cast_slice(w), bytemuck::cast_slice(a)),
        BlockFormat::Q8_1 => q8_1::vec_dot(bytemuck::cast_slice(w), bytemuck::cast_slice(a)),
        BlockFormat::IQ4_NL => iq4_nl::vec_dot(bytemuck::cast_slice(w), bytemuck::cast_slice(a)),
        BlockFormat::Q2_K => k_dot(w, a, q2_k::vec_dot),
        BlockFormat::Q3_K => k_dot(w, a, q3_k::vec_dot),
        BlockFormat::Q4_K => k_dot(w, a, q4_k::vec_dot),
        BlockFormat::Q5_K => k_dot(w, a, q5_k::vec_dot),
        BlockFormat::Q6_K => k_dot(w, a, q6_k::vec_dot),
        BlockFormat::IQ4_XS => k_dot(w, a, iq4_xs::vec_dot),
        BlockFormat::Q8_K => {
            // Weights of the activation format itself: both sides may be unaligned.
            let mut sum = 0.0f32;
            let mut buf = [BlockQ8K::zeroed(); Q8K_CHUNK];
            for_q8k_chunks(a, |first, ablocks| {
                for (i, achunk) in ablocks.chunks(Q8K_CHUNK).enumerate() {
                    let at = (first + i * Q8K_CHUNK) * Q8K_BYTES;
                    let wblocks = &mut buf[..achunk.len()];
                    bytemuck::cast_slice_mut::<BlockQ8K, u8>(wblocks)
                        .copy_from_slice(&w[at..at + achunk.len() * Q8K_BYTES]);
                    sum += q8_k::vec_dot(wblocks, achunk);
                }
            });
            sum
        }
    }
}

/// A weight row of an alignment-1 block type `W` against Q8_K activation bytes.
#[inline]
fn k_dot<W: bytemuck::Pod>(w: &[u8], a: &[u8], dot: fn(&[W], &[BlockQ8K]) -> f32) -> f32 {
    let w: &[W] = bytemuck::cast_slice(w);
    let mut sum = 0.0f32;
    for_q8k_chunks(a, |first, blocks| sum += dot(&w[first..first + blocks.len()], blocks));
    sum
}

/// Calls `f(first_block_index, blocks)` over Q8_K bytes (a whole number of blocks):
/// once with the bytes themselves when they are 4-aligned, else chunk by chunk through a
/// stack copy.
fn for_q8k_chunks(bytes: &[u8], mut f: impl FnMut(usize, &[BlockQ8K])) {
    if let Ok(blocks) = bytemuck::try_cast_slice::<u8, BlockQ8K>(bytes) {
        f(0, blocks);
        return;
    }
    let mut buf = [BlockQ8K::zeroed(); Q8K_CHUNK];
    for (i, chunk) in bytes.chunks(Q8K_CHUNK * Q8K_BYTES).enumerate() {
        let nb = chunk.len() / Q8K_BYTES;
        bytemuck::cast_slice_mut::<BlockQ8K, u8>(&mut buf[..nb]).copy_from_slice(&chunk[..nb * Q8K_BYTES]);
        f(i * Q8K_CHUNK, &buf[..nb]);
    }
}

/// Test data shared by the kernels' unit tests: `n` xorshift64 values `(u − center)·scale`
/// with `u` uniform in [0, 1) (the state starts at `seed`, which must be non-zero).
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64, center: f32, scale: f32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - center) * scale
        })
        .collect()
}

/// `src` (`rows × cols`) quantized row by row into `format` with the reference quantizer,
/// and those rows dequantized again: `(bytes, dequantized)`.
#[cfg(test)]
pub(crate) fn test_rows(format: BlockFormat, src: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
    let rb = format.row_bytes(cols).expect("whole blocks");
    let mut w = vec![0u8; rows * rb];
    let mut deq = vec![0f32; rows * cols];
    for r in 0..rows {
        quantize_row(format, &src[r * cols..(r + 1) * cols], &mut w[r * rb..(r + 1) * rb]).expect("quantize");
        dequantize_row(format, &w[r * rb..(r + 1) * rb], &mut deq[r * cols..(r + 1) * cols]).expect("dequantize");
    }
    (w, deq)
}
