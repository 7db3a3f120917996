//! Qwen3 (dense): Llama with per-head RMSNorm on queries and keys before RoPE, no biases.
//!
//! ```text
//! q, k = rms_norm_per_head(x Wq), rms_norm_per_head(x Wk);  q, k = rope(q), rope(k)
//! ```

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::bind;
use crate::skeleton::block::Block;
use crate::skeleton::rope::RopeStyle;
use crate::weights::Binder;

const NAME: &str = "qwen3";

pub static FAMILY: Family = Family { name: NAME, hf_model_types: &["qwen3"], gguf_architectures: &["qwen3"], build };

fn build(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    let cfg = match src {
        Source::Hf(c) => ModelConfig::from_hf(NAME, c)?,
        Source::Gguf(meta) => ModelConfig::from_gguf(NAME, meta, w.tensors(), RopeStyle::RotateHalf)?,
    };
    let h = cfg.hidden_size;
    let embedding = bind::embedding(w, &cfg);
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            let (q_norm, k_norm) = bind::qk_norms(w, &cfg, l);
            Block::pre_norm(
                bind::layer_norm(w, &cfg, l, "input_layernorm", "attn_norm", h),
                Box::new(bind::attention(w, &cfg, l).with_qk_norm(q_norm, k_norm)),
                bind::layer_norm(w, &cfg, l, "post_attention_layernorm", "ffn_norm", h),
                Box::new(bind::mlp(w, &cfg, l)),
            )
        })
        .collect();
    let final_norm = bind::final_norm(w, &cfg);
    let head = bind::head(w, &cfg, &embedding);
    Ok(ModelParts { config: cfg, embedding, blocks, final_norm, head })
}
