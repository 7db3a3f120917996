//! Mixtral 8x7B / 8x22B: Mistral's attention with every feed-forward a sparse mixture of
//! experts.
//!
//! ```text
//! x += attention(rms_norm(x))                  GQA, RoPE, sliding window if configured
//! x += Σ_top2 w_e · swiglu_e(rms_norm(x))      router softmax over all experts (f32),
//!                                              top-2, the two weights renormalised
//! ```
//!
//! Hugging Face names: `block_sparse_moe.gate` (router) and
//! `block_sparse_moe.experts.{e}.w1/w3/w2` (gate/up/down). GGUF Mixtral files are
//! `general.architecture = "llama"` with `{arch}.expert_count` set; the llama family hands
//! them to [`build_gguf`]: q/k rows permuted for adjacent-pair RoPE like every llama GGUF,
//! router `ffn_gate_inp`, experts stacked in `ffn_{gate,up,down}_exps` (or the legacy
//! per-expert `ffn_{gate,up,down}.{e}`).

use crate::config::{GgufMeta, ModelConfig};
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::bind;
use crate::skeleton::block::Block;
use crate::skeleton::moe::{self, HfExpertNames, RouterSpec};
use crate::skeleton::rope::RopeStyle;
use crate::weights::Binder;

const NAME: &str = "mixtral";

/// GGUF Mixtral is served through the llama family's architecture name (see above).
pub static FAMILY: Family = Family { name: NAME, hf_model_types: &["mixtral"], gguf_architectures: &[], build };

const EXPERTS: HfExpertNames = HfExpertNames { block: "block_sparse_moe", gate: "w1", up: "w3", down: "w2" };

fn build(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    match src {
        Source::Hf(c) => {
            let moe = c
                .moe
                .as_ref()
                .ok_or_else(|| ModelError::config("num_local_experts", "missing: Mixtral is a mixture of experts"))?;
            let cfg = ModelConfig::from_hf(NAME, c)?;
            let spec = RouterSpec::from_hf(moe);
            spec.validate()?;
            Ok(decoder(cfg, spec, moe.expert_intermediate_size, w))
        }
        Source::Gguf(meta) => build_gguf(meta, w),
    }
}

/// A llama-architecture GGUF with experts.
pub(crate) fn build_gguf(meta: &GgufMeta<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    let cfg = ModelConfig::from_gguf(NAME, meta, w.tensors(), RopeStyle::AdjacentPairs)?;
    let spec = RouterSpec::from_gguf(meta, true)?;
    let ffn = meta.opt_usize("expert_feed_forward_length")?.unwrap_or(cfg.ffn_dim);
    Ok(decoder(cfg, spec, ffn, w))
}

fn decoder(cfg: ModelConfig, spec: RouterSpec, ffn: usize, w: &mut Binder<'_>) -> ModelParts {
    let h = cfg.hidden_size;
    let embedding = bind::embedding(w, &cfg);
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            Block::pre_norm(
                bind::layer_norm(w, &cfg, l, "input_layernorm", "attn_norm", h),
                Box::new(bind::attention(w, &cfg, l)),
                bind::layer_norm(w, &cfg, l, "post_attention_layernorm", "ffn_norm", h),
                Box::new(moe::bind_routed(w, l, spec, EXPERTS, ffn, h, cfg.activation)),
            )
        })
        .collect();
    let final_norm = bind::final_norm(w, &cfg);
    let head = bind::head(w, &cfg, &embedding);
    ModelParts { config: cfg, embedding, blocks, final_norm, head }
}
