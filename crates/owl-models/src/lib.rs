//! owl-models: transformer architectures on one shared skeleton.
//!
//! - [`Model`]: a loaded model ([`Model::load`] takes a GGUF file or a Hugging Face
//!   directory) and its batched forward pass, [`Model::forward`], over a [`Batch`] of tokens
//!   from one or more sequences — prompt chunks and decode steps together — against a
//!   [`KvCache`] (F16 by default, F32 selectable; sliding-window layers keep a ring).
//!   Weights stay in their stored format (quantized GGUF blocks, F16/BF16/F32 safetensors,
//!   mapped from the file) and every matmul goes through `owl_kernels::ops::matmul`.
//!   [`Model::memory_report`] says where the memory goes.
//! - [`ModelConfig`]: the architecture-neutral hyperparameters, from `config.json`
//!   (`owl_formats::hf_config::HfConfig`) or GGUF metadata.
//! - [`registry`]: architecture name → [`registry::Family`]; [`arch`]: one file per family.
//! - [`skeleton`]: the decoder [`skeleton::block::Block`], standard attention and gated MLP,
//!   MLA, sparse MoE, norm layers and RoPE schedules — the structure; the arithmetic is
//!   `owl_kernels::ops`'.
//! - [`weights`]: tensors by name ([`weights::Binder`]) with one error listing every
//!   missing, unexpected or misshapen tensor.
//!
//! # Adding a family
//!
//! 1. Write `src/arch/<family>.rs` with a `pub static FAMILY: Family` naming the HF
//!    `model_type`s and GGUF architectures it serves, and its `build` function, which reads
//!    like the paper: **config** (start from [`ModelConfig::from_hf`] /
//!    [`ModelConfig::from_gguf`], apply the family's conventions), **weights** (bind them with
//!    `skeleton::bind` helpers or `Binder::matrix` / `vector` under both namings via
//!    `Binder::layer_name(l, hf, gguf, suffix)`), **forward** (compose
//!    [`skeleton::block::Block`]s: `Block::pre_norm` or `Block::sandwich`, each with a
//!    `Box<dyn Mixer>` for attention and a `Box<dyn FeedForward>` for the MLP).
//! 2. Add `pub mod <family>;` to `arch/mod.rs` and one line `&arch::<family>::FAMILY` to
//!    [`registry::FAMILIES`].
//!
//! A family whose attention or feed-forward differs (DeepSeek's latent attention, a mixture
//! of experts) implements [`skeleton::block::Mixer`] or [`skeleton::block::FeedForward`] in
//! its own file: `kv_shape` declares what it caches per position (heads, key and value
//! widths, window), `scratch_floats` what working memory it needs for a batch, and
//! `forward` runs it for the batch's tokens using the [`skeleton::block::ForwardCtx`]
//! (thread pool, each token's sequence and position, RoPE tables). The model sizes the
//! cache and scratch from these declarations; nothing in the skeleton changes.

pub mod arch;
pub mod batch;
pub mod config;
mod decode_arena;
pub mod error;
pub mod kv_cache;
mod loader;
pub mod lora;
pub mod memory;
pub mod model;
pub mod observe;
pub mod registry;
pub mod skeleton;
pub mod weights;

pub use batch::Batch;
pub use config::ModelConfig;
pub use error::ModelError;
pub use kv_cache::{KvCache, KvCacheOptions, KvDtype};
pub use loader::block_format;
pub use lora::{LoraAdapter, LoraMatrix, LoraSet};
pub use model::{LoadOptions, MemoryReport, Model, ModelFile, ModelParts, Stage};
pub use observe::ActivationObserver;
pub use owl_kernels::ops::ActivationPrecision;
