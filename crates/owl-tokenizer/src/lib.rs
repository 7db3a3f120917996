//! owl-tokenizer
