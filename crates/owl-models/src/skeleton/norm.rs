//! RMSNorm: `y = x / sqrt(mean(x²) + eps) * w`, computed in f32.
//!
//! Gemma's `(1 + w)` convention is resolved at load: the loader adds 1 to the stored weight
//! for Hugging Face checkpoints (llama.cpp's GGUF converter already stored `w + 1`), so the
//! forward pass has one norm for every family.

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

    /// Normalises every `dim()`-long row of `x` into `out`.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        let d = self.dim();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            rms_norm_row(xr, &self.weight, self.eps, or);
        }
    }

    /// Normalises every `dim()`-long row of `x` in place (per-head q/k norms).
    pub fn apply_in_place(&self, x: &mut [f32]) {
        let d = self.dim();
        for row in x.chunks_exact_mut(d) {
            let inv = inv_rms(row, self.eps);
            for (v, w) in row.iter_mut().zip(&self.weight) {
                *v = *v * inv * w;
            }
        }
    }
}

/// `1 / sqrt(mean(x²) + eps)`, summed in 8 lanes (vectorises; ~f32 pairwise accuracy).
#[inline]
pub fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            lanes[i] += c[i] * c[i];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for v in tail {
        sum += v * v;
    }
    1.0 / (sum / x.len() as f32 + eps).sqrt()
}

/// One row: `out = x * inv_rms(x) * w`.
#[inline]
pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let inv = inv_rms(x, eps);
    for ((o, v), w) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * w;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn matches_definition() {
        let x: Vec<f32> = (0..19).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..19).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut out = vec![0.0; 19];
        RmsNorm::new(w.clone(), 1e-6).apply(&x, &mut out);
        let ms: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 19.0;
        for i in 0..19 {
            let want = x[i] as f64 / (ms + 1e-6).sqrt() * w[i] as f64;
            assert!((out[i] as f64 - want).abs() < 1e-6);
        }
        let mut y = x.clone();
        RmsNorm::new(w, 1e-6).apply_in_place(&mut y);
        assert_eq!(y, out);
    }
}
