//! Phi-3 / Phi-3.5 / Phi-4-mini: Llama-shaped blocks with fused projections, partial rotary
//! embeddings and LongRoPE.
//!
//! ```text
//! q | k | v  = x W_qkv                     one matrix, rows [q (H*d) | k (K*d) | v (K*d)]
//! gate | up  = x W_gate_up                 one matrix, rows [gate | up]
//! RoPE on the first partial_rotary_factor * d dims; LongRoPE: per-frequency divisors,
//! long ones once the sequence exceeds original_max_position_embeddings, cos/sin scaled.
//! ```
//!
//! GGUF: `attn_qkv` (or separate `attn_q/k/v`), `ffn_up` holding gate and up, the LongRoPE
//! factors as `rope_factors_long/short.weight`, `rope.scaling.original_context_length` and
//! `rope.scaling.attn_factor`; rotate-half ("NEOX") order. A sliding window in the metadata
//! is applied, as transformers does (llama.cpp currently disables Phi-3's window).

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::attention::{Attention, QkvProj};
use crate::skeleton::bind;
use crate::skeleton::block::Block;
use crate::skeleton::mlp::{GateUp, GatedMlp};
use crate::skeleton::rope::{RopeScaling, RopeStyle};
use crate::weights::Binder;
use owl_kernels::ops::activation::Activation;

const NAME: &str = "phi3";

pub static FAMILY: Family = Family { name: NAME, hf_model_types: &["phi3"], gguf_architectures: &["phi3"], build };

fn config(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelConfig, ModelError> {
    let meta = match src {
        Source::Hf(c) => return ModelConfig::from_hf(NAME, c),
        Source::Gguf(meta) => meta,
    };
    let mut cfg = ModelConfig::from_gguf(NAME, meta, w.tensors(), RopeStyle::RotateHalf)?;
    let half = cfg.ropes[0].rot_dims / 2;
    let long = w.optional_vector("rope_factors_long.weight", half);
    let short = w.optional_vector("rope_factors_short.weight", half);
    match (long, short) {
        (Some(long), Some(short)) => {
            let orig = meta.opt_usize("rope.scaling.original_context_length")?.unwrap_or(cfg.context_length);
            // transformers' default when the file does not state it: sqrt(1 + ln(s)/ln(orig)).
            let scale = cfg.context_length as f64 / orig.max(1) as f64;
            let default = if scale <= 1.0 { 1.0 } else { (1.0 + scale.ln() / (orig as f64).ln()).sqrt() };
            let attention_factor = meta.opt_f64("rope.scaling.attn_factor")?.unwrap_or(default);
            let to_f64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
            cfg.ropes[0].scaling = RopeScaling::LongRope {
                short: to_f64(short),
                long: to_f64(long),
                original_max_position: orig,
                attention_factor,
            };
        }
        (None, None) => {}
        _ => w.problem("rope_factors_long.weight and rope_factors_short.weight come in pairs".into()),
    }
    Ok(cfg)
}

fn build(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    let cfg = config(src, w)?;
    let (h, f, d) = (cfg.hidden_size, cfg.ffn_dim, cfg.head_dim);
    let qkv_rows = (cfg.n_heads + 2 * cfg.n_kv_heads) * d;
    let embedding = bind::embedding(w, &cfg);
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            let attention = if w.has(&w.layer_name(l, "self_attn.qkv_proj", "attn_qkv", "weight")) {
                let qkv = bind::linear(w, l, "self_attn.qkv_proj", "attn_qkv", qkv_rows, h, cfg.qkv_bias);
                let o = bind::linear(w, l, "self_attn.o_proj", "attn_output", h, cfg.n_heads * d, false);
                Attention::new(bind::attention_spec(&cfg, l), QkvProj::Fused(qkv), o)
            } else {
                bind::attention(w, &cfg, l)
            };
            let gate_up = bind::linear(w, l, "mlp.gate_up_proj", "ffn_up", 2 * f, h, false);
            let down = bind::linear(w, l, "mlp.down_proj", "ffn_down", h, f, false);
            Block::pre_norm(
                bind::layer_norm(w, &cfg, l, "input_layernorm", "attn_norm", h),
                Box::new(attention),
                bind::layer_norm(w, &cfg, l, "post_attention_layernorm", "ffn_norm", h),
                Box::new(GatedMlp::new(GateUp::Fused(gate_up), down, Activation::Silu)),
            )
        })
        .collect();
    let final_norm = bind::final_norm(w, &cfg);
    let head = bind::head(w, &cfg, &embedding);
    Ok(ModelParts { config: cfg, embedding, blocks, final_norm, head })
}
