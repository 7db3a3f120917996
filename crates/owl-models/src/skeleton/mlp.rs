//! The gated feed-forward network: `down( act(gate(x)) * up(x) )` (SwiGLU, GeGLU).

use super::activation::Activation;
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
}

impl FeedForward for GatedMlp {
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
                gate.forward(ctx.pool, x, n, a)?;
                up.forward(ctx.pool, x, n, b)?;
                // a = act(gate) * up, in place.
                for (g, u) in a.iter_mut().zip(b.iter()) {
                    *g = self.act.apply(*g) * u;
                }
            }
            GateUp::Fused(w) => {
                // [n][gate | up] spans both halves of the scratch; compact the products into
                // the first n*f values. Token t's result goes to [t*f, (t+1)*f), which lies at
                // or below its own gate values and past every earlier token's: safe in order.
                let both = &mut scratch[..2 * n * f];
                w.forward(ctx.pool, x, n, both)?;
                for t in 0..n {
                    let src = 2 * t * f;
                    for i in 0..f {
                        both[t * f + i] = self.act.apply(both[src + i]) * both[src + f + i];
                    }
                }
            }
        }
        let h = &scratch[..n * f];
        self.down.forward(ctx.pool, h, n, out)
    }
}
