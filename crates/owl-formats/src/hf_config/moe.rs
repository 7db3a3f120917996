//! Mixture-of-experts routing and DeepSeek multi-head latent attention (MLA) settings.
//!
//! One [`MoeConfig`] covers Mixtral, Qwen2/3-MoE and DeepSeek-V2/V3; the spellings differ
//! (`num_local_experts` / `num_experts` / `n_routed_experts`, `decoder_sparse_step` /
//! `first_k_dense_replace`) and are folded into one shape here. Defaults follow the
//! transformers 5.24 config classes of each family.

use super::fields::Fields;
use super::HfConfigError;

/// How router logits become expert scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterScoring {
    /// softmax over all experts (in f32) — Mixtral, Qwen-MoE, DeepSeek-V2.
    Softmax,
    /// element-wise sigmoid — DeepSeek-V3 (`scoring_func` "sigmoid").
    Sigmoid,
}

/// How the top-k experts are chosen from the scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopkMethod {
    /// Plain top-k over all experts (`topk_method` "greedy").
    Greedy,
    /// DeepSeek-V2: keep the `topk_group` groups with the highest max score, then top-k inside
    /// them (`topk_method` "group_limited_greedy").
    GroupLimitedGreedy,
    /// DeepSeek-V3: scores + `e_score_correction_bias` choose the experts (group score = sum of
    /// the top-2 biased scores per group, `topk_group` groups kept); the weights are the unbiased
    /// scores (`topk_method` "noaux_tc").
    NoAuxTc,
}

/// Sparse mixture-of-experts feed-forward settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// Routed experts per MoE layer (`num_local_experts` / `num_experts` / `n_routed_experts`).
    pub num_experts: usize,
    /// Experts chosen per token (`num_experts_per_tok`).
    pub num_experts_per_tok: usize,
    /// Hidden width of one routed expert (`moe_intermediate_size`, or `intermediate_size` for Mixtral).
    pub expert_intermediate_size: usize,
    /// Renormalise the chosen experts' weights to sum 1 (`norm_topk_prob`; always true for
    /// Mixtral; default true for DeepSeek-V3, false otherwise). transformers' DeepSeek-V2 ignores it.
    pub norm_topk_prob: bool,
    /// Router score function.
    pub scoring: RouterScoring,
    /// Expert selection rule.
    pub topk_method: TopkMethod,
    /// Expert groups for group-limited routing (`n_group`; 1 = no grouping).
    pub n_group: usize,
    /// Groups kept per token (`topk_group`; 1 when absent).
    pub topk_group: usize,
    /// Multiplier on the routed experts' weights (`routed_scaling_factor`, default 1).
    pub routed_scaling_factor: f64,
    /// Shared experts run on every token (`n_shared_experts` for DeepSeek; 1 for Qwen2-MoE's
    /// `shared_expert_intermediate_size`; 0 when none).
    pub n_shared_experts: usize,
    /// Total hidden width of the shared-expert MLP (DeepSeek: n_shared_experts *
    /// moe_intermediate_size; Qwen2-MoE: `shared_expert_intermediate_size`; 0 when none).
    pub shared_expert_intermediate_size: usize,
    /// Whether the shared expert's output is scaled by sigmoid(shared_expert_gate(x)) (Qwen2-MoE).
    pub shared_expert_gate: bool,
    /// DeepSeek `first_k_dense_replace`: layers before this index are dense (default 0).
    pub first_k_dense_replace: usize,
    /// DeepSeek `moe_layer_freq`: a layer at or past first_k_dense_replace is sparse when
    /// index % freq == 0 (default 1).
    pub moe_layer_freq: usize,
    /// Qwen-MoE `decoder_sparse_step`: layer i is sparse when (i + 1) % step == 0 (default 1).
    pub decoder_sparse_step: usize,
    /// Qwen-MoE `mlp_only_layers`: layers that stay dense.
    pub mlp_only_layers: Vec<usize>,
    /// Per layer: true where the feed-forward is the MoE block, false where it is a dense MLP
    /// of `intermediate_size` (all of the four rules above applied).
    pub sparse_layers: Vec<bool>,
}

impl MoeConfig {
    /// Whether layer `layer` uses the MoE feed-forward.
    pub fn is_sparse_layer(&self, layer: usize) -> bool {
        self.sparse_layers.get(layer).copied().unwrap_or(false)
    }
}

/// DeepSeek multi-head latent attention dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlaConfig {
    /// Rank of the query down-projection (`q_lora_rank`); `None` = plain `q_proj` (DeepSeek-V2-Lite).
    pub q_lora_rank: Option<usize>,
    /// Width of the compressed KV latent (`kv_lora_rank`).
    pub kv_lora_rank: usize,
    /// Per-head query/key dims without RoPE (`qk_nope_head_dim`).
    pub qk_nope_head_dim: usize,
    /// Per-head query/key dims with RoPE; the key part is one head shared by all (`qk_rope_head_dim`).
    pub qk_rope_head_dim: usize,
    /// Per-head value dims (`v_head_dim`).
    pub v_head_dim: usize,
    /// RoPE pairs interleaved dims (x0,x1),(x2,x3).. instead of rotate-half (`rope_interleave`,
    /// default true; DeepSeek-V2 always interleaves).
    pub rope_interleave: bool,
}

impl MlaConfig {
    /// Query/key head width: nope + rope dims.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }
}

/// Reads the MoE settings; `None` for a dense model.
pub(crate) fn parse_moe(
    f: Fields<'_>,
    model_type: &str,
    intermediate_size: usize,
    num_layers: usize,
) -> Result<Option<MoeConfig>, HfConfigError> {
    let mut experts = None;
    for key in ["num_local_experts", "num_experts", "n_routed_experts"] {
        if let Some(n) = f.opt_usize(key)? {
            experts = Some((key, n));
            break;
        }
    }
    let Some((experts_key, num_experts)) = experts else {
        return Ok(None);
    };
    if num_experts == 0 {
        return Ok(None);
    }
    let is_deepseek_v3 = model_type == "deepseek_v3";
    let is_mixtral = model_type == "mixtral";

    let num_experts_per_tok = f.req_positive("num_experts_per_tok")?;
    if num_experts_per_tok > num_experts {
        return Err(f.invalid(
            "num_experts_per_tok",
            format!("{num_experts_per_tok} exceeds the {num_experts} experts of `{experts_key}`"),
        ));
    }
    let moe_intermediate = f.opt_usize("moe_intermediate_size")?;
    let expert_intermediate_size = moe_intermediate.unwrap_or(intermediate_size);

    let norm_topk_prob = if is_mixtral { true } else { f.opt_bool("norm_topk_prob")?.unwrap_or(is_deepseek_v3) };
    let scoring = match f.opt_str("scoring_func")? {
        Some("softmax") => RouterScoring::Softmax,
        Some("sigmoid") => RouterScoring::Sigmoid,
        Some(other) => {
            return Err(HfConfigError::Unsupported { field: f.name("scoring_func"), value: format!("{other:?}") })
        }
        None if is_deepseek_v3 => RouterScoring::Sigmoid,
        None => RouterScoring::Softmax,
    };
    let topk_method = match f.opt_str("topk_method")? {
        Some("greedy") => TopkMethod::Greedy,
        Some("group_limited_greedy") => TopkMethod::GroupLimitedGreedy,
        Some("noaux_tc") => TopkMethod::NoAuxTc,
        Some(other) => {
            return Err(HfConfigError::Unsupported { field: f.name("topk_method"), value: format!("{other:?}") })
        }
        None if is_deepseek_v3 => TopkMethod::NoAuxTc,
        None => TopkMethod::Greedy,
    };
    let n_group = f.opt_usize("n_group")?.unwrap_or(1);
    let topk_group = f.opt_usize("topk_group")?.unwrap_or(1);
    if n_group == 0 || num_experts % n_group != 0 {
        return Err(f.invalid("n_group", format!("{n_group} does not divide the {num_experts} experts")));
    }
    if topk_group == 0 || topk_group > n_group {
        return Err(f.invalid("topk_group", format!("{topk_group} is not in 1..={n_group} (n_group)")));
    }
    if topk_method != TopkMethod::Greedy && (num_experts / n_group) * topk_group < num_experts_per_tok {
        return Err(f.invalid(
            "topk_group",
            format!(
                "{topk_group} groups of {} experts cannot supply {num_experts_per_tok} experts",
                num_experts / n_group
            ),
        ));
    }
    let routed_scaling_factor = f.opt_f64("routed_scaling_factor")?.unwrap_or(1.0);

    let (n_shared_experts, shared_expert_intermediate_size, shared_expert_gate) =
        match f.opt_usize("shared_expert_intermediate_size")? {
            Some(width) if width > 0 => (1, width, true),
            _ => {
                let n = f.opt_usize("n_shared_experts")?.unwrap_or(0);
                let width = n
                    .checked_mul(expert_intermediate_size)
                    .ok_or_else(|| f.invalid("n_shared_experts", "shared expert width overflows"))?;
                (n, width, false)
            }
        };

    let first_k_dense_replace = f.opt_usize("first_k_dense_replace")?.unwrap_or(0);
    let moe_layer_freq = f.opt_usize("moe_layer_freq")?.unwrap_or(1);
    let decoder_sparse_step = f.opt_usize("decoder_sparse_step")?.unwrap_or(1);
    if moe_layer_freq == 0 {
        return Err(f.invalid("moe_layer_freq", "must be at least 1"));
    }
    if decoder_sparse_step == 0 {
        return Err(f.invalid("decoder_sparse_step", "must be at least 1"));
    }
    let mlp_only_layers = f.opt_usize_vec("mlp_only_layers")?.unwrap_or_default();
    let sparse_layers = (0..num_layers)
        .map(|i| {
            i >= first_k_dense_replace
                && i % moe_layer_freq == 0
                && (i + 1) % decoder_sparse_step == 0
                && !mlp_only_layers.contains(&i)
        })
        .collect();

    Ok(Some(MoeConfig {
        num_experts,
        num_experts_per_tok,
        expert_intermediate_size,
        norm_topk_prob,
        scoring,
        topk_method,
        n_group,
        topk_group,
        routed_scaling_factor,
        n_shared_experts,
        shared_expert_intermediate_size,
        shared_expert_gate,
        first_k_dense_replace,
        moe_layer_freq,
        decoder_sparse_step,
        mlp_only_layers,
        sparse_layers,
    }))
}

/// Reads the MLA dimensions; `None` unless `kv_lora_rank` is set.
pub(crate) fn parse_mla(f: Fields<'_>) -> Result<Option<MlaConfig>, HfConfigError> {
    let Some(kv_lora_rank) = f.opt_usize("kv_lora_rank")? else {
        return Ok(None);
    };
    let q_lora_rank = f.opt_usize("q_lora_rank")?;
    let qk_rope_head_dim = f.req_usize("qk_rope_head_dim")?;
    if qk_rope_head_dim % 2 != 0 {
        return Err(f.invalid("qk_rope_head_dim", format!("{qk_rope_head_dim} must be even")));
    }
    Ok(Some(MlaConfig {
        q_lora_rank,
        kv_lora_rank,
        qk_nope_head_dim: f.req_usize("qk_nope_head_dim")?,
        qk_rope_head_dim,
        v_head_dim: f.req_positive("v_head_dim")?,
        rope_interleave: f.opt_bool("rope_interleave")?.unwrap_or(true),
    }))
}
