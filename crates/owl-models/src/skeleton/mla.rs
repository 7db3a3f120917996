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
//! **What is cached: the latent (absorbed form).** Per position, only `[c | k_pe]`
//! (`kv_lora_rank + qk_rope` values, one "head" shared by all) — as llama.cpp and vLLM cache
//! it: 576 values a layer for DeepSeek-V3 instead of 40960 for decompressed keys and values
//! (71x less), 576 instead of 5120 for V2-Lite (8.9x). The up-projection is folded into the
//! two sides of attention (DeepSeek-V2 paper §2.1.2):
//!
//! ```text
//! q_nope_h · k_nope_h = q_nope_h · (K_h c) = (K_hᵀ q_nope_h) · c        K_h = k_b of head h, [nope][rank]
//! Σ_j p_j v_hj        = Σ_j p_j V_h c_j    = V_h (Σ_j p_j c_j)          V_h = v_b of head h, [v][rank]
//! ```
//!
//! so each head's query becomes `[K_hᵀ q_nope_h | q_pe_h]` against the cached rows, and the
//! attention output `Σ_j p_j [c_j | k_pe_j]` (the cached rows serve as values too; the
//! k_pe part is dropped) goes through `V_h`. All heads read the one latent row per position
//! (a group of query heads over one KV head), so decode reads `rank + rope` values per
//! cached position and layer. The price: prefill scores over `rank + rope` dims instead of
//! `nope + rope` (576 vs 192 for V3).
//!
//! Weights: `K_hᵀ` stacked as `[H*rank][nope]` — llama.cpp's `attn_k_b` as stored, or
//! made at load from a fused `kv_b` (HF, older GGUFs) in f32 — and `V_h` stacked as
//! `[H*v][rank]` (`attn_v_b`, or the value rows of `kv_b` in f32). See `deepseek.rs`.

use super::block::{ForwardCtx, Mixer};
use super::linear::Linear;
use super::norm::RmsNorm;
use crate::error::ModelError;
use crate::kv_cache::{KvLayerShape, LayerKv};
use crate::weights::WeightOrigin;
use owl_kernels::ops::attention::{self as attend, Block, BlockShape, KeyWindow, Queries, ScoreParams};
use owl_kernels::parallel::DisjointSlice;

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

/// One MLA layer. `k_heads[h]` is `K_hᵀ` (`[rank][nope]`), `v_heads[h]` is `V_h`
/// (`[v][rank]`): row views of the stacked matrices.
#[derive(Debug, Clone)]
pub struct LatentAttention {
    spec: MlaSpec,
    q: QueryProj,
    /// `[kv_lora_rank + rope_dim][hidden]`.
    kv_a: Linear,
    kv_norm: RmsNorm,
    k_heads: Vec<Linear>,
    v_heads: Vec<Linear>,
    /// Bytes of the stacked `K_hᵀ` and `V_h`.
    up_bytes: usize,
    /// The fused `kv_b` the stacked matrices were made from, if they were (its input is
    /// the latent: an importance matrix observes it there). A split `attn_k_b`/`attn_v_b`
    /// is the stacked matrices themselves (their views carry its origin).
    fused: Option<WeightOrigin>,
    o: Linear,
}

impl LatentAttention {
    /// `k_absorb`: `[H*rank][nope]`, each head's `K_hᵀ`; `v_up`: `[H*v][rank]`. `fused`: the
    /// origin of a fused `kv_b` they were made from (observed with the latent as input).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: MlaSpec,
        q: QueryProj,
        kv_a: Linear,
        kv_norm: RmsNorm,
        k_absorb: Linear,
        v_up: Linear,
        fused: Option<WeightOrigin>,
        o: Linear,
    ) -> Self {
        let (rank, vd) = (spec.kv_lora_rank, spec.v_dim);
        let k_heads = (0..spec.n_heads)
            .map(|h| Linear { weight: k_absorb.weight.rows_view(h * rank..(h + 1) * rank), bias: None })
            .collect();
        let v_heads = (0..spec.n_heads)
            .map(|h| Linear { weight: v_up.weight.rows_view(h * vd..(h + 1) * vd), bias: None })
            .collect();
        LatentAttention {
            spec,
            q,
            kv_a,
            kv_norm,
            k_heads,
            v_heads,
            up_bytes: k_absorb.bytes() + v_up.bytes(),
            fused,
            o,
        }
    }

    pub fn spec(&self) -> &MlaSpec {
        &self.spec
    }

    /// The stored tensors of the up-projection, which an adapter may not modify (its delta
    /// would need absorbing too): the fused `kv_b`, or the split pair.
    fn up_tensors(&self) -> impl Iterator<Item = &WeightOrigin> {
        let split =
            [self.k_heads.first(), self.v_heads.first()].into_iter().flatten().filter_map(|l| l.weight.origin());
        self.fused.iter().chain(split)
    }

    fn q_rank(&self) -> usize {
        match &self.q {
            QueryProj::Direct(_) => 0,
            QueryProj::LowRank { a, .. } => a.out_dim(),
        }
    }

    /// Heads each attention work item takes: all of them over the pool's threads.
    /// The attention blocks' shape: `g` heads over the latent rows (keys and values alike).
    fn block_shape(&self, g: usize, keys_seen: KeyWindow) -> BlockShape {
        let s = &self.spec;
        let lat = s.kv_lora_rank + s.rope_dim;
        BlockShape {
            n_heads: g,
            k_dim: lat,
            v_dim: lat,
            keys_seen,
            params: ScoreParams { scale: s.scale, softcap: None },
        }
    }

    fn heads_per_item(&self, n_threads: usize) -> usize {
        self.spec.n_heads.div_ceil(n_threads.max(1)).max(1)
    }
}

impl Mixer for LatentAttention {
    fn kv_shape(&self) -> KvLayerShape {
        let s = &self.spec;
        KvLayerShape { heads: 1, k_dim: s.kv_lora_rank + s.rope_dim, v_dim: 0, window: None }
    }

    fn scratch_floats(&self, max_tokens: usize, n_threads: usize) -> usize {
        let s = &self.spec;
        let (h, qk, lat) = (s.n_heads, s.qk_dim(), s.kv_lora_rank + s.rope_dim);
        let g = self.heads_per_item(n_threads);
        max_tokens
            * (h * qk
                + self.q_rank()
                + lat
                + 2 * h * lat
                + s.nope_dim.max(s.kv_lora_rank)
                + s.kv_lora_rank.max(s.v_dim)
                + h * s.v_dim)
            + attend::scratch_floats_for(&self.block_shape(g, KeyWindow { slots: 1, window: None }), n_threads)
    }

    fn weight_bytes(&self) -> usize {
        let q = match &self.q {
            QueryProj::Direct(w) => w.bytes(),
            QueryProj::LowRank { a, norm, b } => a.bytes() + norm.bytes() + b.bytes(),
        };
        q + self.kv_a.bytes() + self.kv_norm.bytes() + self.up_bytes + self.o.bytes()
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
        let (qk, lat) = (s.qk_dim(), rank + rd);
        let (qw, aw) = (heads * qk, heads * lat);
        if let Some(lora) = ctx.lora {
            if let Some(t) = self.up_tensors().find(|t| lora.touches(&t.tensor)) {
                return Err(ModelError::config(
                    "lora",
                    format!(
                        "an adapter on {} (MLA's key/value up-projection) is not supported: the latent cache folds \
                         that matrix into the queries and outputs",
                        t.tensor
                    ),
                ));
            }
        }
        let (q, rest) = scratch.split_at_mut(n * qw);
        let (qa, rest) = rest.split_at_mut(n * self.q_rank());
        let (kva, rest) = rest.split_at_mut(n * lat);
        let (q_abs, rest) = rest.split_at_mut(n * aw);
        let (attn_lat, rest) = rest.split_at_mut(n * aw);
        let (gather_in, rest) = rest.split_at_mut(n * nope.max(rank));
        let (gather_out, rest) = rest.split_at_mut(n * rank.max(vd));
        let (attn, rest) = rest.split_at_mut(n * heads * vd);

        // Queries.
        match &self.q {
            QueryProj::Direct(w) => w.project(ctx, x, q)?,
            QueryProj::LowRank { a, norm, b } => {
                a.project(ctx, x, qa)?;
                norm.apply_in_place(ctx.pool, qa);
                b.project(ctx, qa, q)?;
            }
        }

        // The latent (normalised in place) and the shared rope key: the rows the cache keeps.
        self.kv_a.project(ctx, x, kva)?;
        for row in kva.chunks_exact_mut(lat) {
            self.kv_norm.apply_in_place(ctx.pool, &mut row[..rank]);
        }
        if let (Some(observer), Some(fused)) = (ctx.observer, &self.fused) {
            for (dst, row) in gather_in.chunks_exact_mut(rank).zip(kva.chunks_exact(lat)) {
                dst.copy_from_slice(&row[..rank]);
            }
            observer.observe(fused, &gather_in[..n * rank], n);
        }

        // RoPE on the rope parts only: every head's q_pe and the one shared k_pe.
        let table = ctx
            .ropes
            .get(s.rope)
            .ok_or_else(|| ModelError::config("rope", format!("layer uses RoPE {} of {}", s.rope, ctx.ropes.len())))?;
        for t in 0..n {
            table.apply(t, &mut kva[t * lat + rank..(t + 1) * lat], rd);
            for h in 0..heads {
                let at = t * qw + h * qk + nope;
                table.apply(t, &mut q[at..at + rd], rd);
            }
        }

        // Cache every token's row before any query reads it.
        for (t, row) in kva.chunks_exact(lat).enumerate() {
            kv.write(ctx.seqs[t], ctx.positions[t], row, &[]);
        }

        // Absorbed queries: [K_hᵀ q_nope_h | q_pe_h] per token and head.
        for (h, k) in self.k_heads.iter().enumerate() {
            for (dst, qt) in gather_in.chunks_exact_mut(nope).zip(q.chunks_exact(qw)).take(n) {
                dst.copy_from_slice(&qt[h * qk..h * qk + nope]);
            }
            k.project(ctx, &gather_in[..n * nope], &mut gather_out[..n * rank])?;
            for (t, (qa_t, qt)) in q_abs.chunks_exact_mut(aw).zip(q.chunks_exact(qw)).enumerate() {
                let row = &mut qa_t[h * lat..(h + 1) * lat];
                row[..rank].copy_from_slice(&gather_out[t * rank..(t + 1) * rank]);
                row[rank..].copy_from_slice(&qt[h * qk + nope..(h + 1) * qk]);
            }
        }

        // Attention over the latent rows (keys and values alike), one (run of a sequence's
        // queries, group of heads) per block.
        let g = self.heads_per_item(ctx.pool.n_threads());
        let groups = heads.div_ceil(g);
        let attn_out = DisjointSlice::new(attn_lat);
        let kv: &LayerKv = kv;
        let q_abs: &[f32] = q_abs;
        let shape = self.block_shape(g, KeyWindow { slots: kv.slots(), window: None });
        let block = |item: usize| {
            let (run, group) = (ctx.runs[item / groups], item % groups);
            let (h0, h1) = (group * g, ((group + 1) * g).min(heads));
            let rows = kv.keys(ctx.seqs[run.start], 0);
            let queries = Queries {
                q: &q_abs[run.start * aw + h0 * lat..],
                stride: aw,
                positions: &ctx.positions[run.start..run.start + run.len],
                n_heads: h1 - h0,
            };
            Block { queries, keys: rows, values: rows }
        };
        let emit = |item: usize, block: &[f32]| {
            let (run, group) = (ctx.runs[item / groups], item % groups);
            let (h0, h1) = (group * g, ((group + 1) * g).min(heads));
            for i in 0..run.len {
                let at = (run.start + i) * aw + h0 * lat;
                // SAFETY: (token, heads h0..h1) belong to this block only, emitted once.
                let dst = unsafe { attn_out.range(at..at + (h1 - h0) * lat) };
                dst.copy_from_slice(&block[i * (h1 - h0) * lat..(i + 1) * (h1 - h0) * lat]);
            }
        };
        attend::attend_blocks(ctx.pool, ctx.runs.len() * groups, &shape, rest, &block, &emit);

        // Out of the latent: o_h = V_h (Σ_j p_j c_j).
        let attn_lat: &[f32] = attn_lat;
        for (h, v) in self.v_heads.iter().enumerate() {
            for (dst, row) in gather_in.chunks_exact_mut(rank).zip(attn_lat.chunks_exact(aw)).take(n) {
                dst.copy_from_slice(&row[h * lat..h * lat + rank]);
            }
            v.project(ctx, &gather_in[..n * rank], &mut gather_out[..n * vd])?;
            for (t, a) in attn.chunks_exact_mut(heads * vd).enumerate() {
                a[h * vd..(h + 1) * vd].copy_from_slice(&gather_out[t * vd..(t + 1) * vd]);
            }
        }

        self.o.project(ctx, attn, out)
    }
}
