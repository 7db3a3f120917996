//! GGUF v2/v3: the single-file format of llama.cpp and Ollama (spec: ggml/docs/gguf.md).
//!
//! - [`GgufFile`] maps a file, parses and validates the header, metadata and tensor infos,
//!   and hands out zero-copy tensor data views. Malformed input is an [`GgufError`] naming
//!   the field and its byte offset; counts from the file are checked against the bytes left
//!   before anything is allocated for them.
//! - [`MetadataValue`] / [`MetadataArray`]: the 13 value types, arrays kept typed.
//! - [`TensorInfo`] and [`GgmlType`]: shapes in ggml order, sizes from the block geometry.
//! - [`GgufWriter`]: builds a file from metadata and tensors and writes it in one streaming
//!   pass, atomically when writing to a path. A file read and written back is byte-identical.

mod cursor;
mod error;
mod file_type;
mod ggml_type;
mod read;
mod read_value;
mod tensor_info;
mod validate;
mod value;
mod write;

pub use error::GgufError;
pub use file_type::file_type_name;
pub use ggml_type::GgmlType;
pub use read::{GgufFile, DEFAULT_ALIGNMENT, GGUF_MAGIC};
pub use read_value::MAX_ARRAY_DEPTH;
pub use tensor_info::{shape_size, ShapeProblem, TensorInfo, MAX_DIMS};
pub use validate::{ALIGNMENT_KEY, MAX_ALIGNMENT, TOKENS_KEY};
pub use value::{type_id, MetadataArray, MetadataValue};
pub use write::{GgufWriter, TensorData, TensorWriteFn};
