//! owl-convert's cross-crate tests: fixture models converted and run through owl-models.

mod convert_reference;
mod fixtures;
mod gguf_py;
mod provenance;
mod vocab;
