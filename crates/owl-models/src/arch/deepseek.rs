//! DeepSeek-V2 / V2-Lite / V2.5 / V3 / R1: multi-head latent attention and a mixture of
//! experts with shared experts, after `first_k_dense_replace` dense layers.
//!
//! ```text
//! x += mla(rms_norm(x))                         skeleton::mla: latent KV, rope on 64 (here 8) dims
//! x += moe(rms_norm(x)) + shared(rms_norm(x))   skeleton::moe (dense gated MLP in the first layers)
//! ```
//!
//! Routing — V3 (`noaux_tc`): sigmoid scores, `e_score_correction_bias` for choosing only,
//! group-limited (group score = top-2 sum), weights normalised (`norm_topk_prob`) ×
//! `routed_scaling_factor`. V2 as transformers 5 implements it: softmax, greedy or
//! group-limited (group score = max) top-k, weights × `routed_scaling_factor`, never
//! renormalised (transformers ignores `norm_topk_prob` for V2; DeepSeek's own V2 code would
//! normalise instead of scaling when it is set — no released V2 checkpoint sets it).
//!
//! RoPE rotates interleaved pairs (`rope_interleave`, V2 always). Under YaRN the softmax scale
//! is multiplied by mscale(factor, mscale_all_dim)², as DeepSeek's code and transformers' V3
//! do (transformers' V2 class omits it; DeepSeek's V2 code and llama.cpp apply it).
//!
//! GGUF (`deepseek2`, llama.cpp): `attn_q_a`/`attn_q_a_norm`/`attn_q_b` or `attn_q`,
//! `attn_kv_a_mqa`, `attn_kv_a_norm`, `attn_kv_b` (older converters) or the split
//! `attn_k_b` `[H][rank][nope]` (transposed) + `attn_v_b` `[H][v][rank]` (current converter,
//! which also writes `key_length`/`value_length` of the latent and the per-head sizes as
//! `key_length_mla`/`value_length_mla`), `ffn_gate_inp`, `exp_probs_b.bias`,
//! `ffn_{gate,up,down}_exps`, `ffn_{gate,up,down}_shexp`. `attn_k_b` is used as stored: it is
//! already the absorbed form's per-head `K_hᵀ` (`skeleton::mla` caches the latent); a fused
//! `kv_b` is split into that form at load, in f32.
//! The YaRN softmax factor comes from `rope.scaling.yarn_log_multiplier` (= 0.1 ×
//! mscale_all_dim), the cos/sin factor is then 1 (llama.cpp's deepseek2 convention).

use owl_formats::hf_config::{self as hf, HfConfig};
use owl_kernels::BlockFormat;

use crate::config::{GgufMeta, LayerAttention, ModelConfig};
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::bind;
use crate::skeleton::block::{Block, FeedForward};
use crate::skeleton::linear::Linear;
use crate::skeleton::mla::{LatentAttention, MlaSpec, QueryProj};
use crate::skeleton::mlp::{GateUp, GatedMlp};
use crate::skeleton::moe::{self, HfExpertNames, Router, RouterSpec, Scoring, SparseMoe};
use crate::skeleton::rope::{RopeScaling, RopeSpec, RopeStyle};
use crate::weights::{Binder, SourceKind, Weight, WeightBytes};
use owl_kernels::ops::activation::Activation;

const NAME: &str = "deepseek";

pub static FAMILY: Family =
    Family { name: NAME, hf_model_types: &["deepseek_v2", "deepseek_v3"], gguf_architectures: &["deepseek2"], build };

/// What the family needs beyond [`ModelConfig`].
struct DeepseekConfig {
    cfg: ModelConfig,
    /// Low-rank query projection width; `None`: plain `q_proj` (V2-Lite).
    q_lora_rank: Option<usize>,
    kv_lora_rank: usize,
    nope: usize,
    rope: usize,
    v: usize,
    /// Softmax scale of q·k.
    scale: f32,
    /// Bias on `q_a_proj`, `kv_a_proj_with_mqa`, `o_proj` (`attention_bias`).
    attn_bias: bool,
    /// `None` for a model without experts.
    router: Option<RouterSpec>,
    expert_ffn: usize,
    /// Total width of the shared experts (0: none).
    shared_ffn: usize,
    sparse: Vec<bool>,
}

fn positive(field: &str, v: usize) -> Result<usize, ModelError> {
    if v == 0 {
        return Err(ModelError::config(field, "must be positive"));
    }
    Ok(v)
}

fn from_hf(c: &HfConfig) -> Result<DeepseekConfig, ModelError> {
    let mla = c.mla.as_ref().ok_or_else(|| ModelError::config("kv_lora_rank", "missing: DeepSeek attention is MLA"))?;
    let v2 = c.model_type == "deepseek_v2";
    let mut cfg = ModelConfig::from_hf(NAME, c)?;
    // transformers' V2 always rotates interleaved pairs (a complex multiply).
    cfg.ropes[0].style = if mla.rope_interleave || v2 { RopeStyle::AdjacentPairs } else { RopeStyle::RotateHalf };
    let qk = mla.qk_head_dim();
    let mut scale = (qk as f64).powf(-0.5);
    if let hf::RopeScaling::Yarn { factor, mscale_all_dim: Some(m), .. } = c.rope.scaling {
        if m != 0.0 {
            scale *= hf::yarn_get_mscale(factor, m).powi(2);
        }
    }
    let router = c.moe.as_ref().map(|m| {
        let mut spec = RouterSpec::from_hf(m);
        if v2 {
            spec.normalize = false;
        }
        spec
    });
    if let Some(r) = &router {
        r.validate()?;
    }
    let moe = c.moe.as_ref();
    Ok(DeepseekConfig {
        q_lora_rank: mla.q_lora_rank,
        kv_lora_rank: positive("kv_lora_rank", mla.kv_lora_rank)?,
        nope: mla.qk_nope_head_dim,
        rope: positive("qk_rope_head_dim", mla.qk_rope_head_dim)?,
        v: mla.v_head_dim,
        scale: scale as f32,
        attn_bias: c.attention_bias,
        router,
        expert_ffn: moe.map_or(0, |m| m.expert_intermediate_size),
        shared_ffn: moe.map_or(0, |m| m.shared_expert_intermediate_size),
        sparse: (0..c.num_hidden_layers).map(|l| c.is_moe_layer(l)).collect(),
        cfg: finish_config(cfg, c.num_attention_heads, qk, scale as f32),
    })
}

/// The [`ModelConfig`] fields MLA redefines: every head is cached (`n_kv_heads = n_heads`)
/// with keys of `nope + rope` dims.
fn finish_config(mut cfg: ModelConfig, n_heads: usize, qk: usize, scale: f32) -> ModelConfig {
    cfg.n_kv_heads = n_heads;
    cfg.head_dim = qk;
    cfg.attn_scale = scale;
    cfg
}

fn from_gguf(meta: &GgufMeta<'_>, w: &Binder<'_>) -> Result<DeepseekConfig, ModelError> {
    let n_layers = meta.block_count()?;
    let hidden = positive(&meta.key("embedding_length"), meta.req_usize("embedding_length")?)?;
    let n_heads = positive(&meta.key("attention.head_count"), meta.req_usize("attention.head_count")?)?;
    let kv_lora_rank = positive(&meta.key("attention.kv_lora_rank"), meta.req_usize("attention.kv_lora_rank")?)?;
    let rope = positive(&meta.key("rope.dimension_count"), meta.req_usize("rope.dimension_count")?)?;
    // Current converters: key_length = rank + rope (the latent), per-head sizes in *_mla.
    let qk = match meta.opt_usize("attention.key_length_mla")? {
        Some(k) => k,
        None => meta.req_usize("attention.key_length")?,
    };
    let v = match meta.opt_usize("attention.value_length_mla")? {
        Some(v) => v,
        None => meta.req_usize("attention.value_length")?,
    };
    if qk <= rope || v == 0 {
        return Err(ModelError::config(
            meta.key("attention.key_length_mla"),
            format!("{qk} key dims with {rope} rope dims"),
        ));
    }
    let q_lora_rank = if w.has("blk.0.attn_q.weight") { None } else { Some(meta.req_usize("attention.q_lora_rank")?) };
    let vocab_size = w
        .tensors()
        .get("token_embd.weight")
        .and_then(|t| t.shape.first().copied())
        .ok_or_else(|| ModelError::config("token_embd.weight", "the embedding tensor is missing"))?;

    let mut scaling = meta.rope_scaling()?;
    let mut scale = (qk as f64).powf(-0.5);
    if let RopeScaling::Yarn { factor, attention_factor, .. } = &mut scaling {
        if let Some(log_mul) = meta.opt_f64("rope.scaling.yarn_log_multiplier")? {
            // llama.cpp deepseek2: the file stores 0.1 * mscale_all_dim; cos/sin are then
            // unscaled (mscale == mscale_all_dim in every DeepSeek config).
            *attention_factor = 1.0;
            if *factor > 1.0 {
                scale *= (1.0 + log_mul * factor.ln()).powi(2);
            }
        }
    }
    let theta = meta.opt_f64("rope.freq_base")?.unwrap_or(10_000.0);
    let ropes = vec![RopeSpec { theta, rot_dims: rope, style: RopeStyle::AdjacentPairs, scaling }];

    let leading_dense = meta.opt_usize("leading_dense_block_count")?.unwrap_or(0);
    let has_experts = meta.opt_usize("expert_count")?.unwrap_or(0) > 0;
    let router = if has_experts { Some(RouterSpec::from_gguf(meta, false)?) } else { None };
    let expert_ffn = meta.opt_usize("expert_feed_forward_length")?.unwrap_or(0);
    let shared_ffn = meta.opt_usize("expert_shared_count")?.unwrap_or(0) * expert_ffn;
    let sparse: Vec<bool> = (0..n_layers).map(|l| has_experts && l >= leading_dense).collect();
    let ffn_dim = match meta.opt_usize("feed_forward_length")? {
        Some(f) => f,
        None if sparse.iter().all(|&s| s) => 0,
        None => return Err(ModelError::config(meta.key("feed_forward_length"), "missing for the dense layers")),
    };
    let eps = meta.opt_f64("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6);
    let cfg = ModelConfig {
        family: NAME,
        architecture: meta.arch().to_string(),
        vocab_size,
        hidden_size: hidden,
        n_layers,
        n_heads,
        n_kv_heads: n_heads,
        head_dim: qk,
        ffn_dim,
        norm_eps: eps as f32,
        context_length: meta.opt_usize("context_length")?.unwrap_or(4096),
        tied_embeddings: w.tensors().get("output.weight").is_none(),
        activation: Activation::Silu,
        qkv_bias: false,
        layers: vec![LayerAttention { window: None, rope: Some(0) }; n_layers],
        ropes,
        attn_scale: scale as f32,
        attn_softcap: None,
        final_softcap: None,
        embed_scale: None,
    };
    Ok(DeepseekConfig {
        cfg,
        q_lora_rank,
        kv_lora_rank,
        nope: qk - rope,
        rope,
        v,
        scale: scale as f32,
        attn_bias: w.has("blk.0.attn_kv_a_mqa.bias"),
        router,
        expert_ffn,
        shared_ffn,
        sparse,
    })
}

fn build(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    let d = match src {
        Source::Hf(c) => {
            // The checkpoints carry multi-token-prediction layers past num_hidden_layers
            // (V3's `model.layers.61`), which next-token inference does not use.
            let n = c.num_hidden_layers;
            w.ignore_where(|name| layer_index(name).is_some_and(|l| l >= n));
            from_hf(c)?
        }
        Source::Gguf(meta) => from_gguf(meta, w)?,
    };
    let cfg = &d.cfg;
    let h = cfg.hidden_size;
    let embedding = bind::embedding(w, cfg);
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            let ffn: Box<dyn FeedForward> = match (&d.router, d.sparse[l]) {
                (Some(router), true) => Box::new(moe_block(w, &d, *router, l)),
                _ => Box::new(bind::mlp(w, cfg, l)),
            };
            Block::pre_norm(
                bind::layer_norm(w, cfg, l, "input_layernorm", "attn_norm", h),
                Box::new(attention(w, &d, l)),
                bind::layer_norm(w, cfg, l, "post_attention_layernorm", "ffn_norm", h),
                ffn,
            )
        })
        .collect();
    let final_norm = bind::final_norm(w, cfg);
    let head = bind::head(w, cfg, &embedding);
    Ok(ModelParts { config: d.cfg, embedding, blocks, final_norm, head })
}

/// `model.layers.{N}.…` → N.
fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?.split('.').next()?.parse().ok()
}

fn attention(w: &mut Binder<'_>, d: &DeepseekConfig, l: usize) -> LatentAttention {
    let cfg = &d.cfg;
    let (h, heads) = (cfg.hidden_size, cfg.n_heads);
    let qk = d.nope + d.rope;
    let norm = |w: &mut Binder<'_>, hf: &str, gguf: &str, dim: usize| bind::layer_norm(w, cfg, l, hf, gguf, dim);
    let q = match d.q_lora_rank {
        None => QueryProj::Direct(bind::linear(w, l, "self_attn.q_proj", "attn_q", heads * qk, h, false)),
        Some(r) => QueryProj::LowRank {
            a: bind::linear(w, l, "self_attn.q_a_proj", "attn_q_a", r, h, d.attn_bias),
            norm: norm(w, "self_attn.q_a_layernorm", "attn_q_a_norm", r),
            b: bind::linear(w, l, "self_attn.q_b_proj", "attn_q_b", heads * qk, r, false),
        },
    };
    let kv_a =
        bind::linear(w, l, "self_attn.kv_a_proj_with_mqa", "attn_kv_a_mqa", d.kv_lora_rank + d.rope, h, d.attn_bias);
    let kv_norm = norm(w, "self_attn.kv_a_layernorm", "attn_kv_a_norm", d.kv_lora_rank);
    let (rank, nope) = (d.kv_lora_rank, d.nope);
    let (k_absorb, v_up, fused) = if w.kind() == SourceKind::Gguf && !w.has(&format!("blk.{l}.attn_kv_b.weight")) {
        // llama.cpp's split: attn_k_b is already each head's K_hᵀ.
        let stacked = |w: &mut Binder<'_>, name: String, rows: usize, cols: usize| {
            Linear::new(moe::stacked_whole(w, &name, heads, rows, cols).unwrap_or_else(moe::placeholder), None)
        };
        let k = stacked(w, format!("blk.{l}.attn_k_b.weight"), rank, nope);
        let v = stacked(w, format!("blk.{l}.attn_v_b.weight"), d.v, rank);
        (k, v, None)
    } else {
        let kv_b = bind::linear(w, l, "self_attn.kv_b_proj", "attn_kv_b", heads * (nope + d.v), rank, false);
        let (k, v) = absorbed_from_fused(w, &kv_b.weight, heads, rank, nope, d.v);
        (Linear::new(k, None), Linear::new(v, None), kv_b.weight.origin().cloned())
    };
    let o = bind::linear(w, l, "self_attn.o_proj", "attn_output", h, heads * d.v, d.attn_bias);
    let spec = MlaSpec {
        n_heads: heads,
        kv_lora_rank: d.kv_lora_rank,
        nope_dim: d.nope,
        rope_dim: d.rope,
        v_dim: d.v,
        rope: 0,
        scale: d.scale,
    };
    LatentAttention::new(spec, q, kv_a, kv_norm, k_absorb, v_up, fused, o)
}

/// A fused `kv_b` (`[H*(nope+v)][rank]`, rows per head `[k_nope | v]`) as the absorbed
/// form's stacked matrices, in f32: each head's `K_hᵀ` (`[H*rank][nope]`) and `V_h`
/// (`[H*v][rank]`).
fn absorbed_from_fused(
    w: &mut Binder<'_>,
    kv_b: &Weight,
    heads: usize,
    rank: usize,
    nope: usize,
    v: usize,
) -> (Weight, Weight) {
    let mut k_t = vec![0f32; heads * rank * nope];
    let mut v_rows = vec![0f32; heads * v * rank];
    let mut head = vec![0f32; (nope + v) * rank];
    for h in 0..heads {
        if let Err(e) = kv_b.dequantize_rows(h * (nope + v), &mut head) {
            w.problem(format!("kv_b: {e}"));
            return (moe::placeholder(), moe::placeholder());
        }
        for i in 0..nope {
            for r in 0..rank {
                k_t[(h * rank + r) * nope + i] = head[i * rank + r];
            }
        }
        v_rows[h * v * rank..(h + 1) * v * rank].copy_from_slice(&head[nope * rank..]);
    }
    let f32_weight = |values: Vec<f32>, rows: usize, cols: usize| {
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        Weight::new(BlockFormat::F32, rows, cols, WeightBytes::from_vec(bytes)).unwrap_or_else(|_| moe::placeholder())
    };
    (f32_weight(k_t, heads * rank, nope), f32_weight(v_rows, heads * v, rank))
}

fn moe_block(w: &mut Binder<'_>, d: &DeepseekConfig, spec: RouterSpec, l: usize) -> SparseMoe {
    let cfg = &d.cfg;
    let (h, f, e) = (cfg.hidden_size, d.expert_ffn, spec.n_experts);
    let gate = bind::linear(w, l, "mlp.gate", "ffn_gate_inp", e, h, false);
    // The correction bias exists for sigmoid (V3) routing; HF names it without `.weight`.
    let choice_bias = (spec.scoring == Scoring::Sigmoid).then(|| {
        let name = match w.kind() {
            SourceKind::Hf => format!("model.layers.{l}.mlp.gate.e_score_correction_bias"),
            SourceKind::Gguf => format!("blk.{l}.exp_probs_b.bias"),
        };
        w.optional_vector(&name, e)
    });
    let names = HfExpertNames { block: "mlp", gate: "gate_proj", up: "up_proj", down: "down_proj" };
    let experts = moe::bind_experts(w, l, names, e, f, h);
    let shared = (d.shared_ffn > 0).then(|| {
        let fs = d.shared_ffn;
        let gate = bind::linear(w, l, "mlp.shared_experts.gate_proj", "ffn_gate_shexp", fs, h, false);
        let up = bind::linear(w, l, "mlp.shared_experts.up_proj", "ffn_up_shexp", fs, h, false);
        let down = bind::linear(w, l, "mlp.shared_experts.down_proj", "ffn_down_shexp", h, fs, false);
        GatedMlp::new(GateUp::Separate { gate, up }, down, cfg.activation)
    });
    SparseMoe::new(Router { spec, gate, choice_bias: choice_bias.flatten() }, experts, shared, cfg.activation, h, f)
}
