//! A window onto the inputs of every projection, for tools that calibrate on activations:
//! `owl imatrix` sums each input column's squares per stored weight, as llama-imatrix does
//! from ggml's eval callback on `MUL_MAT` / `MUL_MAT_ID`.
//!
//! The model calls the observer once per projection per forward (never per element), only
//! when one is attached ([`crate::Model::set_activation_observer`]); without one the cost is
//! a branch per projection.

use crate::weights::WeightOrigin;

pub trait ActivationObserver: Send + Sync {
    /// `x` holds `n` rows of `origin`'s input width, about to be multiplied by that weight
    /// (for a routed expert: only the rows of the tokens routed to it).
    fn observe(&self, origin: &WeightOrigin, x: &[f32], n: usize);
}
