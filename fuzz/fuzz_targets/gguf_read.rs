//! GGUF reader on arbitrary bytes (owl_fuzz::gguf_read).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| owl_fuzz::gguf_read(data));
