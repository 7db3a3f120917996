//! owl-tokenizer integration tests: the demo models' tokenizers against the shared fixtures
//! and against reference data produced by transformers (tests/data, made by
//! scripts/tokenizer_reference/make_expected.py), streaming, chat templates, HF directories.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod chat;
mod corpus;
mod hf_dir;
mod hostile_templates;
mod pre_variants;
mod real_models;
mod streaming;
mod support;
mod vocab_corpus;
