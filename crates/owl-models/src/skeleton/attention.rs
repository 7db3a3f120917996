//! Multi-head causal self-attention with grouped KV heads (MHA, GQA, MQA), as Llama and
//! most of its descendants use it:
//!
//! ```text
//! q, k, v = x Wq (+bq), x Wk (+bk), x Wv (+bv)        separate or one fused [q|k|v] matrix
//! q, k    = norm_per_head(q), norm_per_head(k)          Qwen3, Gemma 3 (optional)
//! q, k    = rope(q, pos), rope(k, pos)                  all or the first rot_dims of a head
//! cache  <- k, v                                        at (sequence, position)
//! o_h     = softmax(softcap(q_h · K^T * scale)) V       keys of the head's group, causal,
//!                                                       the last `window` positions if set
//! out     = [o_1 .. o_H] Wo
//! ```

use super::block::{ForwardCtx, Mixer};
use super::linear::Linear;
use super::norm::RmsNorm;
use crate::error::ModelError;
use crate::kv_cache::{KvLayerShape, LayerKv};
use owl_kernels::ops::attention::{self as attend, Block, BlockShape, KeyWindow, Queries, ScoreParams};
use owl_kernels::parallel::DisjointSlice;

/// Shape and score settings of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Sliding window (keys `p - window < j <= p`), `None` for full causal attention.
    pub window: Option<usize>,
    /// Index of this layer's RoPE among the model's (see `ModelParts::ropes`); `None`: no
    /// positional rotation (NoPE layers).
    pub rope: Option<usize>,
    pub scores: ScoreParams,
}

/// q/k/v projections: three matrices or one with rows `[q | k | v]`.
#[derive(Debug, Clone)]
pub enum QkvProj {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

#[derive(Debug, Clone)]
pub struct Attention {
    spec: AttentionSpec,
    qkv: QkvProj,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
}

impl Attention {
    pub fn new(spec: AttentionSpec, qkv: QkvProj, o: Linear) -> Self {
        Attention { spec, qkv, o, q_norm: None, k_norm: None }
    }

    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3, Gemma 3).
    pub fn with_qk_norm(mut self, q_norm: RmsNorm, k_norm: RmsNorm) -> Self {
        self.q_norm = Some(q_norm);
        self.k_norm = Some(k_norm);
        self
    }

    pub fn spec(&self) -> &AttentionSpec {
        &self.spec
    }

    pub fn qkv(&self) -> &QkvProj {
        &self.qkv
    }

    pub fn o(&self) -> &Linear {
        &self.o
    }

    /// The per-head query and key norms, when the family has them.
    pub fn qk_norms(&self) -> Option<(&RmsNorm, &RmsNorm)> {
        self.q_norm.as_ref().zip(self.k_norm.as_ref())
    }

    /// The attention blocks' shape: one KV head's group of query heads.
    fn block_shape(&self, keys_seen: KeyWindow) -> BlockShape {
        let s = &self.spec;
        let rep = s.n_heads / s.n_kv_heads;
        BlockShape { n_heads: rep, k_dim: s.head_dim, v_dim: s.head_dim, keys_seen, params: s.scores }
    }

    fn widths(&self) -> (usize, usize) {
        let s = &self.spec;
        (s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim)
    }
}

impl Mixer for Attention {
    fn as_attention(&self) -> Option<&Attention> {
        Some(self)
    }

    fn kv_shape(&self) -> KvLayerShape {
        let s = &self.spec;
        KvLayerShape { heads: s.n_kv_heads, k_dim: s.head_dim, v_dim: s.head_dim, window: s.window }
    }

    fn scratch_floats(&self, max_tokens: usize, n_threads: usize) -> usize {
        let (qw, kw) = self.widths();
        let fused = match self.qkv {
            QkvProj::Fused(_) => max_tokens * (qw + 2 * kw),
            QkvProj::Separate { .. } => 0,
        };
        // The window does not change the scratch.
        let shape = self.block_shape(KeyWindow { slots: 1, window: None });
        max_tokens * (2 * qw + 2 * kw) + fused + attend::scratch_floats_for(&shape, n_threads)
    }

    fn weight_bytes(&self) -> usize {
        let qkv = match &self.qkv {
            QkvProj::Separate { q, k, v } => q.bytes() + k.bytes() + v.bytes(),
            QkvProj::Fused(w) => w.bytes(),
        };
        let norms = self.q_norm.as_ref().map_or(0, RmsNorm::bytes) + self.k_norm.as_ref().map_or(0, RmsNorm::bytes);
        qkv + self.o.bytes() + norms
    }

    fn forward(
        &self,
        ctx: &ForwardCtx<'_>,
        kv: &mut LayerKv,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), ModelError> {
        let s = &self.spec;
        let n = ctx.n_tokens;
        let hd = s.head_dim;
        let (qw, kw) = self.widths();
        let (q, rest) = scratch.split_at_mut(n * qw);
        let (k, rest) = rest.split_at_mut(n * kw);
        let (v, rest) = rest.split_at_mut(n * kw);
        let (attn, rest) = rest.split_at_mut(n * qw);

        // Projections.
        let rest = match &self.qkv {
            QkvProj::Separate { q: wq, k: wk, v: wv } => {
                wq.project(ctx, x, q)?;
                wk.project(ctx, x, k)?;
                wv.project(ctx, x, v)?;
                rest
            }
            QkvProj::Fused(w) => {
                let width = qw + 2 * kw;
                let (fused, rest) = rest.split_at_mut(n * width);
                w.project(ctx, x, fused)?;
                for t in 0..n {
                    let row = &fused[t * width..(t + 1) * width];
                    q[t * qw..(t + 1) * qw].copy_from_slice(&row[..qw]);
                    k[t * kw..(t + 1) * kw].copy_from_slice(&row[qw..qw + kw]);
                    v[t * kw..(t + 1) * kw].copy_from_slice(&row[qw + kw..]);
                }
                rest
            }
        };

        // Per-head norms, then rotary positions.
        if let Some(norm) = &self.q_norm {
            norm.apply_in_place(ctx.pool, q);
        }
        if let Some(norm) = &self.k_norm {
            norm.apply_in_place(ctx.pool, k);
        }
        if let Some(r) = s.rope {
            let table = &ctx.ropes[r];
            table.apply_tokens(ctx.pool, q, qw, 0, s.n_heads, hd);
            table.apply_tokens(ctx.pool, k, kw, 0, s.n_kv_heads, hd);
        }

        // Every key of the batch goes into the cache before any query reads it: a prompt
        // chunk attends to itself through the cache, exactly like a decode step.
        for t in 0..n {
            kv.write(ctx.seqs[t], ctx.positions[t], &k[t * kw..(t + 1) * kw], &v[t * kw..(t + 1) * kw]);
        }

        // Attention, one (run of a sequence's queries, KV head) pair per block.
        let rep = s.n_heads / s.n_kv_heads;
        let attn_out = DisjointSlice::new(attn);
        let kv: &LayerKv = kv;
        let q: &[f32] = q;
        let shape = self.block_shape(KeyWindow { slots: kv.slots(), window: s.window });
        let block = |item: usize| {
            let (run, g) = (ctx.runs[item / s.n_kv_heads], item % s.n_kv_heads);
            let seq = ctx.seqs[run.start];
            let queries = Queries {
                q: &q[run.start * qw + g * rep * hd..],
                stride: qw,
                positions: &ctx.positions[run.start..run.start + run.len],
                n_heads: rep,
            };
            Block { queries, keys: kv.keys(seq, g), values: kv.values(seq, g) }
        };
        let emit = |item: usize, block_out: &[f32]| {
            let (run, g) = (ctx.runs[item / s.n_kv_heads], item % s.n_kv_heads);
            for i in 0..run.len {
                let t = run.start + i;
                // SAFETY: block (run, g) writes only heads g*rep..(g+1)*rep of the run's
                // tokens, and each block is emitted once.
                let dst = unsafe { attn_out.range(t * qw + g * rep * hd..t * qw + (g + 1) * rep * hd) };
                dst.copy_from_slice(&block_out[i * rep * hd..(i + 1) * rep * hd]);
            }
        };
        attend::attend_blocks(ctx.pool, ctx.runs.len() * s.n_kv_heads, &shape, rest, &block, &emit);

        self.o.project(ctx, attn, out)
    }
}
