//! Compute primitives over f32 activations and block-format weights: the matmul driver and
//! its tiles, and the float ops of a transformer layer (norms, rotary embeddings, gated
//! activations, residual adds, attention).

pub mod activation;
pub mod attention;
pub(crate) mod exp;
pub mod f32_activations;
pub mod float_dot;
#[cfg(target_arch = "x86_64")]
pub(crate) mod lane_panel;
#[cfg(target_arch = "x86_64")]
pub(crate) mod lane_panel_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod lane_panel_avx512;
pub mod matmul;
pub mod norm;
pub mod panel_matrix;
pub mod rope;
pub mod softmax;
pub mod wide_head;

/// Whether prefill of the 32-element block formats and the K-quants (Q4_K, Q5_K, Q6_K) runs
/// the AVX-512 VNNI tiles: the CPU has AVX-512 F/BW/VL/VNNI and `OWL_AVX512` is not `0`
/// (read once).
pub fn avx512_prefill_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    return lane_panel_avx512::enabled();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

pub use f32_activations::ActivationPrecision;
pub use matmul::{matmul, matmul_batch_invariant, matmul_batch_invariant_with, matmul_with, Matrix};
pub use panel_matrix::{matmul_prepacked, PanelMatrix};
pub use wide_head::matmul_q8_0_wide;

/// Whether the float ops (activations, norms, rotary embeddings, attention) run their
/// AVX2+FMA+F16C bodies: the CPU has them and `OWL_KERNELS` does not ask for the portable
/// kernels (both cached; this is a few loads). Those bodies exist on x86-64 only.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn float_simd_available() -> bool {
    matches!(crate::dispatch::active_isa(), Ok(crate::dispatch::Isa::Avx2))
}

/// Whether the float ops' element-wise parts also run 16 lanes wide: [`float_simd_available`],
/// the CPU has AVX-512 F, and `OWL_AVX512` is not `0` (read once). Only where every width
/// gives the same bits (element-wise products and sums, never a reduction's order).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn avx512_float_available() -> bool {
    use std::sync::OnceLock;
    static ENABLED: OnceLock<bool> = OnceLock::new();
    float_simd_available() && *ENABLED.get_or_init(|| is_x86_feature_detected!("avx512f") && avx512_allowed())
}

/// Whether `OWL_AVX512` (read once; an A/B switch) leaves the AVX-512 kernels on: unset or
/// anything but `0`. Every AVX-512 choice (prefill tiles, output head, float ops) asks here.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_allowed() -> bool {
    use std::sync::OnceLock;
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var("OWL_AVX512").map_or(true, |v| v != "0"))
}
