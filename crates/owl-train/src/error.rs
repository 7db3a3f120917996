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
    /// Tensors that do not fit the base (the first few named, then how many more).
    #[error("{}: does not fit this base model: {}", path.display(), summary(problems))]
    Shapes { path: PathBuf, problems: Vec<String> },
    /// A `--lora` argument that does not parse.
    #[error("--lora {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
}

/// The first problems, then a count of the rest: one line however many there are.
fn summary(problems: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = problems.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    text
}

/// What can stop `owl merge`.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    #[error(transparent)]
    Write(#[from] owl_convert::ConvertError),
    #[error("the base model: {0}")]
    Base(String),
    #[error("no adapter to merge: give one or more --lora DIR[:SCALE]")]
    NoAdapter,
}

/// What can stop a training step.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A model or layer kind the backward pass does not cover yet.
    #[error("fine-tuning does not support {0} yet")]
    Unsupported(String),
    #[error("{0}")]
    Data(String),
    /// Boxed: the model's error is large and a training step returns often.
    #[error(transparent)]
    Model(Box<owl_models::ModelError>),
}

impl From<owl_models::ModelError> for TrainError {
    fn from(e: owl_models::ModelError) -> Self {
        TrainError::Model(Box::new(e))
    }
}
