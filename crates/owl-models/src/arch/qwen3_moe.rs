//! Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B, Qwen3-Coder-30B-A3B): Qwen3 attention (per-head
//! q/k RMSNorm before RoPE) with sparse mixture-of-experts feed-forwards, no shared expert.
//!
//! ```text
//! x += attention(rms_norm(x))                  q/k norm, rotate-half RoPE
//! x += Σ_topk w_e · swiglu_e(rms_norm(x))      softmax over all experts (f32), top-k,
//!                                              renormalised when norm_topk_prob
//! ```
//!
//! Layers are sparse per `decoder_sparse_step` / `mlp_only_layers` (all of them in the
//! released models); dense ones use the `intermediate_size` MLP. HF names: `mlp.gate`,
//! `mlp.experts.{e}.{gate,up,down}_proj`. GGUF (`qwen3moe`): `ffn_gate_inp`,
//! `ffn_{gate,up,down}_exps`; a layer is sparse when its router is present; llama.cpp always
//! renormalises (`expert_weights_norm` is honoured when a file states it).

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::bind;
use crate::skeleton::block::{Block, FeedForward};
use crate::skeleton::moe::{self, HfExpertNames, RouterSpec};
use crate::skeleton::rope::RopeStyle;
use crate::weights::Binder;

const NAME: &str = "qwen3_moe";

pub static FAMILY: Family =
    Family { name: NAME, hf_model_types: &["qwen3_moe"], gguf_architectures: &["qwen3moe"], build };

const EXPERTS: HfExpertNames = HfExpertNames { block: "mlp", gate: "gate_proj", up: "up_proj", down: "down_proj" };

fn build(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    let (cfg, spec, ffn, sparse) = match src {
        Source::Hf(c) => {
            let moe = c
                .moe
                .as_ref()
                .ok_or_else(|| ModelError::config("num_experts", "missing: Qwen3-MoE is a mixture of experts"))?;
            let sparse: Vec<bool> = (0..c.num_hidden_layers).map(|l| c.is_moe_layer(l)).collect();
            (ModelConfig::from_hf(NAME, c)?, RouterSpec::from_hf(moe), moe.expert_intermediate_size, sparse)
        }
        Source::Gguf(meta) => {
            let cfg = ModelConfig::from_gguf(NAME, meta, w.tensors(), RopeStyle::RotateHalf)?;
            let sparse = (0..cfg.n_layers).map(|l| w.has(&format!("blk.{l}.ffn_gate_inp.weight"))).collect();
            let ffn = meta.req_usize("expert_feed_forward_length")?;
            (cfg, RouterSpec::from_gguf(meta, true)?, ffn, sparse)
        }
    };
    spec.validate()?;
    let h = cfg.hidden_size;
    let embedding = bind::embedding(w, &cfg);
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            let (q_norm, k_norm) = bind::qk_norms(w, &cfg, l);
            let ffn: Box<dyn FeedForward> = if sparse[l] {
                Box::new(moe::bind_routed(w, l, spec, EXPERTS, ffn, h, cfg.activation))
            } else {
                Box::new(bind::mlp(w, &cfg, l))
            };
            Block::pre_norm(
                bind::layer_norm(w, &cfg, l, "input_layernorm", "attn_norm", h),
                Box::new(bind::attention(w, &cfg, l).with_qk_norm(q_norm, k_norm)),
                bind::layer_norm(w, &cfg, l, "post_attention_layernorm", "ffn_norm", h),
                ffn,
            )
        })
        .collect();
    let final_norm = bind::final_norm(w, &cfg);
    let head = bind::head(w, &cfg, &embedding);
    Ok(ModelParts { config: cfg, embedding, blocks, final_norm, head })
}
