//! Compute primitives over f32 activations and block-format weights.

pub mod f32_activations;
pub mod float_dot;
pub mod matmul;
#[cfg(target_arch = "x86_64")]
pub(crate) mod prefill_int8;
#[cfg(target_arch = "x86_64")]
pub(crate) mod prefill_kquant;

pub use f32_activations::ActivationPrecision;
pub use matmul::{matmul, matmul_batch_invariant, matmul_batch_invariant_with, matmul_with, Matrix};
