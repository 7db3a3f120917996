//! Integration tests of owl-formats (one binary; one module a concern).

mod gguf_corpus;
mod gguf_demo_models;
mod gguf_malformed;
mod gguf_roundtrip;
mod gguf_support;
mod hf_config_fixtures;
mod safetensors_corpus;
mod safetensors_open;
