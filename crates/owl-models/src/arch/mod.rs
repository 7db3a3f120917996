//! One file per architecture family: config → weights → forward composition, on the
//! shared skeleton. See the crate documentation for how to add one.

pub mod deepseek;
pub mod gemma;
pub mod gemma2;
pub mod gemma3;
pub mod llama;
pub mod mixtral;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3_moe;
