//! safetensors header parser on arbitrary bytes (owl_fuzz::safetensors_header).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| owl_fuzz::safetensors_header(data));
