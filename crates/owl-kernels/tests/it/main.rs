//! owl-kernels integration tests (one binary; one module per area).

#[cfg(target_arch = "x86_64")]
mod dequantize_simd;
mod matmul_alloc;
mod matmul_tests;
mod pool_tests;
mod quant_common;
mod quant_dot;
mod quant_errors;
mod quant_fixtures;
mod quant_roundtrip;
mod quant_weighted;
#[cfg(target_arch = "x86_64")]
mod simd_bench;
#[cfg(target_arch = "x86_64")]
mod simd_common;
#[cfg(target_arch = "x86_64")]
mod simd_dot;
#[cfg(target_arch = "x86_64")]
mod simd_matvec;
#[cfg(target_arch = "x86_64")]
mod simd_quantize;
