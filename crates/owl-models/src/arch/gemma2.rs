//! Gemma 2: Gemma with sandwich norms, soft-capping and alternating local/global layers.
//!
//! ```text
//! x  = embed(tokens) * sqrt(hidden)
//! x += post_norm(attention(pre_norm(x)))     scores: cap_a * tanh(q·k / sqrt(qpas) / cap_a)
//! x += post_norm(geglu_mlp(pre_norm(x)))     layers 0, 2, 4, ... slide over `window` keys
//! logits = cap_f * tanh(rms_norm(x) E^T / cap_f)
//! ```
//! All norms are `x_hat * (1 + w)` (GGUF stores `w + 1`).

use crate::config::{LayerAttention, ModelConfig};
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::bind;
use crate::skeleton::block::Block;
use crate::skeleton::rope::RopeStyle;
use crate::weights::Binder;
use owl_kernels::ops::activation::Activation;

use super::gemma::embed_scale;

const NAME: &str = "gemma2";

pub static FAMILY: Family = Family { name: NAME, hf_model_types: &["gemma2"], gguf_architectures: &["gemma2"], build };

fn config(src: &Source<'_>, w: &Binder<'_>) -> Result<ModelConfig, ModelError> {
    let mut cfg = match src {
        Source::Hf(c) => ModelConfig::from_hf(NAME, c)?,
        Source::Gguf(meta) => {
            let mut c = ModelConfig::from_gguf(NAME, meta, w.tensors(), RopeStyle::RotateHalf)?;
            c.activation = Activation::GeluTanh;
            // llama.cpp defaults (llama-hparams.h) and its gemma2 hparams: window 4096 when
            // absent, even layers slide (period 2), 27B (46 layers) scales by
            // (hidden/heads)^-0.5 unless `attention.scale` says otherwise.
            c.attn_softcap = Some(meta.opt_f64("attn_logit_softcapping")?.unwrap_or(50.0) as f32);
            c.final_softcap = Some(meta.opt_f64("final_logit_softcapping")?.unwrap_or(30.0) as f32);
            let window = meta.opt_usize("attention.sliding_window")?.unwrap_or(4096);
            let sliding = meta.sliding_layers(c.n_layers, 2)?;
            for (layer, slides) in c.layers.iter_mut().zip(sliding) {
                *layer = LayerAttention { window: slides.then_some(window), rope: Some(0) };
            }
            if meta.opt_f64("attention.scale")?.is_none() {
                let scalar = if c.n_layers == 46 { c.hidden_size / c.n_heads } else { c.head_dim };
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
    Ok(sandwich_decoder(cfg, w, false))
}

/// Gemma 2/3's model: sandwich-normed blocks (with per-head q/k norms when `qk_norm`).
pub(crate) fn sandwich_decoder(cfg: ModelConfig, w: &mut Binder<'_>, qk_norm: bool) -> ModelParts {
    let h = cfg.hidden_size;
    let embedding = bind::embedding(w, &cfg);
    let blocks = (0..cfg.n_layers)
        .map(|l| {
            let mut attention = bind::attention(w, &cfg, l);
            if qk_norm {
                let (q_norm, k_norm) = bind::qk_norms(w, &cfg, l);
                attention = attention.with_qk_norm(q_norm, k_norm);
            }
            Block::sandwich(
                bind::layer_norm(w, &cfg, l, "input_layernorm", "attn_norm", h),
                Box::new(attention),
                bind::layer_norm(w, &cfg, l, "post_attention_layernorm", "post_attention_norm", h),
                bind::layer_norm(w, &cfg, l, "pre_feedforward_layernorm", "ffn_norm", h),
                Box::new(bind::mlp(w, &cfg, l)),
                bind::layer_norm(w, &cfg, l, "post_feedforward_layernorm", "post_ffw_norm", h),
            )
        })
        .collect();
    let final_norm = bind::final_norm(w, &cfg);
    let head = bind::head(w, &cfg, &embedding);
    ModelParts { config: cfg, embedding, blocks, final_norm, head }
}
