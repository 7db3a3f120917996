//! Llama 1/2/3.x and the models that are Llama with other hyperparameters: Mistral (a
//! sliding window on every layer), SmolLM (tied embeddings), TinyLlama, ...
//!
//! ```text
//! x += attention(rms_norm(x))        GQA, RoPE (plain / linear / llama3 / yarn), window?
//! x += swiglu_mlp(rms_norm(x))       down(silu(gate(x)) * up(x))
//! ```
//!
//! GGUF: llama.cpp's converter permutes the q/k rows of each head so that RoPE rotates
//! adjacent pairs (its "NORM" mode); rotating adjacent pairs of the stored rows is exactly
//! HF's rotate-half on the original rows (q·k is unchanged by the shared permutation), so the
//! quantized rows are used as stored. Llama 3.1+ files carry the frequency divisors as the
//! tensor `rope_freqs.weight` instead of `rope.scaling.*` keys.

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::bind;
use crate::skeleton::block::Block;
use crate::skeleton::rope::{RopeScaling, RopeStyle};
use crate::weights::Binder;

const NAME: &str = "llama";

pub static FAMILY: Family =
    Family { name: NAME, hf_model_types: &["llama", "mistral"], gguf_architectures: &["llama"], build };

fn config(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelConfig, ModelError> {
    match src {
        Source::Hf(c) => ModelConfig::from_hf(NAME, c),
        Source::Gguf(meta) => {
            let mut cfg = ModelConfig::from_gguf(NAME, meta, w.tensors(), RopeStyle::AdjacentPairs)?;
            let half = cfg.ropes[0].rot_dims / 2;
            if let Some(f) = w.optional_vector("rope_freqs.weight", half) {
                let factors = f.iter().map(|&v| v as f64).collect();
                cfg.ropes[0].scaling = RopeScaling::FreqFactors { factors, attention_factor: 1.0 };
            }
            Ok(cfg)
        }
    }
}

fn build(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    // Mixtral GGUFs are llama-architecture files with experts.
    if let Source::Gguf(meta) = src {
        if meta.opt_usize("expert_count")?.unwrap_or(0) > 0 {
            return super::mixtral::build_gguf(meta, w);
        }
    }
    let cfg = config(src, w)?;
    Ok(pre_norm_decoder(cfg, w))
}

/// Embedding, pre-norm blocks of standard attention + gated MLP, final norm, head: the
/// whole Llama model (Qwen2 reuses it; its biases are config).
pub(crate) fn pre_norm_decoder(cfg: ModelConfig, w: &mut Binder<'_>) -> ModelParts {
    let h = cfg.hidden_size;
    let embedding = bind::embedding(w, &cfg);
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            Block::pre_norm(
                bind::layer_norm(w, &cfg, l, "input_layernorm", "attn_norm", h),
                Box::new(bind::attention(w, &cfg, l)),
                bind::layer_norm(w, &cfg, l, "post_attention_layernorm", "ffn_norm", h),
                Box::new(bind::mlp(w, &cfg, l)),
            )
        })
        .collect();
    let final_norm = bind::final_norm(w, &cfg);
    let head = bind::head(w, &cfg, &embedding);
    ModelParts { config: cfg, embedding, blocks, final_norm, head }
}
