//! The tokenizer a GGUF file describes, on arbitrary bytes (owl_fuzz::gguf_tokenizer).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| owl_fuzz::gguf_tokenizer(data));
