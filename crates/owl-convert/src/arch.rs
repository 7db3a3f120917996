//! The architectures the converter writes, by Hugging Face `model_type`, and the GGUF
//! `general.architecture` llama.cpp gives each (convert_hf_to_gguf.py's `@ModelBase.register`
//! table at llama.cpp 0c1e570).

use crate::error::ConvertError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama, Mistral and Mixtral: one GGUF architecture, experts when the config has them.
    Llama,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Phi3,
    Gemma,
    Gemma2,
    Gemma3,
    /// DeepSeek V2 and V3 (multi-head latent attention).
    Deepseek2,
}

/// (HF `model_type`, architecture).
const BY_MODEL_TYPE: &[(&str, Arch)] = &[
    ("llama", Arch::Llama),
    ("mistral", Arch::Llama),
    ("mixtral", Arch::Llama),
    ("qwen2", Arch::Qwen2),
    ("qwen3", Arch::Qwen3),
    ("qwen3_moe", Arch::Qwen3Moe),
    ("phi3", Arch::Phi3),
    ("gemma", Arch::Gemma),
    ("gemma2", Arch::Gemma2),
    ("gemma3", Arch::Gemma3),
    ("gemma3_text", Arch::Gemma3),
    ("deepseek_v2", Arch::Deepseek2),
    ("deepseek_v3", Arch::Deepseek2),
];

impl Arch {
    pub fn from_model_type(model_type: &str) -> Result<Arch, ConvertError> {
        BY_MODEL_TYPE.iter().find(|(t, _)| *t == model_type).map(|(_, a)| *a).ok_or_else(|| ConvertError::Unsupported {
            what: format!("model_type {model_type:?}"),
            hint: Some(format!("supported: {}", BY_MODEL_TYPE.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", "))),
        })
    }

    /// The architecture of a GGUF `general.architecture` (`None`: not one the converter
    /// writes).
    pub fn from_gguf_name(name: &str) -> Option<Arch> {
        BY_MODEL_TYPE.iter().map(|(_, a)| *a).find(|a| a.gguf_name() == name)
    }

    /// `general.architecture`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Phi3 => "phi3",
            Arch::Gemma => "gemma",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
            Arch::Deepseek2 => "deepseek2",
        }
    }

    /// Gemma stores RMSNorm scales as `w` for `x̂·(1 + w)`; llama.cpp's graph multiplies by
    /// the stored value, so its converter writes `w + 1` (GemmaModel.modify_tensors).
    pub fn norms_offset_by_one(self) -> bool {
        matches!(self, Arch::Gemma | Arch::Gemma2 | Arch::Gemma3)
    }

    /// llama.cpp runs llama-architecture RoPE on adjacent pairs ("NORM" mode), so its
    /// converter reorders each head's q/k rows from HF's rotate-half order
    /// (LlamaModel.permute); the other families run rotate-half ("NEOX") and keep the rows.
    pub fn permutes_rope_rows(self) -> bool {
        matches!(self, Arch::Llama)
    }
}
