//! RMSNorm layers: a weight and an epsilon; the arithmetic is `owl_kernels::ops::norm`'s.
//!
//! Gemma's `(1 + w)` convention is resolved at load: the loader adds 1 to the stored weight
//! for Hugging Face checkpoints (llama.cpp's GGUF converter already stored `w + 1`), so the
//! forward pass has one norm for every family.

use owl_kernels::ops::norm;
use owl_kernels::ThreadPool;

/// An RMSNorm over vectors of `weight.len()` elements.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weight: Vec<f32>, eps: f32) -> Self {
        RmsNorm { weight, eps }
    }

    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    pub fn eps(&self) -> f32 {
        self.eps
    }

    pub fn bytes(&self) -> usize {
        self.weight.len() * 4
    }

    /// Normalises every `dim()`-long row of `x` into `out` (a large batch split over `pool`).
    pub fn apply(&self, pool: &ThreadPool, x: &[f32], out: &mut [f32]) {
        norm::rms_norm_rows(pool, x, &self.weight, self.eps, out);
    }

    /// Normalises every `dim()`-long row of `x` in place (per-head q/k norms, sandwich norms).
    pub fn apply_in_place(&self, pool: &ThreadPool, x: &mut [f32]) {
        norm::rms_norm_rows_in_place(pool, x, &self.weight, self.eps);
    }
}

/// `1 / sqrt(mean(x²) + eps)` with the forward pass's arithmetic (training's backward reuses it).
pub use owl_kernels::ops::norm::inv_rms;
