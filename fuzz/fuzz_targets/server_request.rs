//! A request body on one of the HTTP server's POST routes, answered by the real engine over a toy model (owl_fuzz::server_request).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| owl_fuzz::server_request(data));
