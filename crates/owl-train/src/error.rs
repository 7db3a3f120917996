//! What can go wrong with an adapter: its files, its format, or its fit to the base.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    /// The file is not what its format says.
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// A valid adapter of a kind owl does not apply.
    #[error("{}: {what} is not supported{}", path.display(), hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Unsupported { path: PathBuf, what: String, hint: Option<String> },
    /// The adapter was made for another base model.
    #[error("{}: made for another base model: {reason}", path.display())]
    Lineage { path: PathBuf, reason: String },
    /// Tensors that do not fit the base: each problem on its own line.
    #[error("{}: does not fit this base model:\n  {}", path.display(), problems.join("\n  "))]
    Shapes { path: PathBuf, problems: Vec<String> },
    /// A `--lora` argument that does not parse.
    #[error("--lora {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
}
