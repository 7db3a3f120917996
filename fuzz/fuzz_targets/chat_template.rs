//! A chat template from arbitrary bytes, compiled and rendered within limits (owl_fuzz::chat_template).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| owl_fuzz::chat_template(data));
