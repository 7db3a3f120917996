//! Compute primitives over f32 activations and block-format weights.

pub mod matmul;

pub use matmul::{matmul, Matrix};
