//! Errors of the GGUF reader and writer. Every reader error names the field it was reading
//! and the byte offset in the file where that field starts.

use std::io;
use std::path::PathBuf;

use super::tensor_info::ShapeProblem;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("writing GGUF output failed after {written} bytes: {source}")]
    Stream {
        written: u64,
        #[source]
        source: io::Error,
    },

    #[error("not a GGUF file: magic at byte 0 is {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic { found: [u8; 4] },

    #[error("GGUF version {version} (field `version` at byte 4) is not supported: owl reads versions 2 and 3{hint}")]
    UnsupportedVersion { version: u32, hint: &'static str },

    #[error("big-endian GGUF (field `version` at byte 4 reads {swapped} byte-swapped) is not supported: convert it with gguf-py's gguf_convert_endian.py")]
    BigEndian { swapped: u32 },

    #[error("truncated GGUF: {field} at byte {offset} needs {needed} bytes, but the file ends at byte {file_size}")]
    Truncated { field: String, offset: u64, needed: u64, file_size: u64 },

    #[error("{field} at byte {offset} is {count}, but each entry needs at least {min_each} bytes and only {remaining} bytes are left in the file")]
    CountTooLarge { field: String, offset: u64, count: u64, min_each: u64, remaining: u64 },

    #[error("{field} at byte {offset} is not valid UTF-8 (invalid byte {valid_up_to} of the string)")]
    InvalidUtf8 { field: String, offset: u64, valid_up_to: u64 },

    #[error("{field} at byte {offset} has unknown GGUF value type {type_id} (known: 0..=12)")]
    UnknownValueType { field: String, offset: u64, type_id: u32 },

    #[error("{field} at byte {offset} is a bool with byte value {value} (must be 0 or 1)")]
    InvalidBool { field: String, offset: u64, value: u8 },

    #[error("{field} at byte {offset}: arrays nested deeper than {limit} levels")]
    NestingTooDeep { field: String, offset: u64, limit: u32 },

    #[error("metadata key {key:?} at byte {offset} appears twice (first at byte {first_offset})")]
    DuplicateKey { key: String, offset: u64, first_offset: u64 },

    #[error("metadata `general.alignment` at byte {offset} is {value}: {reason}")]
    BadAlignment { offset: u64, value: String, reason: &'static str },

    #[error("tensor {tensor:?}: field `type` at byte {offset} is {type_id}, not a known ggml type")]
    UnknownGgmlType { tensor: String, offset: u64, type_id: u32 },

    #[error("tensor {tensor:?} (shape at byte {offset}): {problem}")]
    BadShape { tensor: String, offset: u64, problem: ShapeProblem },

    #[error("tensor name {name:?} at byte {offset} appears twice (first at byte {first_offset})")]
    DuplicateTensor { name: String, offset: u64, first_offset: u64 },

    #[error("tensor {tensor:?}: field `offset` at byte {offset} is {tensor_offset}, not a multiple of the alignment {alignment}")]
    MisalignedTensor { tensor: String, offset: u64, tensor_offset: u64, alignment: u64 },

    #[error("tensor {tensor:?}: data at file bytes {start}..{end} ({n_bytes} bytes; field `offset` at byte {offset}) lies past the end of the file ({file_size} bytes)")]
    TensorOutOfBounds { tensor: String, offset: u64, start: u128, end: u128, n_bytes: u64, file_size: u64 },

    #[error("tensor {tensor:?} (data at file bytes {start}..{end}; field `offset` at byte {offset}) overlaps tensor {other:?} (data at file bytes {other_start}..{other_end})")]
    TensorOverlap { tensor: String, offset: u64, start: u64, end: u64, other: String, other_start: u64, other_end: u64 },

    #[error("metadata {key:?} at byte {offset} has {len} entries but `tokenizer.ggml.tokens` has {tokens_len}: the tokenizer arrays must have one entry per token")]
    TokenizerLength { key: String, offset: u64, len: u64, tokens_len: u64 },

    #[error("metadata {key:?} at byte {offset} is {found}, expected {expected}")]
    WrongValueType { key: String, offset: u64, found: String, expected: &'static str },

    /// Writer input that cannot become a valid GGUF file.
    #[error("cannot write GGUF: {field}: {reason}")]
    InvalidInput { field: String, reason: String },
}
