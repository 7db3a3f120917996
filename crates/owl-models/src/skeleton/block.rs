//! The decoder block every family shares, and the two seams where families differ.
//!
//! ```text
//! x += post_attn_norm?( mixer( attn_norm(x) ) )     // attention (GQA, MLA, ...)
//! x += post_ffn_norm?(  ffn(   ffn_norm(x)  ) )     // feed-forward (gated MLP, MoE, ...)
//! ```
//!
//! [`Mixer`] (token mixing: attention with its KV cache) and [`FeedForward`] (per-token
//! channel mixing) are traits so that a family file can bring its own — DeepSeek's latent
//! attention, a mixture of experts — without touching the skeleton. They are called once per
//! layer per forward (dynamic dispatch at layer granularity, never per element).

use owl_kernels::ops::norm::add_assign;
use owl_kernels::ThreadPool;

use super::norm::RmsNorm;
use super::rope::RopeTable;
use crate::error::ModelError;
use crate::kv_cache::{KvLayerShape, LayerKv};
use crate::lora::LoraBatch;
use crate::observe::ActivationObserver;

/// What a layer needs to know about the batch being processed.
pub struct ForwardCtx<'a> {
    pub pool: &'a ThreadPool,
    /// Tokens in this call; activations are `[n_tokens][width]` row-major.
    pub n_tokens: usize,
    /// Sequence slot of each token.
    pub seqs: &'a [usize],
    /// Position of each token in its sequence.
    pub positions: &'a [usize],
    /// cos/sin of every token for each of the model's RoPE variants (see `Model`).
    pub ropes: &'a [RopeTable],
    /// The batch cut into runs of consecutive rows of one sequence at consecutive
    /// positions, each at most `attend::QUERY_BLOCK` long: attention's work units.
    pub runs: &'a [TokenRun],
    /// Batch-invariant projections: `Some(k)` sends the first `k` tokens (the decode steps,
    /// one token of their sequence each) through the one-token kernels and the rest through
    /// the many-token kernels, so that no token's result depends on what else is in the
    /// batch; `None` picks the fastest kernels for the batch size.
    pub n_single: Option<usize>,
    /// Sees every projection's input when attached (`owl imatrix`).
    pub observer: Option<&'a dyn ActivationObserver>,
    /// The LoRA adapters of the batch's rows, when any sequence runs with some.
    pub lora: Option<&'a LoraBatch>,
}

/// Batch rows `start..start + len`: one sequence, consecutive positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRun {
    pub start: usize,
    pub len: usize,
}

impl TokenRun {
    /// Cuts a batch into runs of at most `max_len` rows, appending to `runs` (which the
    /// caller sizes for one run per token, so this never allocates).
    pub fn split(seqs: &[usize], positions: &[usize], max_len: usize, runs: &mut Vec<TokenRun>) {
        runs.clear();
        for t in 0..seqs.len() {
            match runs.last_mut() {
                Some(r) if r.len < max_len && seqs[t] == seqs[t - 1] && positions[t] == positions[t - 1] + 1 => {
                    r.len += 1
                }
                _ => runs.push(TokenRun { start: t, len: 1 }),
            }
        }
    }
}

/// Token mixing: reads the normalised residual `x`, writes its contribution to `out`
/// (both `[n_tokens][hidden]`), storing this batch's keys/values in `kv` first.
pub trait Mixer: Send + Sync {
    /// This layer as the standard attention, when it is one (tools that work per op, such
    /// as owl-train's backward pass, handle the kinds they know).
    fn as_attention(&self) -> Option<&super::attention::Attention> {
        None
    }
    /// What this layer keeps in the KV cache per position.
    fn kv_shape(&self) -> KvLayerShape;
    /// f32 scratch the forward needs for `max_tokens` tokens on `n_threads` threads.
    fn scratch_floats(&self, max_tokens: usize, n_threads: usize) -> usize;
    /// Bytes of weights held.
    fn weight_bytes(&self) -> usize;
    fn forward(
        &self,
        ctx: &ForwardCtx<'_>,
        kv: &mut LayerKv,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), ModelError>;
}

/// Channel mixing: `out = ffn(x)`, both `[n_tokens][hidden]`.
pub trait FeedForward: Send + Sync {
    /// This layer as the gated MLP, when it is one.
    fn as_gated_mlp(&self) -> Option<&super::mlp::GatedMlp> {
        None
    }
    fn scratch_floats(&self, max_tokens: usize, n_threads: usize) -> usize;
    fn weight_bytes(&self) -> usize;
    fn forward(&self, ctx: &ForwardCtx<'_>, x: &[f32], out: &mut [f32], scratch: &mut [f32]) -> Result<(), ModelError>;
}

/// One decoder layer.
pub struct Block {
    pub attn_norm: RmsNorm,
    pub mixer: Box<dyn Mixer>,
    /// Gemma 2/3 normalise the attention output before the residual add.
    pub post_attn_norm: Option<RmsNorm>,
    pub ffn_norm: RmsNorm,
    pub ffn: Box<dyn FeedForward>,
    /// Gemma 2/3 normalise the feed-forward output before the residual add.
    pub post_ffn_norm: Option<RmsNorm>,
}

/// Buffers a block works in, each `[max_tokens][hidden]` (only the first `n_tokens` rows
/// are used), plus the arena its mixer and feed-forward split as they like.
pub struct BlockBuffers<'a> {
    pub normed: &'a mut [f32],
    pub branch: &'a mut [f32],
    pub arena: &'a mut [f32],
}

impl Block {
    /// The pre-norm block of Llama and most descendants.
    pub fn pre_norm(attn_norm: RmsNorm, mixer: Box<dyn Mixer>, ffn_norm: RmsNorm, ffn: Box<dyn FeedForward>) -> Self {
        Block { attn_norm, mixer, post_attn_norm: None, ffn_norm, ffn, post_ffn_norm: None }
    }

    /// Gemma 2/3's sandwich: normalised both before and after each branch.
    pub fn sandwich(
        attn_norm: RmsNorm,
        mixer: Box<dyn Mixer>,
        post_attn_norm: RmsNorm,
        ffn_norm: RmsNorm,
        ffn: Box<dyn FeedForward>,
        post_ffn_norm: RmsNorm,
    ) -> Self {
        Block {
            attn_norm,
            mixer,
            post_attn_norm: Some(post_attn_norm),
            ffn_norm,
            ffn,
            post_ffn_norm: Some(post_ffn_norm),
        }
    }

    pub fn weight_bytes(&self) -> usize {
        let norms =
            [Some(&self.attn_norm), self.post_attn_norm.as_ref(), Some(&self.ffn_norm), self.post_ffn_norm.as_ref()];
        norms.iter().flatten().map(|n| n.bytes()).sum::<usize>() + self.mixer.weight_bytes() + self.ffn.weight_bytes()
    }

    pub fn scratch_floats(&self, max_tokens: usize, n_threads: usize) -> usize {
        self.mixer.scratch_floats(max_tokens, n_threads).max(self.ffn.scratch_floats(max_tokens, n_threads))
    }

    /// Runs the layer on the residual stream `x` (`[n_tokens][hidden]`) in place.
    pub fn forward(
        &self,
        ctx: &ForwardCtx<'_>,
        kv: &mut LayerKv,
        x: &mut [f32],
        buf: &mut BlockBuffers<'_>,
    ) -> Result<(), ModelError> {
        let n = x.len();
        let (normed, branch) = (&mut buf.normed[..n], &mut buf.branch[..n]);

        self.attn_norm.apply(ctx.pool, x, normed);
        self.mixer.forward(ctx, kv, normed, branch, buf.arena)?;
        if let Some(norm) = &self.post_attn_norm {
            norm.apply_in_place(ctx.pool, branch);
        }
        add_assign(ctx.pool, x, branch);

        self.ffn_norm.apply(ctx.pool, x, normed);
        self.ffn.forward(ctx, normed, branch, buf.arena)?;
        if let Some(norm) = &self.post_ffn_norm {
            norm.apply_in_place(ctx.pool, branch);
        }
        add_assign(ctx.pool, x, branch);
        Ok(())
    }
}
