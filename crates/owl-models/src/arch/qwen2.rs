//! Qwen2 / Qwen2.5: Llama with a bias on the q, k and v projections (not on o), RoPE
//! theta 1e6. GGUF files keep HF's rotate-half order (llama.cpp "NEOX"): no row permutation.

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::registry::{Family, Source};
use crate::skeleton::rope::RopeStyle;
use crate::weights::Binder;

use super::llama::pre_norm_decoder;

const NAME: &str = "qwen2";

pub static FAMILY: Family = Family { name: NAME, hf_model_types: &["qwen2"], gguf_architectures: &["qwen2"], build };

fn build(src: &Source<'_>, w: &mut Binder<'_>) -> Result<ModelParts, ModelError> {
    let mut cfg = match src {
        Source::Hf(c) => ModelConfig::from_hf(NAME, c)?,
        Source::Gguf(meta) => ModelConfig::from_gguf(NAME, meta, w.tensors(), RopeStyle::RotateHalf)?,
    };
    cfg.qkv_bias = true;
    Ok(pre_norm_decoder(cfg, w))
}
