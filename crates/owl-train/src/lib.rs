//! owl-train: adapting open-weight models with LoRA.
//!
//! - [`adapter`]: LoRA adapter files — PEFT's `adapter_config.json` +
//!   `adapter_model.safetensors` and llama.cpp's GGUF adapters — read, mapped onto a loaded
//!   base model's tensors (Hugging Face or GGUF naming, llama.cpp's q/k row order), checked
//!   against it (architecture, shapes, base model name) and handed to owl-models, which
//!   applies them unmerged, per sequence. A GGUF adapter is written from any of them.
//! - [`train`]: LoRA gradients through a frozen base (quantized or float), by a hand-written
//!   backward pass over owl-models' own layers, and AdamW.
//! - [`merge()`]: adapters baked into a model's weights, written as GGUF in the base's types
//!   or a llama-quantize mix.

pub mod adapter;
pub mod data;
mod error;
mod merge;
pub mod train;

pub use adapter::{load_lora_set, AdapterFile, AdapterSpec, Base, Lineage};
pub use error::{AdapterError, MergeError, TrainError};
pub use merge::{merge, MergeOptions};
