//! owl-formats: the files model publishers release, read and written without copies.
//!
//! - [`gguf`]: GGUF v2/v3 reader over mmap (`GgufFile`, `MetadataValue`, `TensorInfo`,
//!   `GgmlType`) and writer (`GgufWriter`).
//! - [`safetensors`]: single-file and sharded safetensors model directories.
//! - [`hf_config`]: Hugging Face `config.json` parsed into typed configs.

pub mod gguf;
pub mod hf_config;
mod mapped;
pub mod safetensors;
