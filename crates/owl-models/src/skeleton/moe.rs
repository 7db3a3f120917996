//! The sparse mixture-of-experts feed-forward (Mixtral, Qwen3-MoE, DeepSeek-V2/V3):
//!
//! ```text
//! s      = score(x W_router^T)              softmax over all experts (f32) or sigmoid
//! chosen = top_k(s + bias?)                 optionally only inside the best groups of experts
//! w      = s[chosen] / Σ s[chosen]?  * scale
//! out    = Σ_e∈chosen w_e · expert_e(x)  (+ shared_expert(x))
//! ```
//!
//! Every expert is a gated MLP `down(act(gate(x)) * up(x))` whose matrices stay in their
//! stored format. A forward call first routes every token, then groups the batch's
//! (token, expert) pairs by expert (a counting sort), so that each chosen expert runs ONE
//! matmul over all the tokens routed to it: its weights are read once per forward, which is
//! what makes a prompt chunk cheap, and a decode step reads only the k experts it needs.
//!
//! Routing follows transformers 5 / the reference implementations:
//! - Mixtral, Qwen3-MoE: softmax in f32, top-k, renormalised (Qwen3-MoE: when `norm_topk_prob`).
//! - DeepSeek-V2 (`group_limited_greedy` / `greedy`): softmax, the `topk_group` groups with the
//!   largest maximum score, top-k inside them, weights × `routed_scaling_factor`.
//! - DeepSeek-V3 (`noaux_tc`): sigmoid; `e_score_correction_bias` is added only to choose
//!   (group score = sum of the group's two largest biased scores); weights are the unbiased
//!   sigmoid scores, normalised, × `routed_scaling_factor`. Experts of discarded groups are
//!   masked with -inf as in DeepSeek's `inference/model.py` and llama.cpp (transformers fills
//!   0.0, which differs only when a biased score inside a kept group is negative).

use owl_formats::hf_config::{MoeConfig, RouterScoring, TopkMethod};

use super::block::{FeedForward, ForwardCtx};
use super::linear::Linear;
use super::mlp::{GateUp, GatedMlp};
use crate::config::GgufMeta;
use crate::error::ModelError;
use crate::weights::{Binder, SourceKind, Weight, WeightBytes};
use owl_kernels::ops::activation::Activation;
use owl_kernels::ops::softmax::softmax_in_place;

/// Router logits → expert scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// softmax over all experts, in f32.
    Softmax,
    /// element-wise sigmoid.
    Sigmoid,
}

/// The score of a group of experts in group-limited routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupScore {
    /// The group's largest score (DeepSeek-V2 `group_limited_greedy`).
    Max,
    /// The sum of the group's two largest scores (DeepSeek-V3 `noaux_tc`).
    TopTwoSum,
}

/// Which experts a token may choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Top-k over all experts.
    TopK,
    /// The experts form `n_group` equal consecutive groups; only the `topk_group` groups with
    /// the highest group score are eligible.
    Grouped { n_group: usize, topk_group: usize, score: GroupScore },
}

/// How a router turns logits into (expert, weight) pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterSpec {
    pub n_experts: usize,
    /// Experts per token.
    pub top_k: usize,
    pub scoring: Scoring,
    pub selection: Selection,
    /// Divide the chosen weights by their sum.
    pub normalize: bool,
    /// Multiplier on the routed weights (DeepSeek `routed_scaling_factor`).
    pub scale: f32,
}

impl RouterSpec {
    /// Checks the shape constraints a file could violate.
    pub fn validate(&self) -> Result<(), ModelError> {
        let e = self.n_experts;
        if e == 0 || self.top_k == 0 || self.top_k > e {
            return Err(ModelError::config("expert_used_count", format!("{} of {e} experts per token", self.top_k)));
        }
        if let Selection::Grouped { n_group, topk_group, score } = self.selection {
            if n_group == 0 || !e.is_multiple_of(n_group) || topk_group == 0 || topk_group > n_group {
                return Err(ModelError::config(
                    "n_group",
                    format!("{topk_group} of {n_group} groups cannot partition {e} experts"),
                ));
            }
            if (e / n_group) * topk_group < self.top_k {
                return Err(ModelError::config(
                    "topk_group",
                    format!("{topk_group} groups cannot supply {} experts", self.top_k),
                ));
            }
            if score == GroupScore::TopTwoSum && e / n_group < 2 {
                return Err(ModelError::config("n_group", "groups of one expert have no top-2 score"));
            }
        }
        if !self.scale.is_finite() {
            return Err(ModelError::config("routed_scaling_factor", format!("{} is not finite", self.scale)));
        }
        Ok(())
    }

    /// The routing a Hugging Face MoE config describes. `norm_topk_prob` is taken as given
    /// (a family that ignores it, like transformers' DeepSeek-V2, overrides `normalize`).
    pub fn from_hf(m: &MoeConfig) -> Self {
        let scoring = match m.scoring {
            RouterScoring::Softmax => Scoring::Softmax,
            RouterScoring::Sigmoid => Scoring::Sigmoid,
        };
        let grouped = |score| Selection::Grouped { n_group: m.n_group, topk_group: m.topk_group, score };
        let selection = match m.topk_method {
            _ if m.n_group <= 1 => Selection::TopK,
            TopkMethod::Greedy => Selection::TopK,
            TopkMethod::GroupLimitedGreedy => grouped(GroupScore::Max),
            TopkMethod::NoAuxTc => grouped(GroupScore::TopTwoSum),
        };
        RouterSpec {
            n_experts: m.num_experts,
            top_k: m.num_experts_per_tok,
            scoring,
            selection,
            normalize: m.norm_topk_prob,
            scale: m.routed_scaling_factor as f32,
        }
    }

    /// The routing llama.cpp's metadata describes: `{arch}.expert_count`,
    /// `expert_used_count`, `expert_gating_func` (0/absent or 1 softmax, 2 sigmoid),
    /// `expert_weights_norm` (absent: `normalize_default`), `expert_weights_scale` (absent or
    /// 0: none), `expert_group_count` / `expert_group_used_count` (groups scored by their
    /// maximum under softmax, DeepSeek-V2; by their top-2 sum under sigmoid, DeepSeek-V3).
    pub fn from_gguf(meta: &GgufMeta<'_>, normalize_default: bool) -> Result<Self, ModelError> {
        let scoring = match meta.opt_usize("expert_gating_func")? {
            None | Some(0) | Some(1) => Scoring::Softmax,
            Some(2) => Scoring::Sigmoid,
            Some(other) => {
                return Err(ModelError::config(
                    meta.key("expert_gating_func"),
                    format!("gating function {other} is not supported"),
                ))
            }
        };
        let normalize = match meta.file().get(&meta.key("expert_weights_norm")) {
            None => normalize_default,
            Some(v) => v.as_bool().ok_or_else(|| {
                ModelError::config(meta.key("expert_weights_norm"), format!("expected a bool, found {}", v.type_name()))
            })?,
        };
        let scale = match meta.opt_f64("expert_weights_scale")? {
            None | Some(0.0) => 1.0,
            Some(s) => s as f32,
        };
        let n_group = meta.opt_usize("expert_group_count")?.unwrap_or(1);
        let topk_group = meta.opt_usize("expert_group_used_count")?.unwrap_or(1);
        let selection = if n_group > 1 {
            let score = if scoring == Scoring::Sigmoid { GroupScore::TopTwoSum } else { GroupScore::Max };
            Selection::Grouped { n_group, topk_group, score }
        } else {
            Selection::TopK
        };
        let spec = RouterSpec {
            n_experts: meta.req_usize("expert_count")?,
            top_k: meta.req_usize("expert_used_count")?,
            scoring,
            selection,
            normalize,
            scale,
        };
        spec.validate()?;
        Ok(spec)
    }

    fn n_group(&self) -> usize {
        match self.selection {
            Selection::TopK => 0,
            Selection::Grouped { n_group, .. } => n_group,
        }
    }

    /// f32 working memory of [`Self::route`].
    pub fn work_floats(&self) -> usize {
        self.n_experts + 2 * self.n_group()
    }

    /// Routes one token: `scores` holds its router logits (`n_experts`) and is turned into
    /// scores in place; writes the chosen experts to `ids` and their weights to `weights`
    /// (`top_k` each). `bias` (DeepSeek-V3) shifts the scores for choosing only. `work` has
    /// [`Self::work_floats`] values. Allocates nothing.
    pub fn route(
        &self,
        scores: &mut [f32],
        bias: Option<&[f32]>,
        work: &mut [f32],
        ids: &mut [u32],
        weights: &mut [f32],
    ) {
        let (e, k) = (self.n_experts, self.top_k);
        let scores = &mut scores[..e];
        match self.scoring {
            Scoring::Softmax => softmax_in_place(scores),
            Scoring::Sigmoid => scores.iter_mut().for_each(|s| *s = 1.0 / (1.0 + (-*s).exp())),
        }
        let (choice, rest) = work.split_at_mut(e);
        choice.copy_from_slice(scores);
        if let Some(b) = bias {
            choice.iter_mut().zip(b).for_each(|(c, b)| *c += b);
        }
        if let Selection::Grouped { n_group, topk_group, score } = self.selection {
            let per = e / n_group;
            let (group_scores, group_ids) = rest[..2 * n_group].split_at_mut(n_group);
            for (g, gs) in group_scores.iter_mut().enumerate() {
                let members = &choice[g * per..(g + 1) * per];
                *gs = match score {
                    GroupScore::Max => members.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    GroupScore::TopTwoSum => {
                        let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                        for &m in members {
                            if m > a {
                                b = a;
                                a = m;
                            } else if m > b {
                                b = m;
                            }
                        }
                        a + b
                    }
                };
            }
            let kept = as_u32(group_ids);
            top_k(group_scores, &mut kept[..topk_group]);
            for g in 0..n_group {
                if !kept[..topk_group].contains(&(g as u32)) {
                    choice[g * per..(g + 1) * per].fill(f32::NEG_INFINITY);
                }
            }
        }
        top_k(choice, &mut ids[..k]);
        for (w, &i) in weights[..k].iter_mut().zip(ids.iter()) {
            *w = scores[i as usize];
        }
        if self.normalize {
            // transformers adds 1e-20 (DeepSeek-V3) so that an all-zero row cannot divide by 0.
            let inv = 1.0 / (weights[..k].iter().sum::<f32>() + 1e-20);
            weights[..k].iter_mut().for_each(|w| *w *= inv);
        }
        if self.scale != 1.0 {
            weights[..k].iter_mut().for_each(|w| *w *= self.scale);
        }
    }
}

/// The indices of the `ids.len()` largest `values`, largest first; ties go to the lower
/// index. Always `ids.len()` distinct valid indices (NaN ranks below everything), in one pass.
fn top_k(values: &[f32], ids: &mut [u32]) {
    let k = ids.len();
    if k == 0 {
        return;
    }
    // `a` ranks above `b`.
    let above = |a: f32, b: f32| a > b || (b.is_nan() && !a.is_nan());
    let mut len = 0;
    for (i, &v) in values.iter().enumerate() {
        if len == k && !above(v, values[ids[k - 1] as usize]) {
            continue;
        }
        let mut p = len.min(k - 1);
        while p > 0 && above(v, values[ids[p - 1] as usize]) {
            ids[p] = ids[p - 1];
            p -= 1;
        }
        ids[p] = i as u32;
        len = (len + 1).min(k);
    }
}

/// Views f32 scratch as u32 indices (same size and alignment; every bit pattern is valid
/// for both types, and the values are only ever read back as indices).
fn as_u32(s: &mut [f32]) -> &mut [u32] {
    // SAFETY: f32 and u32 have identical size and alignment and no invalid bit patterns; the
    // returned slice reborrows `s` exclusively for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u32>(), s.len()) }
}

/// The router: a `[n_experts][hidden]` projection plus the routing rule.
#[derive(Debug, Clone)]
pub struct Router {
    pub spec: RouterSpec,
    pub gate: Linear,
    /// DeepSeek-V3's `e_score_correction_bias` (llama.cpp `exp_probs_b`): choice only.
    pub choice_bias: Option<Vec<f32>>,
}

/// One routed expert: a gated MLP without biases.
#[derive(Debug, Clone)]
pub struct Expert {
    pub gate_up: GateUp,
    pub down: Linear,
}

impl Expert {
    fn bytes(&self) -> usize {
        let gu = match &self.gate_up {
            GateUp::Separate { gate, up } => gate.bytes() + up.bytes(),
            GateUp::Fused(w) => w.bytes(),
        };
        gu + self.down.bytes()
    }

    /// `ys = down(act(gate(xs)) * up(xs))` for `n` tokens; `h` holds `2 * n * ffn` floats.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        ctx: &ForwardCtx<'_>,
        act: Activation,
        ffn: usize,
        xs: &[f32],
        n: usize,
        h: &mut [f32],
        ys: &mut [f32],
    ) -> Result<(), ModelError> {
        match &self.gate_up {
            GateUp::Separate { gate, up } => {
                let (a, b) = h[..2 * n * ffn].split_at_mut(n * ffn);
                gate.project_rows(ctx, xs, n, a)?;
                up.project_rows(ctx, xs, n, b)?;
                act.glu_in_place(a, b);
            }
            GateUp::Fused(w) => {
                // Rows [gate | up] per token; compacted in place as in `GatedMlp`.
                let both = &mut h[..2 * n * ffn];
                w.project_rows(ctx, xs, n, both)?;
                act.glu_fused_rows(both, n, ffn);
            }
        }
        self.down.project_rows(ctx, &h[..n * ffn], n, ys)
    }
}

/// A sparse MoE feed-forward block.
#[derive(Debug, Clone)]
pub struct SparseMoe {
    router: Router,
    experts: Vec<Expert>,
    /// Experts every token runs (DeepSeek's `shared_experts`, as one MLP of their total width).
    shared: Option<GatedMlp>,
    act: Activation,
    hidden: usize,
    /// Intermediate width of one routed expert.
    ffn: usize,
}

impl SparseMoe {
    pub fn new(
        router: Router,
        experts: Vec<Expert>,
        shared: Option<GatedMlp>,
        act: Activation,
        hidden: usize,
        ffn: usize,
    ) -> Self {
        SparseMoe { router, experts, shared, act, hidden, ffn }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Floats of the routed part's scratch for `n` tokens, in [`Self::forward`]'s order.
    fn routed_floats(&self, n: usize) -> usize {
        let s = &self.router.spec;
        let (e, k) = (s.n_experts, s.top_k);
        n * e + s.work_floats() + 4 * n * k + e + 2 * n * self.hidden + 2 * n * self.ffn
    }
}

impl FeedForward for SparseMoe {
    fn scratch_floats(&self, max_tokens: usize, n_threads: usize) -> usize {
        let shared = self.shared.as_ref().map_or(0, |s| s.scratch_floats(max_tokens, n_threads));
        shared.max(self.routed_floats(max_tokens))
    }

    fn weight_bytes(&self) -> usize {
        self.router.gate.bytes()
            + self.router.choice_bias.as_ref().map_or(0, |b| b.len() * 4)
            + self.experts.iter().map(Expert::bytes).sum::<usize>()
            + self.shared.as_ref().map_or(0, |s| s.weight_bytes())
    }

    fn forward(&self, ctx: &ForwardCtx<'_>, x: &[f32], out: &mut [f32], scratch: &mut [f32]) -> Result<(), ModelError> {
        let spec = &self.router.spec;
        let (n, h, f) = (ctx.n_tokens, self.hidden, self.ffn);
        let (e, k) = (spec.n_experts, spec.top_k);
        if self.experts.len() != e {
            return Err(ModelError::config("expert_count", format!("{} experts bound for {e}", self.experts.len())));
        }
        let out = &mut out[..n * h];

        // Shared experts write the output first; the routed experts add to it.
        match &self.shared {
            Some(shared) => shared.forward(ctx, x, out, scratch)?,
            None => out.fill(0.0),
        }

        let (logits, rest) = scratch.split_at_mut(n * e);
        let (work, rest) = rest.split_at_mut(spec.work_floats());
        let (ids, rest) = rest.split_at_mut(n * k);
        let (weights, rest) = rest.split_at_mut(n * k);
        let (order, rest) = rest.split_at_mut(n * k);
        let (order_w, rest) = rest.split_at_mut(n * k);
        let (ends, rest) = rest.split_at_mut(e);
        let (xs, rest) = rest.split_at_mut(n * h);
        let (ys, rest) = rest.split_at_mut(n * h);
        let hbuf = &mut rest[..2 * n * f];
        let (ids, order, ends) = (as_u32(ids), as_u32(order), as_u32(ends));

        // Route every token.
        self.router.gate.project(ctx, x, logits)?;
        let bias = self.router.choice_bias.as_deref();
        for t in 0..n {
            let (tid, tw) = (&mut ids[t * k..(t + 1) * k], &mut weights[t * k..(t + 1) * k]);
            spec.route(&mut logits[t * e..(t + 1) * e], bias, work, tid, tw);
        }

        // Group the (token, expert) pairs by expert: counting sort into `order`.
        ends.fill(0);
        for &ex in ids.iter() {
            ends[ex as usize] += 1;
        }
        let mut start = 0;
        for c in ends.iter_mut() {
            let count = *c;
            *c = start; // becomes the expert's write cursor, then its end
            start += count;
        }
        for (pair, &ex) in ids.iter().enumerate() {
            let slot = &mut ends[ex as usize];
            order[*slot as usize] = (pair / k) as u32;
            order_w[*slot as usize] = weights[pair];
            *slot += 1;
        }

        // Each chosen expert once, over all of its tokens.
        let mut begin = 0;
        for (expert, &end) in self.experts.iter().zip(ends.iter()) {
            let (b, end) = (begin, end as usize);
            begin = end;
            let c = end - b;
            if c == 0 {
                continue;
            }
            for (i, &t) in order[b..end].iter().enumerate() {
                let t = t as usize;
                xs[i * h..(i + 1) * h].copy_from_slice(&x[t * h..(t + 1) * h]);
            }
            expert.forward(ctx, self.act, f, &xs[..c * h], c, hbuf, &mut ys[..c * h])?;
            for (i, (&t, &w)) in order[b..end].iter().zip(&order_w[b..end]).enumerate() {
                let t = t as usize;
                for (o, y) in out[t * h..(t + 1) * h].iter_mut().zip(&ys[i * h..(i + 1) * h]) {
                    *o += w * y;
                }
            }
        }
        Ok(())
    }
}

/// How a family names its experts' matrices on the Hugging Face side:
/// `model.layers.{l}.{block}.experts.{e}.{gate|up|down}.weight`.
#[derive(Debug, Clone, Copy)]
pub struct HfExpertNames {
    /// `block_sparse_moe` (Mixtral) or `mlp`.
    pub block: &'static str,
    pub gate: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

/// The `n` routed experts of layer `layer` (`ffn` wide, `hidden` in/out), in both namings:
/// HF per-expert matrices, or llama.cpp's stacked 3-D `blk.{l}.ffn_{gate,up,down}_exps`
/// (`[n][rows][cols]`, one expert a contiguous sub-slice of the bytes; also the fused
/// `ffn_gate_up_exps`), or the legacy per-expert `blk.{l}.ffn_{gate,up,down}.{e}` of old
/// Mixtral GGUFs.
pub fn bind_experts(
    w: &mut Binder<'_>,
    layer: usize,
    hf: HfExpertNames,
    n: usize,
    ffn: usize,
    hidden: usize,
) -> Vec<Expert> {
    let plain = |weight: Weight| Linear::new(weight, None);
    match w.kind() {
        SourceKind::Hf => (0..n)
            .map(|e| {
                let name = |m: &str| w.layer_name(layer, &format!("{}.experts.{e}.{m}", hf.block), "", "weight");
                let (gn, un, dn) = (name(hf.gate), name(hf.up), name(hf.down));
                let gate = plain(w.matrix(&gn, ffn, hidden));
                let up = plain(w.matrix(&un, ffn, hidden));
                let down = plain(w.matrix(&dn, hidden, ffn));
                Expert { gate_up: GateUp::Separate { gate, up }, down }
            })
            .collect(),
        SourceKind::Gguf => {
            let stacked_name = |m: &str| format!("blk.{layer}.{m}.weight");
            let legacy = format!("blk.{layer}.ffn_gate.0.weight");
            if !w.has(&stacked_name("ffn_gate_exps")) && !w.has(&stacked_name("ffn_gate_up_exps")) && w.has(&legacy) {
                return (0..n)
                    .map(|e| {
                        let name = |m: &str| format!("blk.{layer}.{m}.{e}.weight");
                        let gate = plain(w.matrix(&name("ffn_gate"), ffn, hidden));
                        let up = plain(w.matrix(&name("ffn_up"), ffn, hidden));
                        let down = plain(w.matrix(&name("ffn_down"), hidden, ffn));
                        Expert { gate_up: GateUp::Separate { gate, up }, down }
                    })
                    .collect();
            }
            let downs = stacked(w, &stacked_name("ffn_down_exps"), n, hidden, ffn);
            let gate_ups: Vec<GateUp> = if w.has(&stacked_name("ffn_gate_up_exps")) {
                stacked(w, &stacked_name("ffn_gate_up_exps"), n, 2 * ffn, hidden)
                    .into_iter()
                    .map(|m| GateUp::Fused(plain(m)))
                    .collect()
            } else {
                let gates = stacked(w, &stacked_name("ffn_gate_exps"), n, ffn, hidden);
                let ups = stacked(w, &stacked_name("ffn_up_exps"), n, ffn, hidden);
                gates.into_iter().zip(ups).map(|(g, u)| GateUp::Separate { gate: plain(g), up: plain(u) }).collect()
            };
            gate_ups.into_iter().zip(downs).map(|(gate_up, d)| Expert { gate_up, down: plain(d) }).collect()
        }
    }
}

/// A sparse MoE block of routed experts only (Mixtral, Qwen3-MoE): the router
/// `{names.block}.gate` / `ffn_gate_inp` and the experts of [`bind_experts`].
pub fn bind_routed(
    w: &mut Binder<'_>,
    layer: usize,
    spec: RouterSpec,
    names: HfExpertNames,
    ffn: usize,
    hidden: usize,
    act: Activation,
) -> SparseMoe {
    let router_name = w.layer_name(layer, &format!("{}.gate", names.block), "ffn_gate_inp", "weight");
    let gate = Linear::new(w.matrix(&router_name, spec.n_experts, hidden), None);
    let experts = bind_experts(w, layer, names, spec.n_experts, ffn, hidden);
    SparseMoe::new(Router { spec, gate, choice_bias: None }, experts, None, act, hidden, ffn)
}

/// A stacked 3-D tensor `[n][rows][cols]` (llama.cpp's `*_exps`, `attn_k_b`, `attn_v_b`) as
/// one `[n*rows][cols]` weight over its stored bytes. `None` when it is missing (recorded as
/// missing) or misshapen (recorded as a problem): loading then fails before anything runs.
pub fn stacked_whole(w: &mut Binder<'_>, name: &str, n: usize, rows: usize, cols: usize) -> Option<Weight> {
    let Some(t) = w.tensors().get(name) else {
        let _ = w.matrix(name, n * rows, cols); // records the name as missing
        return None;
    };
    w.ignore(name);
    if t.shape != [n, rows, cols] {
        w.problem(format!("{name}: shape {:?}, expected [{n}, {rows}, {cols}]", t.shape));
        return None;
    }
    let Some(format) = t.format else {
        w.problem(format!("{name}: element type {} is not supported", t.type_name));
        return None;
    };
    match Weight::new(format, n * rows, cols, t.bytes.clone()) {
        Ok(all) => Some(all.with_origin(name, 0, 1)),
        Err(e) => {
            w.problem(format!("{name}: {e}"));
            None
        }
    }
}

/// The `n` matrices `[rows][cols]` of a stacked tensor, each a view of its slice of the
/// bytes (no copy); placeholders when [`stacked_whole`] fails.
pub fn stacked(w: &mut Binder<'_>, name: &str, n: usize, rows: usize, cols: usize) -> Vec<Weight> {
    match stacked_whole(w, name, n, rows, cols) {
        Some(all) => (0..n).map(|e| all.rows_view(e * rows..(e + 1) * rows).with_origin(name, e, n)).collect(),
        None => vec![placeholder(); n],
    }
}

/// A 0x0 stand-in for a weight that failed to bind (loading fails; it is never used).
pub(crate) fn placeholder() -> Weight {
    Weight::new(owl_kernels::BlockFormat::F32, 0, 0, WeightBytes::from_vec(Vec::new()))
        .expect("a 0x0 matrix of 0 bytes is well-formed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(scoring: Scoring, selection: Selection, normalize: bool, scale: f32) -> RouterSpec {
        RouterSpec { n_experts: 8, top_k: 2, scoring, selection, normalize, scale }
    }

    fn route(s: &RouterSpec, logits: &[f32], bias: Option<&[f32]>) -> (Vec<u32>, Vec<f32>) {
        let mut scores = logits.to_vec();
        let mut work = vec![0.0; s.work_floats()];
        let (mut ids, mut w) = (vec![0u32; s.top_k], vec![0.0; s.top_k]);
        s.route(&mut scores, bias, &mut work, &mut ids, &mut w);
        (ids, w)
    }

    const LOGITS: [f32; 8] = [0.1, 2.0, -1.0, 1.5, 0.3, 1.9, -0.5, 0.0];

    #[test]
    fn softmax_top2_renormalised() {
        let (ids, w) = route(&spec(Scoring::Softmax, Selection::TopK, true, 1.0), &LOGITS, None);
        assert_eq!(ids, [1, 5]);
        let (a, b) = (2.0f64.exp(), 1.9f64.exp());
        assert!((w[0] as f64 - a / (a + b)).abs() < 1e-6 && (w[1] as f64 - b / (a + b)).abs() < 1e-6);
    }

    #[test]
    fn softmax_unnormalised_scaled() {
        let (ids, w) = route(&spec(Scoring::Softmax, Selection::TopK, false, 2.0), &LOGITS, None);
        assert_eq!(ids, [1, 5]);
        let z: f64 = LOGITS.iter().map(|&l| (l as f64).exp()).sum();
        assert!((w[0] as f64 - 2.0 * 2.0f64.exp() / z).abs() < 1e-6);
    }

    #[test]
    fn bias_chooses_but_does_not_weigh() {
        let s = spec(Scoring::Sigmoid, Selection::TopK, true, 2.5);
        let bias = [0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let (ids, w) = route(&s, &LOGITS, Some(&bias));
        assert_eq!(ids, [2, 1]);
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (a, b) = (sig(-1.0), sig(2.0));
        assert!((w[0] as f64 - 2.5 * a / (a + b)).abs() < 1e-6);
        assert!((w[1] as f64 - 2.5 * b / (a + b)).abs() < 1e-6);
    }

    #[test]
    fn groups_limit_the_choice() {
        // Groups of 4: {0..4} top-2 sum 2.0 + 1.5, {4..8} 1.9 + 0.3: group 0 wins with the sum,
        // so expert 5 (1.9) is not eligible.
        let s = spec(
            Scoring::Sigmoid,
            Selection::Grouped { n_group: 2, topk_group: 1, score: GroupScore::TopTwoSum },
            false,
            1.0,
        );
        assert_eq!(route(&s, &LOGITS, None).0, [1, 3]);
        // By the group maximum: 2.0 vs 1.9, group 0 again; make group 1's max the largest.
        let mut l = LOGITS;
        l[6] = 3.0;
        let s = spec(
            Scoring::Softmax,
            Selection::Grouped { n_group: 2, topk_group: 1, score: GroupScore::Max },
            false,
            1.0,
        );
        assert_eq!(route(&s, &l, None).0, [6, 5]);
        // Two of four groups of two kept.
        let s = spec(
            Scoring::Softmax,
            Selection::Grouped { n_group: 4, topk_group: 2, score: GroupScore::Max },
            false,
            1.0,
        );
        assert_eq!(route(&s, &l, None).0, [6, 1]);
    }

    #[test]
    fn top_k_is_stable_and_total() {
        let mut ids = [0u32; 3];
        top_k(&[1.0, 3.0, 3.0, 2.0], &mut ids);
        assert_eq!(ids, [1, 2, 3]);
        top_k(&[f32::NAN, f32::NEG_INFINITY, f32::NAN, 1.0], &mut ids);
        let mut sorted = ids;
        sorted.sort_unstable();
        assert!(sorted.windows(2).all(|w| w[0] != w[1]) && sorted.iter().all(|&i| i < 4), "{ids:?}");
        assert_eq!(ids[0], 3);
    }

    #[test]
    fn bad_specs_are_errors() {
        let mut s = spec(Scoring::Softmax, Selection::TopK, true, 1.0);
        s.top_k = 9;
        assert!(s.validate().is_err());
        let s =
            spec(Scoring::Softmax, Selection::Grouped { n_group: 3, topk_group: 1, score: GroupScore::Max }, true, 1.0);
        assert!(s.validate().is_err());
        let s =
            spec(Scoring::Softmax, Selection::Grouped { n_group: 4, topk_group: 1, score: GroupScore::Max }, true, 1.0);
        assert!(s.validate().is_ok());
    }
}
