//! DeepSeek-V2/V3 multi-head latent attention (MLA, DeepSeek-V2 paper §2.1):
//!
//! ```text
//! q            = q_b(rms_norm(q_a(x)))   or q_proj(x)       per head [q_nope | q_pe]
//! [c | k_pe]   = kv_a(x)                                    c: latent (kv_lora_rank), k_pe: one rope head
//! c            = rms_norm(c)
//! [k_nope | v] = kv_b(c)                                    per head
//! q_pe, k_pe   = rope(q_pe), rope(k_pe)                     interleaved pairs; k_pe shared by all heads
//! o_h          = softmax([q_nope|q_pe]_h · [k_nope_h|k_pe] * scale) v_h,   scale = d_qk^-0.5 · mscale²
//! out          = [o_1 .. o_H] W_o
//! ```
//!
//! **What is cached.** This module caches, per position and head, the decompressed key
//! `[k_nope_h | k_pe]` and value `v_h` (declared through `kv_shape` as `n_heads` heads of
//! `qk_nope + qk_rope` / `v_head_dim`), so attention is ordinary multi-head attention over
//! the cache with the skeleton's streaming kernel, exactly transformers' computation.
//! The trade-off: a position costs `n_heads * (qk_nope + qk_rope + v)` values per layer
//! instead of the latent's `kv_lora_rank + qk_rope` — 40960 vs 576 for DeepSeek-V3
//! (71x), 5120 vs 576 for V2-Lite (8.9x): V2-Lite's F16 cache at 4096 positions is 1.1 GB
//! instead of 127 MB. Caching the latent needs the "absorbed" form (q_nope folded through
//! each head's k_b, outputs through v_b), which llama.cpp uses; it is not implemented here.
//! Decompressing instead keeps prefill cheap (no rank-wide dot products per key).
//!
//! Weights: `kv_b` as one `[H*(nope+v)][rank]` matrix (HF, older GGUFs) or as llama.cpp's
//! split `attn_k_b` / `attn_v_b` (the family file transposes `k_b` back, see `deepseek.rs`).

use super::attend::{self, KeyWindow, Queries, ScoreParams, QUERY_BLOCK};
use super::block::{ForwardCtx, Mixer};
use super::linear::Linear;
use super::norm::RmsNorm;
use super::parallel::DisjointSlice;
use crate::error::ModelError;
use crate::kv_cache::{KvLayerShape, LayerKv};

/// Dimensions and score settings of one MLA layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlaSpec {
    pub n_heads: usize,
    /// Width of the compressed KV latent.
    pub kv_lora_rank: usize,
    /// Per-head query/key dims without RoPE.
    pub nope_dim: usize,
    /// Per-head query/key dims with RoPE (the key part is one head shared by all).
    pub rope_dim: usize,
    /// Per-head value dims.
    pub v_dim: usize,
    /// Index of the layer's RoPE among the model's.
    pub rope: usize,
    /// Multiplier on q·k: (nope + rope)^-0.5, times mscale² under YaRN.
    pub scale: f32,
}

impl MlaSpec {
    /// Query/key head width.
    pub fn qk_dim(&self) -> usize {
        self.nope_dim + self.rope_dim
    }
}

/// The query projection: plain (V2-Lite) or low-rank with a norm in between.
#[derive(Debug, Clone)]
pub enum QueryProj {
    Direct(Linear),
    LowRank { a: Linear, norm: RmsNorm, b: Linear },
}

/// The latent → per-head key/value up-projection.
#[derive(Debug, Clone)]
pub enum KvUp {
    /// One matrix, rows per head `[k_nope (nope) | v (v_dim)]`.
    Fused(Linear),
    /// Keys `[H*nope][rank]` and values `[H*v][rank]` apart.
    Split { k: Linear, v: Linear },
}

#[derive(Debug, Clone)]
pub struct LatentAttention {
    spec: MlaSpec,
    q: QueryProj,
    /// `[kv_lora_rank + rope_dim][hidden]`.
    kv_a: Linear,
    kv_norm: RmsNorm,
    kv_up: KvUp,
    o: Linear,
}

impl LatentAttention {
    pub fn new(spec: MlaSpec, q: QueryProj, kv_a: Linear, kv_norm: RmsNorm, kv_up: KvUp, o: Linear) -> Self {
        LatentAttention { spec, q, kv_a, kv_norm, kv_up, o }
    }

    pub fn spec(&self) -> &MlaSpec {
        &self.spec
    }

    fn q_rank(&self) -> usize {
        match &self.q {
            QueryProj::Direct(_) => 0,
            QueryProj::LowRank { a, .. } => a.out_dim(),
        }
    }
}

impl Mixer for LatentAttention {
    fn kv_shape(&self) -> KvLayerShape {
        let s = &self.spec;
        KvLayerShape { heads: s.n_heads, k_dim: s.qk_dim(), v_dim: s.v_dim, window: None }
    }

    fn scratch_floats(&self, max_tokens: usize, n_threads: usize) -> usize {
        let s = &self.spec;
        let (h, qk) = (s.n_heads, s.qk_dim());
        max_tokens
            * (h * qk
                + self.q_rank()
                + (s.kv_lora_rank + s.rope_dim)
                + s.kv_lora_rank
                + h * (s.nope_dim + s.v_dim)
                + h * s.v_dim)
            + h * (qk + s.v_dim)
            + n_threads * (attend::scratch_floats(1, qk, s.v_dim) + QUERY_BLOCK * s.v_dim)
    }

    fn weight_bytes(&self) -> usize {
        let q = match &self.q {
            QueryProj::Direct(w) => w.bytes(),
            QueryProj::LowRank { a, norm, b } => a.bytes() + norm.bytes() + b.bytes(),
        };
        let up = match &self.kv_up {
            KvUp::Fused(w) => w.bytes(),
            KvUp::Split { k, v } => k.bytes() + v.bytes(),
        };
        q + self.kv_a.bytes() + self.kv_norm.bytes() + up + self.o.bytes()
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
        let (heads, nope, rd, vd, rank) = (s.n_heads, s.nope_dim, s.rope_dim, s.v_dim, s.kv_lora_rank);
        let qk = s.qk_dim();
        let (qw, kva_w, up_w) = (heads * qk, rank + rd, heads * (nope + vd));
        let (q, rest) = scratch.split_at_mut(n * qw);
        let (qa, rest) = rest.split_at_mut(n * self.q_rank());
        let (kva, rest) = rest.split_at_mut(n * kva_w);
        let (latent, rest) = rest.split_at_mut(n * rank);
        let (up, rest) = rest.split_at_mut(n * up_w);
        let (attn, rest) = rest.split_at_mut(n * heads * vd);
        let (k_row, rest) = rest.split_at_mut(qw);
        let (v_row, rest) = rest.split_at_mut(heads * vd);

        // Queries.
        match &self.q {
            QueryProj::Direct(w) => w.project(ctx, x, q)?,
            QueryProj::LowRank { a, norm, b } => {
                a.project(ctx, x, qa)?;
                norm.apply_in_place(qa);
                b.project(ctx, qa, q)?;
            }
        }

        // The latent and the shared rope key; then per-head keys/values from the latent.
        self.kv_a.project(ctx, x, kva)?;
        for t in 0..n {
            self.kv_norm.apply(&kva[t * kva_w..t * kva_w + rank], &mut latent[t * rank..(t + 1) * rank]);
        }
        // Per token and head: k_nope at `k_at(t, h)`, v at `v_at(t, h)` in `up`.
        let (k_stride, k_base, v_stride, v_base, head_k, head_v) = match &self.kv_up {
            KvUp::Fused(w) => {
                w.project(ctx, latent, up)?;
                (up_w, 0, up_w, nope, nope + vd, nope + vd)
            }
            KvUp::Split { k, v } => {
                let (ku, vu) = up.split_at_mut(n * heads * nope);
                k.project(ctx, latent, ku)?;
                v.project(ctx, latent, vu)?;
                (heads * nope, 0, heads * vd, n * heads * nope, nope, vd)
            }
        };
        let k_at = |t: usize, h: usize| k_base + t * k_stride + h * head_k;
        let v_at = |t: usize, h: usize| v_base + t * v_stride + h * head_v;

        // RoPE on the rope parts only: every head's q_pe and the one shared k_pe.
        let table = ctx
            .ropes
            .get(s.rope)
            .ok_or_else(|| ModelError::config("rope", format!("layer uses RoPE {} of {}", s.rope, ctx.ropes.len())))?;
        for t in 0..n {
            table.apply(t, &mut kva[t * kva_w + rank..(t + 1) * kva_w], rd);
            for h in 0..heads {
                let at = t * qw + h * qk + nope;
                table.apply(t, &mut q[at..at + rd], rd);
            }
        }

        // Cache every token's decompressed keys and values before any query reads them.
        for t in 0..n {
            let k_pe = &kva[t * kva_w + rank..(t + 1) * kva_w];
            for h in 0..heads {
                let row = &mut k_row[h * qk..(h + 1) * qk];
                row[..nope].copy_from_slice(&up[k_at(t, h)..k_at(t, h) + nope]);
                row[nope..].copy_from_slice(k_pe);
                v_row[h * vd..(h + 1) * vd].copy_from_slice(&up[v_at(t, h)..v_at(t, h) + vd]);
            }
            kv.write(ctx.seqs[t], ctx.positions[t], k_row, v_row);
        }

        // Attention, one (run of a sequence's queries, head) pair per work item.
        let per_thread = attend::scratch_floats(1, qk, vd) + QUERY_BLOCK * vd;
        let thread_scratch = DisjointSlice::new(rest);
        let attn_out = DisjointSlice::new(attn);
        let kv: &LayerKv = kv;
        let q: &[f32] = q;
        let seen = KeyWindow { slots: kv.slots(), window: None };
        let params = ScoreParams { scale: s.scale, softcap: None };
        ctx.pool.parallel_for(ctx.runs.len() * heads, 1, &|thread, items| {
            // SAFETY: thread indices are unique within a job, so per-thread scratch ranges are
            // disjoint; item (run, h) writes only head h of the run's tokens.
            let scratch = unsafe { thread_scratch.range(thread * per_thread..(thread + 1) * per_thread) };
            let (work, block_out) = scratch.split_at_mut(per_thread - QUERY_BLOCK * vd);
            for item in items {
                let (run, h) = (ctx.runs[item / heads], item % heads);
                let seq = ctx.seqs[run.start];
                let queries = Queries {
                    q: &q[run.start * qw + h * qk..],
                    stride: qw,
                    positions: &ctx.positions[run.start..run.start + run.len],
                    n_heads: 1,
                };
                attend::attend(&queries, kv.keys(seq, h), kv.values(seq, h), qk, vd, seen, params, work, block_out);
                for i in 0..run.len {
                    let at = ((run.start + i) * heads + h) * vd;
                    let dst = unsafe { attn_out.range(at..at + vd) };
                    dst.copy_from_slice(&block_out[i * vd..(i + 1) * vd]);
                }
            }
        });

        self.o.project(ctx, attn, out)
    }
}
