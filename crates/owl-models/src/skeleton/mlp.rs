//! The gated feed-forward network: `down( act(gate(x)) * up(x) )` (SwiGLU, GeGLU).

use owl_kernels::ops::activation::Activation;

use super::block::{FeedForward, ForwardCtx};
use super::linear::Linear;
use crate::error::ModelError;

/// Gate and up projections: two matrices, or one with rows `[gate | up]` (Phi-3's
/// `gate_up_proj`, llama.cpp's fused `ffn_up`).
#[derive(Debug, Clone)]
pub enum GateUp {
    Separate { gate: Linear, up: Linear },
    Fused(Linear),
}

#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate_up: GateUp,
    down: Linear,
    act: Activation,
    /// Intermediate width.
    ffn_dim: usize,
}

impl GatedMlp {
    pub fn new(gate_up: GateUp, down: Linear, act: Activation) -> Self {
        let ffn_dim = down.in_dim();
        GatedMlp { gate_up, down, act, ffn_dim }
    }

    pub fn gate_up(&self) -> &GateUp {
        &self.gate_up
    }

    pub fn down(&self) -> &Linear {
        &self.down
    }

    pub fn activation(&self) -> Activation {
        self.act
    }
}

impl FeedForward for GatedMlp {
    fn as_gated_mlp(&self) -> Option<&GatedMlp> {
        Some(self)
    }

    fn scratch_floats(&self, max_tokens: usize, _n_threads: usize) -> usize {
        2 * max_tokens * self.ffn_dim
    }

    fn weight_bytes(&self) -> usize {
        let gu = match &self.gate_up {
            GateUp::Separate { gate, up } => gate.bytes() + up.bytes(),
            GateUp::Fused(w) => w.bytes(),
        };
        gu + self.down.bytes()
    }

    fn forward(&self, ctx: &ForwardCtx<'_>, x: &[f32], out: &mut [f32], scratch: &mut [f32]) -> Result<(), ModelError> {
        let (n, f) = (ctx.n_tokens, self.ffn_dim);
        let (a, rest) = scratch.split_at_mut(n * f);
        let b = &mut rest[..n * f];
        match &self.gate_up {
            GateUp::Separate { gate, up } => {
                gate.project(ctx, x, a)?;
                up.project(ctx, x, b)?;
                // a = act(gate) * up, in place (a prompt's rows split over the pool).
                self.act.glu_in_place_split(ctx.pool, a, b, f);
            }
            GateUp::Fused(w) => {
                // [n][gate | up] spans both halves of the scratch; the products are compacted
                // into the first n*f values.
                let both = &mut scratch[..2 * n * f];
                w.project(ctx, x, both)?;
                self.act.glu_fused_rows(both, n, f);
            }
        }
        let h = &scratch[..n * f];
        self.down.project(ctx, h, out)
    }
}
