//! Gemma (v1): Llama's pre-norm blocks with Gemma's conventions.
//!
//! ```text
//! x  = embed(tokens) * sqrt(hidden)
//! x += attention(rms_norm_1p(x))         rms_norm_1p: x_hat * (1 + w); MQA on 2B
//! x += geglu_mlp(rms_norm_1p(x))         down(gelu_tanh(gate(x)) * up(x))
//! logits = rms_norm_1p(x) E^T            tied embeddings
//! ```
//!
//! GGUF: llama.cpp's converter stores the norm scales as `w + 1` already; rotate-half order.

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::rope::RopeStyle;
use crate::weights::Binder;
use owl_kernels::ops::activation::Activation;

use super::llama::pre_norm_decoder;

const NAME: &str = "gemma";

pub static FAMILY: Family = Family { name: NAME, hf_model_types: &["gemma"], gguf_architectures: &["gemma"], build };

/// sqrt(hidden) as the activation dtype holds it (f32 here).
pub(crate) fn embed_scale(hidden: usize) -> f32 {
    (hidden as f64).sqrt() as f32
}

fn build(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    let mut cfg = match src {
        Source::Hf(c) => ModelConfig::from_hf(NAME, c)?,
        Source::Gguf(meta) => {
            let mut c = ModelConfig::from_gguf(NAME, meta, w.tensors(), RopeStyle::RotateHalf)?;
            c.activation = Activation::GeluTanh;
            c
        }
    };
    cfg.embed_scale = Some(embed_scale(cfg.hidden_size));
    w.gemma_norms();
    Ok(pre_norm_decoder(cfg, w))
}
