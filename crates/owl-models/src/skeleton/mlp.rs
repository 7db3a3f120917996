//! The gated feed-forward network: `down( act(gate(x)) * up(x) )` (SwiGLU, GeGLU).

use super::activation::Activation;
use super::block::{FeedForward, ForwardCtx};
use super::linear::Linear;
use super::parallel::DisjointSlice;
use crate::error::ModelError;

/// Gate and up projections: two matrices, or one with rows `[gate | up]` (Phi-3's
/// `gate_up_proj`, llama.cpp's fused `ffn_up`).
#[derive(Debug, Clone)]
pub enum GateUp {
    Separate { gate: Linear, up: Linear },
    Fused(Linear),
}

/// Activations (gate floats) at which the GLU product is split over the thread pool: it
/// costs ~1 ns a float on one core (AVX2), so below this the pool's wake-up would not pay.
const PARALLEL_GLU_FLOATS: usize = 1 << 16;

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
                // a = act(gate) * up, in place; split over the pool for a prompt's many rows.
                let act = self.act;
                let rows_per_chunk = (PARALLEL_GLU_FLOATS / f).max(1);
                if n * f >= PARALLEL_GLU_FLOATS && ctx.pool.n_threads() > 1 {
                    let a_rows = DisjointSlice::new(a);
                    let b: &[f32] = b;
                    ctx.pool.parallel_for(n, rows_per_chunk, &|_, rows| {
                        let r = rows.start * f..rows.end * f;
                        // SAFETY: each range of rows is claimed by one thread.
                        act.glu_in_place(unsafe { a_rows.range(r.clone()) }, &b[r]);
                    });
                } else {
                    act.glu_in_place(a, b);
                }
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
