//! One training step's loss and LoRA gradients: the model's own layers (owl-models'
//! projections, norms and RoPE, float32 activations) run forward a sequence at a time with
//! each layer's input kept (activation checkpointing); the backward pass re-runs one layer
//! forward with everything it needs, then walks it back (`ops`), layer by layer from the
//! top. The base stays frozen in its stored format: only the low-rank pairs get gradients.
//!
//! Loss: mean cross-entropy of every position's next token over the batch (transformers'
//! `labels = input_ids`), or over the positions a mask marks (assistant tokens only).

use std::collections::HashMap;

use owl_kernels::ops::ActivationPrecision;
use owl_kernels::parallel::DisjointSlice;
use owl_kernels::ThreadPool;
use owl_models::lora::dot;
use owl_models::skeleton::attention::{Attention, QkvProj};
use owl_models::skeleton::block::Block;
use owl_models::skeleton::linear::Linear;
use owl_models::skeleton::mlp::{GateUp, GatedMlp};
use owl_models::weights::Weight;
use owl_models::{LoraAdapter, Model};

use super::ops::{self, AttnShape};
use crate::error::TrainError;

/// One trainable low-rank pair on the base tensor `target`: `ΔW = scale · B A`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainPair {
    pub target: String,
    pub rows: usize,
    pub cols: usize,
    pub rank: usize,
    pub scale: f32,
    /// `[rank][cols]`.
    pub a: Vec<f32>,
    /// `[rows][rank]`.
    pub b: Vec<f32>,
}

/// The trainable pairs, by base tensor name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraParams {
    pub pairs: Vec<TrainPair>,
    index: HashMap<String, usize>,
}

impl LoraParams {
    pub fn new(pairs: Vec<TrainPair>) -> Self {
        let index = pairs.iter().enumerate().map(|(i, p)| (p.target.clone(), i)).collect();
        LoraParams { pairs, index }
    }

    /// The pairs of a bound adapter (names in the base's naming).
    pub fn from_adapter(adapter: &LoraAdapter) -> Self {
        let mut pairs: Vec<TrainPair> = adapter
            .matrices()
            .map(|(name, m)| TrainPair {
                target: name.to_string(),
                rows: m.rows(),
                cols: m.cols(),
                rank: m.rank(),
                scale: m.scale(),
                a: m.a().to_vec(),
                b: m.b().to_vec(),
            })
            .collect();
        pairs.sort_by(|x, y| x.target.cmp(&y.target));
        LoraParams::new(pairs)
    }

    pub fn get(&self, target: &str) -> Option<usize> {
        self.index.get(target).copied()
    }

    /// Zeroed gradients of the same shapes.
    pub fn zero_grads(&self) -> Grads {
        Grads {
            a: self.pairs.iter().map(|p| vec![0.0; p.a.len()]).collect(),
            b: self.pairs.iter().map(|p| vec![0.0; p.b.len()]).collect(),
        }
    }
}

/// Gradients of the loss with respect to every pair's `A` and `B`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    pub a: Vec<Vec<f32>>,
    pub b: Vec<Vec<f32>>,
}

/// One training sequence: its tokens and which next-token predictions count. `weights[t]`
/// weighs the prediction of `tokens[t + 1]` from position `t` (0: not trained on).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Example {
    /// Every next token counts.
    pub fn all(tokens: Vec<u32>) -> Self {
        let weights = vec![1.0; tokens.len().saturating_sub(1)];
        Example { tokens, weights }
    }
}

/// Options of a training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOptions {
    /// LoRA dropout: each input element of a pair's branch is zeroed with this probability
    /// (and the rest scaled by `1/(1 − p)`), as PEFT's `lora_dropout`.
    pub dropout: f32,
    /// Seeds the dropout masks (with the step number: each step draws new ones).
    pub seed: u64,
    pub step: u64,
    /// Compute gradients (false: the loss only, as for a validation set).
    pub backward: bool,
    /// Bytes a sequence's layer tapes may take: within it every layer's tape is kept from
    /// the forward pass; beyond it only each layer's input is, and the layer runs again
    /// when its gradient is needed (activation checkpointing).
    pub tape_budget: usize,
    /// Keep the frozen base's products in float32 against dequantized weights. Otherwise
    /// (the default) a quantized base multiplies as inference does: activations, and in
    /// the backward the output gradients, quantized to 8 bits against the weight (its Q8_0
    /// transpose for the input gradient). Float weights are float32 either way; the LoRA
    /// pairs, norms, attention and the loss are float32 always.
    pub f32_activations: bool,
    /// Bytes the frozen weights may take kept unpacked in lane panels
    /// ([`owl_models::weights::Weight::prepack_panels`]), layer by layer from the first,
    /// the projections and then (with `backward`) their Q8_0 transposes: those within it
    /// multiply from their panels, the rest unpack on every call as inference does. The
    /// same bits either way; only time and memory differ.
    pub panel_budget: usize,
}

/// The default [`StepOptions::tape_budget`].
pub const TAPE_BUDGET: usize = 256 << 20;

/// The default [`StepOptions::panel_budget`]: room for every projection of a model of about
/// half a billion parameters, forward and transposed (SmolLM2-135M takes about 300 MiB).
pub const PANEL_BUDGET: usize = 2 << 30;

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            dropout: 0.0,
            seed: 0,
            step: 0,
            backward: true,
            tape_budget: TAPE_BUDGET,
            f32_activations: false,
            panel_budget: PANEL_BUDGET,
        }
    }
}

/// SplitMix64's step and finaliser: a well-mixed 64-bit hash of `x`.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A dropout mask drawn by hashing (key, token, element): the forward pass and its re-run
/// in the backward pass see the same mask without storing it.
#[derive(Debug, Clone, Copy)]
struct Dropout {
    p: f32,
    key: u64,
}

impl Dropout {
    /// The factor of element `i` of token `t`: 0, or `1/(1 − p)`.
    #[inline]
    fn factor(self, t: usize, i: usize) -> f32 {
        let h = mix(self.key ^ mix(((t as u64) << 32) | i as u64));
        if ((h >> 40) as f32 / (1u64 << 24) as f32) < self.p {
            0.0
        } else {
            1.0 / (1.0 - self.p)
        }
    }
}

/// A projection of the model and the trainable pair on it, if any.
struct Proj<'a> {
    lin: &'a Linear,
    pair: Option<usize>,
    dropout: Option<Dropout>,
}

impl<'a> Proj<'a> {
    fn new(lin: &'a Linear, params: &LoraParams) -> Self {
        let pair = lin.weight.origin().filter(|o| o.of == 1).and_then(|o| params.get(&o.tensor));
        Proj { lin, pair, dropout: None }
    }

    /// This projection with dropout on its pair's input, keyed by `key`.
    fn with_dropout(mut self, p: f32, key: u64) -> Self {
        if p > 0.0 {
            self.dropout = Some(Dropout { p, key });
        }
        self
    }

    fn out(&self) -> usize {
        self.lin.out_dim()
    }

    /// The pair's inputs of all `n` tokens: `x` itself, or `x` under the dropout mask
    /// (made once, so that every phase below reads the same values).
    fn lora_inputs<'x>(&self, pool: &ThreadPool, x: &'x [f32], cols: usize, n: usize) -> std::borrow::Cow<'x, [f32]> {
        let Some(d) = self.dropout else { return std::borrow::Cow::Borrowed(&x[..n * cols]) };
        let mut out = vec![0f32; n * cols];
        let dst = DisjointSlice::new(&mut out);
        pool.parallel_for(n, 1, &|_, tokens| {
            for t in tokens {
                // SAFETY: token `t`'s row is written by the one thread that claimed `t`.
                let row = unsafe { dst.range(t * cols..(t + 1) * cols) };
                for (i, (o, &v)) in row.iter_mut().zip(&x[t * cols..(t + 1) * cols]).enumerate() {
                    *o = v * d.factor(t, i);
                }
            }
        });
        std::borrow::Cow::Owned(out)
    }

    /// `y = x Wᵀ (+ b) + s·B A x` for `n` rows (the pair's terms token by token, over the
    /// pool).
    fn forward(
        &self,
        model: &Model,
        params: &LoraParams,
        x: &[f32],
        n: usize,
        y: &mut [f32],
    ) -> Result<(), TrainError> {
        self.lin.forward_frozen(model.pool(), x, n, y)?;
        if let Some(i) = self.pair {
            let p = &params.pairs[i];
            let pool = model.pool();
            let xs = self.lora_inputs(pool, x, p.cols, n);
            let out = DisjointSlice::new(&mut y[..n * p.rows]);
            pool.parallel_for(n, 1, &|_, tokens| {
                let mut u = vec![0f32; p.rank];
                for t in tokens {
                    let xr = &xs[t * p.cols..(t + 1) * p.cols];
                    for (uj, ar) in u.iter_mut().zip(p.a.chunks_exact(p.cols)) {
                        *uj = p.scale * dot(ar, xr);
                    }
                    // SAFETY: token `t`'s row is written by the one thread that claimed `t`.
                    let yr = unsafe { out.range(t * p.rows..(t + 1) * p.rows) };
                    for (yo, br) in yr.iter_mut().zip(p.b.chunks_exact(p.rank)) {
                        *yo += dot(br, &u);
                    }
                }
            });
        }
        Ok(())
    }

    /// `dx += dy W + (s·B A)ᵀ dy`, and the pair's gradients.
    ///
    /// The pair's terms in three phases over the pool, each summing in the order of a
    /// token-by-token loop (so the bits do not depend on the threads): per token
    /// `u = A x`, `du = s Bᵀ dy`; per rank row `j`, `gA_j += Σ_t du_tj x_t` and
    /// `gBᵀ_j += Σ_t s u_tj dy_t`; per token `dx += Σ_j du_j A_j` (under the mask).
    fn backward(
        &self,
        model: &Model,
        params: &LoraParams,
        grads: &mut Grads,
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
    ) -> Result<(), TrainError> {
        ops::matmul_transposed_acc(model.pool(), &self.lin.weight, dy, dx)?;
        let Some(i) = self.pair else { return Ok(()) };
        let p = &params.pairs[i];
        let pool = model.pool();
        let (r, out, cols) = (p.rank, p.rows, p.cols);
        let n = dy.len() / out.max(1);
        let xs = self.lora_inputs(pool, x, cols, n);
        // Bᵀ: rank rows of `out`, so every product runs along a long contiguous row.
        let mut bt = vec![0f32; r * out];
        for (o, br) in p.b.chunks_exact(r).enumerate() {
            for (j, &v) in br.iter().enumerate() {
                bt[j * out + o] = v;
            }
        }
        let (mut u, mut du) = (vec![0f32; n * r], vec![0f32; n * r]);
        {
            let (u_out, du_out) = (DisjointSlice::new(&mut u), DisjointSlice::new(&mut du));
            pool.parallel_for(n, 1, &|_, tokens| {
                for t in tokens {
                    // SAFETY: token `t`'s rows are written by the one thread that claimed `t`.
                    let (ut, dut) = unsafe { (u_out.range(t * r..(t + 1) * r), du_out.range(t * r..(t + 1) * r)) };
                    let xr = &xs[t * cols..(t + 1) * cols];
                    for (uj, ar) in ut.iter_mut().zip(p.a.chunks_exact(cols)) {
                        *uj = dot(ar, xr);
                    }
                    for (dj, btj) in dut.iter_mut().zip(bt.chunks_exact(out)) {
                        *dj = p.scale * dot(btj, &dy[t * out..(t + 1) * out]);
                    }
                }
            });
        }
        let mut gbt = vec![0f32; r * out];
        {
            let (ga, gbt_out) = (DisjointSlice::new(&mut grads.a[i]), DisjointSlice::new(&mut gbt));
            pool.parallel_for(r, 1, &|_, rank_rows| {
                for j in rank_rows {
                    // SAFETY: rank row `j` of gA and gBᵀ is written by the one thread that claimed `j`.
                    let (gaj, gbtj) =
                        unsafe { (ga.range(j * cols..(j + 1) * cols), gbt_out.range(j * out..(j + 1) * out)) };
                    for t in 0..n {
                        let d = du[t * r + j];
                        gaj.iter_mut().zip(&xs[t * cols..(t + 1) * cols]).for_each(|(g, &xv)| *g += d * xv);
                        let su = p.scale * u[t * r + j];
                        gbtj.iter_mut().zip(&dy[t * out..(t + 1) * out]).for_each(|(g, &dv)| *g += su * dv);
                    }
                }
            });
        }
        for (o, gbr) in grads.b[i].chunks_exact_mut(r).enumerate() {
            for (j, g) in gbr.iter_mut().enumerate() {
                *g += gbt[j * out + o];
            }
        }
        let dx_out = DisjointSlice::new(&mut dx[..n * cols]);
        let dropout = self.dropout;
        pool.parallel_for(n, 1, &|_, tokens| {
            for t in tokens {
                // SAFETY: token `t`'s row is written by the one thread that claimed `t`.
                let dxr = unsafe { dx_out.range(t * cols..(t + 1) * cols) };
                for (&d, ar) in du[t * r..(t + 1) * r].iter().zip(p.a.chunks_exact(cols)) {
                    match dropout {
                        None => dxr.iter_mut().zip(ar).for_each(|(dxv, &av)| *dxv += d * av),
                        Some(drop) => {
                            for (i, (dxv, &av)) in dxr.iter_mut().zip(ar).enumerate() {
                                *dxv += d * av * drop.factor(t, i);
                            }
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

/// What the backward pass of one layer needs from its forward.
struct LayerTape {
    /// The layer's input.
    input: Vec<f32>,
    normed: Vec<f32>,
    inv_attn: Vec<f32>,
    /// q, k before their per-head norms (Qwen3), with those norms' `r` per head row.
    q_pre: Vec<f32>,
    k_pre: Vec<f32>,
    inv_q: Vec<f32>,
    inv_k: Vec<f32>,
    /// After norms and RoPE: what the scores saw.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    attn: Vec<f32>,
    mid: Vec<f32>,
    normed_ffn: Vec<f32>,
    inv_ffn: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    hidden: Vec<f32>,
}

impl LayerTape {
    /// Floats held.
    fn floats(&self) -> usize {
        [
            &self.input,
            &self.normed,
            &self.inv_attn,
            &self.q_pre,
            &self.k_pre,
            &self.inv_q,
            &self.inv_k,
            &self.q,
            &self.k,
            &self.v,
            &self.probs,
            &self.attn,
            &self.mid,
            &self.normed_ffn,
            &self.inv_ffn,
            &self.gate,
            &self.up,
            &self.hidden,
        ]
        .iter()
        .map(|v| v.len())
        .sum()
    }
}

/// The parts of a pre-norm layer of standard attention and a gated MLP, and the dropout
/// of its pairs for the sequence being run.
#[derive(Clone, Copy)]
struct Layer<'a> {
    block: &'a Block,
    attn: &'a Attention,
    mlp: &'a GatedMlp,
    dropout: f32,
    key: u64,
}

impl<'a> Layer<'a> {
    /// Projection `id` of this layer (its dropout mask is its own).
    fn proj(&self, lin: &'a Linear, params: &LoraParams, id: u64) -> Proj<'a> {
        Proj::new(lin, params).with_dropout(self.dropout, mix(self.key ^ mix(id)))
    }

    /// This layer for sequence `seq` of step `opts.step`.
    fn for_sequence(self, opts: &StepOptions, layer: usize, seq: usize) -> Self {
        let key = mix(opts.seed ^ mix(opts.step ^ mix(((seq as u64) << 20) | layer as u64)));
        Layer { dropout: opts.dropout, key, ..self }
    }
}

fn layer(block: &Block, index: usize) -> Result<Layer<'_>, TrainError> {
    let unsupported = |what: &str| TrainError::Unsupported(format!("layer {index}: {what}"));
    let attn = block.mixer.as_attention().ok_or_else(|| unsupported("attention other than the standard kind (MLA)"))?;
    let mlp = block.ffn.as_gated_mlp().ok_or_else(|| unsupported("a feed-forward other than a gated MLP (experts)"))?;
    if block.post_attn_norm.is_some() || block.post_ffn_norm.is_some() {
        return Err(unsupported("sandwich norms (Gemma 2/3)"));
    }
    let spec = attn.spec();
    if spec.window.is_some() || spec.scores.softcap.is_some() {
        return Err(unsupported("sliding-window or soft-capped attention"));
    }
    Ok(Layer { block, attn, mlp, dropout: 0.0, key: 0 })
}

/// Keeps the frozen weights unpacked in lane panels while they fit
/// [`StepOptions::panel_budget`] (see there); made on the first step, counted again on
/// every step in the same order, so the same weights are chosen each time. Panels once
/// made stay with their weights (and in use) for the model's life: a smaller budget on a
/// later step makes no new ones but releases none.
fn prepack_within(layers: &[Layer<'_>], head: &Weight, opts: &StepOptions) {
    let mut weights: Vec<&Weight> = Vec::new();
    for l in layers {
        match l.attn.qkv() {
            QkvProj::Separate { q, k, v } => weights.extend([&q.weight, &k.weight, &v.weight]),
            QkvProj::Fused(w) => weights.push(&w.weight),
        }
        weights.push(&l.attn.o().weight);
        match l.mlp.gate_up() {
            GateUp::Separate { gate, up } => weights.extend([&gate.weight, &up.weight]),
            GateUp::Fused(w) => weights.push(&w.weight),
        }
        weights.push(&l.mlp.down().weight);
    }
    if opts.backward {
        let transposed: Vec<&Weight> =
            weights.iter().chain(std::iter::once(&head)).filter_map(|w| w.transposed_q8_0()).collect();
        weights.extend(transposed);
    }
    let mut used = 0usize;
    for w in weights {
        let bytes = match w.prepacked_panels() {
            Some(p) => p.bytes(),
            None => match w.panel_bytes() {
                Some(b) if used.saturating_add(b) <= opts.panel_budget => w.prepack_panels().map_or(0, |p| p.bytes()),
                _ => 0,
            },
        };
        used += bytes;
    }
}

fn qkv_projs<'a>(l: &Layer<'a>, params: &LoraParams) -> Vec<Proj<'a>> {
    match l.attn.qkv() {
        QkvProj::Separate { q, k, v } => vec![l.proj(q, params, 0), l.proj(k, params, 1), l.proj(v, params, 2)],
        QkvProj::Fused(w) => vec![l.proj(w, params, 0)],
    }
}

fn gate_up_projs<'a>(l: &Layer<'a>, params: &LoraParams) -> Vec<Proj<'a>> {
    match l.mlp.gate_up() {
        GateUp::Separate { gate, up } => vec![l.proj(gate, params, 4), l.proj(up, params, 5)],
        GateUp::Fused(w) => vec![l.proj(w, params, 4)],
    }
}

/// Splits `[n][a | b | ...]` rows into separate buffers of the given widths.
fn split_rows(src: &[f32], n: usize, widths: &[usize]) -> Vec<Vec<f32>> {
    let total: usize = widths.iter().sum();
    let mut out: Vec<Vec<f32>> = widths.iter().map(|w| Vec::with_capacity(n * w)).collect();
    for row in src.chunks_exact(total).take(n) {
        let mut at = 0;
        for (o, &w) in out.iter_mut().zip(widths) {
            o.extend_from_slice(&row[at..at + w]);
            at += w;
        }
    }
    out
}

/// Joins separate `[n][w_i]` buffers into `[n][w_1 | w_2 | ...]` rows.
fn join_rows(parts: &[&[f32]], n: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for t in 0..n {
        for p in parts {
            let w = p.len() / n;
            out.extend_from_slice(&p[t * w..(t + 1) * w]);
        }
    }
    out
}

/// Runs layer `l` forward over `x` (`[n][hidden]`), returning its output and its tape.
fn layer_forward(
    model: &Model,
    params: &LoraParams,
    l: &Layer<'_>,
    x: &[f32],
    n: usize,
) -> Result<(Vec<f32>, LayerTape), TrainError> {
    let h = model.config().hidden_size;
    let s = l.attn.spec();
    let (hd, qw, kw) = (s.head_dim, s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim);
    let norm = &l.block.attn_norm;
    let (mut normed, mut inv_attn) = (vec![0f32; n * h], vec![0f32; n]);
    ops::rms_norm(x, norm.weight(), norm.eps(), &mut normed, &mut inv_attn);

    let projs = qkv_projs(l, params);
    let (mut q, mut k, v) = if projs.len() == 3 {
        let mut out: Vec<Vec<f32>> = Vec::new();
        for p in &projs {
            let mut y = vec![0f32; n * p.out()];
            p.forward(model, params, &normed, n, &mut y)?;
            out.push(y);
        }
        let v = out.pop().unwrap_or_default();
        let k = out.pop().unwrap_or_default();
        let q = out.pop().unwrap_or_default();
        (q, k, v)
    } else {
        let mut fused = vec![0f32; n * (qw + 2 * kw)];
        projs[0].forward(model, params, &normed, n, &mut fused)?;
        let mut parts = split_rows(&fused, n, &[qw, kw, kw]);
        let v = parts.pop().unwrap_or_default();
        let k = parts.pop().unwrap_or_default();
        (parts.pop().unwrap_or_default(), k, v)
    };
    let (q_pre, k_pre) = (q.clone(), k.clone());
    let (mut inv_q, mut inv_k) = (Vec::new(), Vec::new());
    if let Some((qn, kn)) = l.attn.qk_norms() {
        inv_q = vec![0f32; n * s.n_heads];
        inv_k = vec![0f32; n * s.n_kv_heads];
        ops::rms_norm(&q_pre, qn.weight(), qn.eps(), &mut q, &mut inv_q);
        ops::rms_norm(&k_pre, kn.weight(), kn.eps(), &mut k, &mut inv_k);
    }
    let positions: Vec<usize> = (0..n).collect();
    if let Some(r) = s.rope {
        let rope = &model.ropes()[r];
        ops::rope(&mut q, rope, &positions, n, hd, false);
        ops::rope(&mut k, rope, &positions, n, hd, false);
    }
    let shape = AttnShape { tokens: n, heads: s.n_heads, kv_heads: s.n_kv_heads, head_dim: hd, scale: s.scores.scale };
    let (mut attn, mut probs) = (vec![0f32; n * qw], vec![0f32; s.n_heads * n * n]);
    ops::attention(model.pool(), shape, &q, &k, &v, &mut attn, &mut probs);
    let o = l.proj(l.attn.o(), params, 3);
    let mut mid = vec![0f32; n * h];
    o.forward(model, params, &attn, n, &mut mid)?;
    mid.iter_mut().zip(x).for_each(|(m, &xv)| *m += xv);

    let norm = &l.block.ffn_norm;
    let (mut normed_ffn, mut inv_ffn) = (vec![0f32; n * h], vec![0f32; n]);
    ops::rms_norm(&mid, norm.weight(), norm.eps(), &mut normed_ffn, &mut inv_ffn);
    let f = l.mlp.down().in_dim();
    let gu = gate_up_projs(l, params);
    let (gate, up) = if gu.len() == 2 {
        let (mut g, mut u) = (vec![0f32; n * f], vec![0f32; n * f]);
        gu[0].forward(model, params, &normed_ffn, n, &mut g)?;
        gu[1].forward(model, params, &normed_ffn, n, &mut u)?;
        (g, u)
    } else {
        let mut both = vec![0f32; n * 2 * f];
        gu[0].forward(model, params, &normed_ffn, n, &mut both)?;
        let mut parts = split_rows(&both, n, &[f, f]);
        let u = parts.pop().unwrap_or_default();
        (parts.pop().unwrap_or_default(), u)
    };
    let mut hidden = vec![0f32; n * f];
    ops::glu(l.mlp.activation(), &gate, &up, &mut hidden);
    let down = l.proj(l.mlp.down(), params, 6);
    let mut out = vec![0f32; n * h];
    down.forward(model, params, &hidden, n, &mut out)?;
    out.iter_mut().zip(&mid).for_each(|(o, &m)| *o += m);
    let tape = LayerTape {
        input: x.to_vec(),
        normed,
        inv_attn,
        q_pre,
        k_pre,
        inv_q,
        inv_k,
        q,
        k,
        v,
        probs,
        attn,
        mid,
        normed_ffn,
        inv_ffn,
        gate,
        up,
        hidden,
    };
    Ok((out, tape))
}

/// Walks layer `l` back: `dx` holds the gradient of its output and receives that of its
/// input.
fn layer_backward(
    model: &Model,
    params: &LoraParams,
    grads: &mut Grads,
    l: &Layer<'_>,
    tape: &LayerTape,
    n: usize,
    dx: &mut [f32],
) -> Result<(), TrainError> {
    let h = model.config().hidden_size;
    let s = l.attn.spec();
    let (hd, qw, kw) = (s.head_dim, s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim);
    let f = l.mlp.down().in_dim();

    // Feed-forward: out = mid + down(glu(gate, up)).
    let mut d_hidden = vec![0f32; n * f];
    l.proj(l.mlp.down(), params, 6).backward(model, params, grads, &tape.hidden, dx, &mut d_hidden)?;
    let (mut d_gate, mut d_up) = (vec![0f32; n * f], vec![0f32; n * f]);
    ops::glu_backward(l.mlp.activation(), &tape.gate, &tape.up, &d_hidden, &mut d_gate, &mut d_up);
    let mut d_normed = vec![0f32; n * h];
    let gu = gate_up_projs(l, params);
    if gu.len() == 2 {
        gu[0].backward(model, params, grads, &tape.normed_ffn, &d_gate, &mut d_normed)?;
        gu[1].backward(model, params, grads, &tape.normed_ffn, &d_up, &mut d_normed)?;
    } else {
        let joined = join_rows(&[&d_gate, &d_up], n);
        gu[0].backward(model, params, grads, &tape.normed_ffn, &joined, &mut d_normed)?;
    }
    // d(mid) = d(out) (residual) + the norm's.
    let norm = &l.block.ffn_norm;
    let mut d_mid = dx.to_vec();
    ops::rms_norm_backward(&tape.mid, norm.weight(), &tape.inv_ffn, &d_normed, &mut d_mid);

    // Attention: mid = x + o(attn(q, k, v)).
    let mut d_attn = vec![0f32; n * qw];
    l.proj(l.attn.o(), params, 3).backward(model, params, grads, &tape.attn, &d_mid, &mut d_attn)?;
    let shape = AttnShape { tokens: n, heads: s.n_heads, kv_heads: s.n_kv_heads, head_dim: hd, scale: s.scores.scale };
    let (mut dq, mut dk, mut dv) = (vec![0f32; n * qw], vec![0f32; n * kw], vec![0f32; n * kw]);
    ops::attention_backward(
        model.pool(),
        shape,
        &tape.q,
        &tape.k,
        &tape.v,
        &tape.probs,
        &d_attn,
        &mut dq,
        &mut dk,
        &mut dv,
    );
    let positions: Vec<usize> = (0..n).collect();
    if let Some(r) = s.rope {
        let rope = &model.ropes()[r];
        ops::rope(&mut dq, rope, &positions, n, hd, true);
        ops::rope(&mut dk, rope, &positions, n, hd, true);
    }
    if let Some((qn, kn)) = l.attn.qk_norms() {
        let mut dq_pre = vec![0f32; n * qw];
        let mut dk_pre = vec![0f32; n * kw];
        ops::rms_norm_backward(&tape.q_pre, qn.weight(), &tape.inv_q, &dq, &mut dq_pre);
        ops::rms_norm_backward(&tape.k_pre, kn.weight(), &tape.inv_k, &dk, &mut dk_pre);
        dq = dq_pre;
        dk = dk_pre;
    }
    let mut d_normed = vec![0f32; n * h];
    let projs = qkv_projs(l, params);
    if projs.len() == 3 {
        projs[0].backward(model, params, grads, &tape.normed, &dq, &mut d_normed)?;
        projs[1].backward(model, params, grads, &tape.normed, &dk, &mut d_normed)?;
        projs[2].backward(model, params, grads, &tape.normed, &dv, &mut d_normed)?;
    } else {
        let joined = join_rows(&[&dq, &dk, &dv], n);
        projs[0].backward(model, params, grads, &tape.normed, &joined, &mut d_normed)?;
    }
    let norm = &l.block.attn_norm;
    dx.copy_from_slice(&d_mid);
    ops::rms_norm_backward(&tape.input, norm.weight(), &tape.inv_attn, &d_normed, dx);
    Ok(())
}

/// The loss of `batch` (weighted mean cross-entropy of its counted predictions) and its
/// gradients with respect to every pair of `params`. The model runs with float32
/// activations for the duration (a float32 reference's numerics).
pub fn loss_and_grads(model: &mut Model, params: &LoraParams, batch: &[Example]) -> Result<(f32, Grads), TrainError> {
    loss_and_grads_with(model, params, batch, &StepOptions::default())
}

/// The loss of `batch` alone (no dropout, no gradients): a validation loss.
pub fn loss_only(model: &mut Model, params: &LoraParams, batch: &[Example]) -> Result<f32, TrainError> {
    let opts = StepOptions { backward: false, ..StepOptions::default() };
    Ok(loss_and_grads_with(model, params, batch, &opts)?.0)
}

/// [`loss_and_grads`] with dropout (`opts`).
pub fn loss_and_grads_with(
    model: &mut Model,
    params: &LoraParams,
    batch: &[Example],
    opts: &StepOptions,
) -> Result<(f32, Grads), TrainError> {
    let previous = model.activation_precision();
    let precision = if opts.f32_activations { ActivationPrecision::F32 } else { ActivationPrecision::Quantized };
    model.set_activation_precision(precision);
    let result = run(model, params, batch, opts);
    model.set_activation_precision(previous);
    result
}

fn run(model: &Model, params: &LoraParams, batch: &[Example], opts: &StepOptions) -> Result<(f32, Grads), TrainError> {
    let cfg = model.config();
    if cfg.final_softcap.is_some() {
        return Err(TrainError::Unsupported("soft-capped logits (Gemma 2)".into()));
    }
    let layers = model.blocks().iter().enumerate().map(|(i, b)| layer(b, i)).collect::<Result<Vec<_>, _>>()?;
    if !opts.f32_activations {
        prepack_within(&layers, model.head(), opts);
    }
    let total: f32 = batch.iter().map(|e| e.weights.iter().sum::<f32>()).sum();
    if total <= 0.0 {
        return Err(TrainError::Data("the batch has no token to learn from".into()));
    }
    let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
    let mut grads = params.zero_grads();
    let mut loss = 0f64;
    let (mut logits, mut d_logits) = (Vec::<f32>::new(), Vec::<f32>::new());
    for (seq, ex) in batch.iter().enumerate() {
        let layers: Vec<Layer<'_>> = layers.iter().enumerate().map(|(i, l)| l.for_sequence(opts, i, seq)).collect();
        let n = ex.tokens.len();
        if n < 2 {
            continue;
        }
        // Forward, keeping each layer's input.
        let mut x = vec![0f32; n * h];
        for (row, &t) in x.chunks_exact_mut(h).zip(&ex.tokens) {
            if t as usize >= vocab {
                return Err(TrainError::Data(format!("token {t} is outside the vocabulary of {vocab}")));
            }
            model.embedding().dequantize_row(t as usize, row)?;
        }
        if let Some(scale) = cfg.embed_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let mut inputs = Vec::with_capacity(layers.len());
        let mut tapes = Vec::new();
        let mut keep = opts.backward;
        for l in &layers {
            let (out, tape) = layer_forward(model, params, l, &x, n)?;
            // Every layer's tape is the same size: the first says whether all fit.
            keep &= tape.floats() * 4 * layers.len() <= opts.tape_budget;
            if keep {
                tapes.push(tape);
            }
            inputs.push(std::mem::replace(&mut x, out));
        }
        let norm = model.final_norm();
        let (mut normed, mut inv) = (vec![0f32; n * h], vec![0f32; n]);
        ops::rms_norm(&x, norm.weight(), norm.eps(), &mut normed, &mut inv);
        // The logits and their gradient (each `n × vocab`, megabytes) reuse the step's
        // buffers: fresh ones per sequence were mapped and faulted in every time.
        logits.clear();
        logits.resize(n * vocab, 0.0);
        model.head_logits(&normed, n, &mut logits)?;

        // Loss and its gradient on the logits.
        d_logits.clear();
        d_logits.resize(n * vocab, 0.0);
        for t in 0..n - 1 {
            let w = ex.weights.get(t).copied().unwrap_or(0.0);
            if w == 0.0 {
                continue;
            }
            let target = ex.tokens[t + 1] as usize;
            let row = &logits[t * vocab..(t + 1) * vocab];
            let grad = &mut d_logits[t * vocab..(t + 1) * vocab];
            loss += f64::from(w) * f64::from(ops::cross_entropy(row, target, w / total, grad));
        }

        if !opts.backward {
            continue;
        }
        // Backward: head, final norm, then the layers from the top.
        let mut d_normed = vec![0f32; n * h];
        ops::matmul_transposed_acc(model.pool(), model.head(), &d_logits, &mut d_normed)?;
        let mut dx = vec![0f32; n * h];
        ops::rms_norm_backward(&x, norm.weight(), &inv, &d_normed, &mut dx);
        for (i, (l, input)) in layers.iter().zip(&inputs).enumerate().rev() {
            match tapes.get(i) {
                Some(tape) => layer_backward(model, params, &mut grads, l, tape, n, &mut dx)?,
                None => {
                    let (_, tape) = layer_forward(model, params, l, input, n)?;
                    layer_backward(model, params, &mut grads, l, &tape, n, &mut dx)?;
                }
            }
        }
    }
    Ok(((loss / f64::from(total)) as f32, grads))
}
