//! What can go wrong converting or quantizing, each naming the file, key or tensor at fault.

use std::path::PathBuf;

use owl_formats::gguf::GgufError;
use owl_formats::hf_config::HfConfigError;
use owl_formats::safetensors::SafetensorsError;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] HfConfigError),
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{what} is not supported by the converter{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Unsupported { what: String, hint: Option<String> },
    #[error("config.json: {field}: {reason}")]
    ConfigField { field: String, reason: String },
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    #[error("the checkpoint has tensors the converter does not know for {arch}: {}", names.join(", "))]
    UnknownTensors { arch: &'static str, names: Vec<String> },
    #[error("the checkpoint lacks tensors {arch} needs: {}", names.join(", "))]
    MissingTensors { arch: &'static str, names: Vec<String> },
    #[error("tokenizer ({}): {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error("importance matrix {}: {reason}", path.display())]
    Imatrix { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl ConvertError {
    pub(crate) fn tensor(name: impl Into<String>, reason: impl Into<String>) -> Self {
        ConvertError::Tensor { name: name.into(), reason: reason.into() }
    }

    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConvertError::ConfigField { field: field.into(), reason: reason.into() }
    }
}
