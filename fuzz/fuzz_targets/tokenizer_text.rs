//! Arbitrary text through two toy tokenizers, decoded back exactly (owl_fuzz::tokenizer_text).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| owl_fuzz::tokenizer_text(data));
