//! The families owl runs: one table from architecture names to the family's loader.
//! A new family is one file in `arch/` and one line in [`FAMILIES`].

use owl_formats::hf_config::HfConfig;

use crate::arch;
use crate::config::GgufMeta;
use crate::error::ModelError;
use crate::model::ModelParts;
use crate::weights::Binder;

/// The configuration a family reads, by file kind.
pub enum Source<'a> {
    Hf(&'a HfConfig),
    Gguf(&'a GgufMeta<'a>),
}

/// A family: the names it answers to and how it builds a model from a file.
pub struct Family {
    pub name: &'static str,
    /// Hugging Face `model_type` values.
    pub hf_model_types: &'static [&'static str],
    /// GGUF `general.architecture` values.
    pub gguf_architectures: &'static [&'static str],
    /// Reads the config, binds the weights, returns the parts. Tensors it does not bind and
    /// does not `ignore` are reported as unexpected after it returns.
    pub build: fn(&Source<'_>, &mut Binder<'_>) -> Result<ModelParts, ModelError>,
}

/// Every family, one line each.
pub static FAMILIES: &[&Family] = &[
    &arch::llama::FAMILY,
    &arch::qwen2::FAMILY,
    &arch::qwen3::FAMILY,
    &arch::phi3::FAMILY,
    &arch::gemma::FAMILY,
    &arch::gemma2::FAMILY,
    &arch::gemma3::FAMILY,
    &arch::mixtral::FAMILY,
    &arch::qwen3_moe::FAMILY,
    &arch::deepseek::FAMILY,
];

fn supported(names: impl Fn(&Family) -> &'static [&'static str]) -> String {
    FAMILIES.iter().flat_map(|f| names(f).iter().copied()).collect::<Vec<_>>().join(", ")
}

/// The family for a Hugging Face `model_type`.
pub fn for_hf_model_type(model_type: &str) -> Result<&'static Family, ModelError> {
    FAMILIES.iter().copied().find(|f| f.hf_model_types.contains(&model_type)).ok_or_else(|| {
        ModelError::UnsupportedArchitecture {
            name: model_type.to_string(),
            origin: "config.json model_type",
            supported: supported(|f| f.hf_model_types),
        }
    })
}

/// The family for a GGUF `general.architecture`.
pub fn for_gguf_architecture(arch: &str) -> Result<&'static Family, ModelError> {
    FAMILIES.iter().copied().find(|f| f.gguf_architectures.contains(&arch)).ok_or_else(|| {
        ModelError::UnsupportedArchitecture {
            name: arch.to_string(),
            origin: "GGUF general.architecture",
            supported: supported(|f| f.gguf_architectures),
        }
    })
}
