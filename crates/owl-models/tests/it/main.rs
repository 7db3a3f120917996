//! owl-models integration tests: tiny reference models (transformers' logits, hidden
//! states and greedy continuations), batching, KV-cache behaviour, allocation-free decode,
//! and the three demo GGUF models against their reference top-k log-probs.

#![allow(clippy::unwrap_used)]

mod alloc_counter;
mod batching;
mod common;
mod decode_alloc;
mod demo_models;
mod errors;
mod fixtures;
mod float_formats;
mod gguf_conventions;
mod moe_fixtures;
mod moe_gguf;
mod observe;
