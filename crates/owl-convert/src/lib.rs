//! owl-convert: Hugging Face checkpoints to GGUF, and GGUF to other quantizations, writing
//! what llama.cpp writes, so the files load in llama.cpp and Ollama as well as in owl.
//!
//! - [`convert()`]: a model directory (`config.json`, safetensors, tokenizer files) to a GGUF
//!   file of one [`FileType`], streamed tensor by tensor.
//! - [`quantize()`]: a GGUF file to another [`FileType`], with llama-quantize's per-tensor
//!   mixes and, optionally, an importance matrix.
//! - [`mix`]: the per-tensor type choices of llama.cpp's named mixes (`Q4_K_M`, ...).

pub mod arch;
mod convert;
mod error;
mod file_type;
mod hparams;
pub mod imatrix;
mod metadata;
pub mod mix;
pub mod plan;
mod progress;
mod provenance;
mod quantize;
mod stream;
pub mod tensor_names;
mod vocab;

pub use convert::{convert, ConvertOptions, ConvertSummary};
pub use error::ConvertError;
pub use file_type::FileType;
pub use progress::Progress;
pub use quantize::{quantize, QuantizeOptions, QuantizeSummary, TensorEdit, QUANTIZATION_VERSION};
