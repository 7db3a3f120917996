//! Compute primitives over f32 activations and block-format weights.

pub mod f32_activations;
pub mod float_dot;
pub mod matmul;
#[cfg(target_arch = "x86_64")]
pub(crate) mod prefill_int8;
#[cfg(target_arch = "x86_64")]
pub(crate) mod prefill_int8_avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod prefill_kquant;
#[cfg(target_arch = "x86_64")]
pub(crate) mod prefill_kquant_avx512;
pub mod wide_head;

/// Whether prefill of the 32-element block formats and the K-quants (Q4_K, Q5_K, Q6_K) runs
/// the AVX-512 VNNI tiles: the CPU has AVX-512 F/BW/VL/VNNI and `OWL_AVX512` is not `0`
/// (read once).
pub fn avx512_prefill_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    return prefill_int8_avx512::enabled();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

pub use f32_activations::ActivationPrecision;
pub use matmul::{matmul, matmul_batch_invariant, matmul_batch_invariant_with, matmul_with, Matrix};
pub use wide_head::matmul_q8_0_wide;
