//! AdamW (Loshchilov & Hutter, arXiv:1711.05101) as `torch.optim.AdamW` computes it:
//! decoupled weight decay `p ← p·(1 − lr·λ)`, then `m ← β₁m + (1−β₁)g`,
//! `v ← β₂v + (1−β₂)g²`, `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)` (ε outside the root).

use super::step::{Grads, LoraParams};

/// AdamW's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    /// torch's defaults, without weight decay (LoRA fine-tunes usually leave it at 0).
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// The optimizer's state: both moments of every parameter, and the step count.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub m: Grads,
    pub v: Grads,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &LoraParams) -> Self {
        AdamW { config, step: 0, m: params.zero_grads(), v: params.zero_grads() }
    }

    /// One update of every pair with learning rate `lr`.
    pub fn update(&mut self, params: &mut LoraParams, grads: &Grads, lr: f32) {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let step_size = (f64::from(lr) / (1.0 - f64::from(c.beta1).powi(t))) as f32;
        let bias2_sqrt = (1.0 - f64::from(c.beta2).powi(t)).sqrt() as f32;
        let decay = 1.0 - lr * c.weight_decay;
        for (i, pair) in params.pairs.iter_mut().enumerate() {
            for (values, g, m, v) in [
                (&mut pair.a, &grads.a[i], &mut self.m.a[i], &mut self.v.a[i]),
                (&mut pair.b, &grads.b[i], &mut self.m.b[i], &mut self.v.b[i]),
            ] {
                for (((p, &g), m), v) in values.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *p *= decay;
                    *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                    *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
                    *p -= step_size * *m / (v.sqrt() / bias2_sqrt + c.eps);
                }
            }
        }
    }
}
