//! Gemma 3 (text): Gemma 2's sandwich blocks with per-head q/k norms instead of
//! soft-capping, and two RoPEs: a local one (theta 1e4) on sliding layers and a global one
//! (theta 1e6, possibly linearly scaled) on the full-attention layers.
//!
//! ```text
//! q, k = rope_{local|global}( rms_norm_1p_per_head(x Wq), rms_norm_1p_per_head(x Wk) )
//! scores = q·k / sqrt(query_pre_attn_scalar); 5 of every 6 layers slide over `window` keys
//! ```
//!
//! GGUF files of Gemma 3 usually carry neither the layer pattern nor the local theta:
//! llama.cpp hard-codes them (`set_swa_pattern(6)`: layer l slides unless l % 6 == 5;
//! `rope_freq_base_train_swa` 1e4, unscaled) and scales attention by head_dim^-0.5, or
//! (hidden/heads)^-0.5 for 27B (62 layers). Where a file does state them
//! (`attention.sliding_window_pattern`, `rope.freq_base_swa`, `attention.scale`, keys
//! llama.cpp reads for other families) they win. Norm scales are stored as `w + 1`.

use crate::config::{LayerAttention, ModelConfig};
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::rope::{RopeScaling, RopeSpec, RopeStyle};
use crate::weights::Binder;
use owl_kernels::ops::activation::Activation;

use super::gemma::embed_scale;
use super::gemma2::sandwich_decoder;

const NAME: &str = "gemma3";

pub static FAMILY: Family =
    Family { name: NAME, hf_model_types: &["gemma3_text", "gemma3"], gguf_architectures: &["gemma3"], build };

/// llama.cpp's Gemma 3 constants (llama-model.cpp, `LLM_ARCH_GEMMA3`).
const GGUF_SWA_PATTERN: usize = 6;
const GGUF_LOCAL_THETA: f64 = 10_000.0;

fn config(src: &Source<'_>, w: &Binder<'_>) -> Result<ModelConfig, ModelError> {
    let mut cfg = match src {
        Source::Hf(c) => ModelConfig::from_hf(NAME, c)?,
        Source::Gguf(meta) => {
            let mut c = ModelConfig::from_gguf(NAME, meta, w.tensors(), RopeStyle::RotateHalf)?;
            c.activation = Activation::GeluTanh;
            let window = meta.req_usize("attention.sliding_window")?;
            let local_theta = meta.opt_f64("rope.freq_base_swa")?.unwrap_or(GGUF_LOCAL_THETA);
            let global = c.ropes[0].clone();
            c.ropes.push(RopeSpec { theta: local_theta, scaling: RopeScaling::None, ..global });
            let sliding = meta.sliding_layers(c.n_layers, GGUF_SWA_PATTERN)?;
            for (layer, slides) in c.layers.iter_mut().zip(sliding) {
                *layer = if slides {
                    LayerAttention { window: Some(window), rope: Some(1) }
                } else {
                    LayerAttention { window: None, rope: Some(0) }
                };
            }
            if meta.opt_f64("attention.scale")?.is_none() {
                let scalar = if c.n_layers == 62 { c.hidden_size / c.n_heads } else { c.head_dim };
                c.attn_scale = (scalar as f64).powf(-0.5) as f32;
            }
            c
        }
    };
    cfg.embed_scale = Some(embed_scale(cfg.hidden_size));
    Ok(cfg)
}

fn build(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    let cfg = config(src, w)?;
    w.gemma_norms();
    Ok(sandwich_decoder(cfg, w, true))
}
