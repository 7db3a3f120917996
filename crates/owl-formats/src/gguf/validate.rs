//! Checks across fields that the byte-level parser cannot make alone: the alignment value,
//! the tokenizer arrays agreeing in length, and tensor data lying aligned, inside the file
//! and without overlap. Shared by the reader and the writer.

use super::error::GgufError;
use super::read::DEFAULT_ALIGNMENT;
use super::tensor_info::TensorInfo;
use super::value::{MetadataArray, MetadataValue};

/// Alignments above this are refused: GGUF writers use 32 (a few use 64 or a page), and an
/// absurd value would make the data offset meaningless.
pub const MAX_ALIGNMENT: u64 = 1 << 20;

pub const ALIGNMENT_KEY: &str = "general.alignment";
pub const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
/// Arrays that must have one entry per token, with the element kind they must hold.
const PER_TOKEN_KEYS: [(&str, ElementKind); 2] =
    [("tokenizer.ggml.scores", ElementKind::Number), ("tokenizer.ggml.token_type", ElementKind::Integer)];

#[derive(Clone, Copy)]
enum ElementKind {
    Number,
    Integer,
}

fn find<'m>(metadata: &'m [(String, MetadataValue)], key: &str) -> Option<(usize, &'m MetadataValue)> {
    metadata.iter().enumerate().find(|(_, (k, _))| k == key).map(|(i, (_, v))| (i, v))
}

fn describe(v: &MetadataValue) -> String {
    match v {
        MetadataValue::Array(a) => format!("an array of {}", a.element_type_name()),
        other => format!("a {}", other.type_name()),
    }
}

/// The data alignment: `general.alignment` if present (a power of two, at most 1 MiB), else 32.
/// `offsets[i]` is the byte offset of `metadata[i]` (0 for the writer, which has none yet).
pub fn alignment(metadata: &[(String, MetadataValue)], offsets: &[u64]) -> Result<u64, GgufError> {
    let Some((i, value)) = find(metadata, ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let offset = offsets.get(i).copied().unwrap_or(0);
    let bad = |reason| GgufError::BadAlignment { offset, value: value.to_string(), reason };
    let Some(a) = value.as_u64() else {
        return Err(bad(match value.as_i64() {
            Some(_) => "it must be positive",
            None => "it must be an unsigned integer",
        }));
    };
    if a == 0 || !a.is_power_of_two() {
        return Err(bad("it must be a power of two"));
    }
    if a > MAX_ALIGNMENT {
        return Err(bad("it must be at most 1 MiB (1048576)"));
    }
    Ok(a)
}

/// `tokenizer.ggml.tokens` must be an array of strings, and `tokenizer.ggml.scores` /
/// `tokenizer.ggml.token_type` (when present) numeric arrays of the same length: the
/// tokenizer indexes all three by token id.
pub fn tokenizer_arrays(metadata: &[(String, MetadataValue)], offsets: &[u64]) -> Result<(), GgufError> {
    let Some((ti, tokens)) = find(metadata, TOKENS_KEY) else {
        return Ok(());
    };
    let offset_of = |i: usize| offsets.get(i).copied().unwrap_or(0);
    let tokens_len = match tokens {
        MetadataValue::Array(MetadataArray::String(t)) => t.len() as u64,
        MetadataValue::Array(MetadataArray::ByteStrings(t)) => t.len() as u64,
        other => {
            return Err(GgufError::WrongValueType {
                key: TOKENS_KEY.to_string(),
                offset: offset_of(ti),
                found: describe(other),
                expected: "an array of strings",
            })
        }
    };
    for (key, kind) in PER_TOKEN_KEYS {
        let Some((i, value)) = find(metadata, key) else {
            continue;
        };
        let offset = offset_of(i);
        let ok_kind = match (value, kind) {
            (MetadataValue::Array(a), ElementKind::Number) => a.to_f32s().is_some(),
            (MetadataValue::Array(a), ElementKind::Integer) => a.to_i64s().is_some(),
            _ => false,
        };
        if !ok_kind {
            let expected = match kind {
                ElementKind::Number => "an array of numbers (f32)",
                ElementKind::Integer => "an array of integers (i32)",
            };
            return Err(GgufError::WrongValueType { key: key.to_string(), offset, found: describe(value), expected });
        }
        let len = value.as_array().map_or(0, |a| a.len() as u64);
        if len != tokens_len {
            return Err(GgufError::TokenizerLength { key: key.to_string(), offset, len, tokens_len });
        }
    }
    Ok(())
}

/// Every tensor's data starts at a multiple of `alignment`, ends inside the file, and shares
/// no byte with another tensor's. `offset_fields[i]` is where tensor i's `offset` was read.
pub fn tensor_layout(
    tensors: &[TensorInfo],
    offset_fields: &[u64],
    data_offset: u64,
    alignment: u64,
    file_size: u64,
) -> Result<(), GgufError> {
    let field_of = |i: usize| offset_fields.get(i).copied().unwrap_or(0);
    for (i, t) in tensors.iter().enumerate() {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: t.name.clone(),
                offset: field_of(i),
                tensor_offset: t.offset,
                alignment,
            });
        }
        // u128: a hostile offset near u64::MAX must not wrap around into the file.
        let start = u128::from(data_offset) + u128::from(t.offset);
        let end = start + u128::from(t.n_bytes);
        if end > u128::from(file_size) {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: field_of(i),
                start,
                end,
                n_bytes: t.n_bytes,
                file_size,
            });
        }
    }
    // All ranges are inside the file now, so u64 arithmetic is exact.
    let mut order: Vec<usize> = (0..tensors.len()).filter(|&i| tensors[i].n_bytes > 0).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for pair in order.windows(2) {
        let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
        if a.offset + a.n_bytes > b.offset {
            return Err(GgufError::TensorOverlap {
                tensor: b.name.clone(),
                offset: field_of(pair[1]),
                start: data_offset + b.offset,
                end: data_offset + b.offset + b.n_bytes,
                other: a.name.clone(),
                other_start: data_offset + a.offset,
                other_end: data_offset + a.offset + a.n_bytes,
            });
        }
    }
    Ok(())
}
