//! Error types: one for building and running tokenizers, one for chat templates.

use std::path::PathBuf;

/// Building a tokenizer from a vocabulary, or encoding/decoding with it.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A GGUF metadata key the tokenizer needs is absent.
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey { key: &'static str },
    /// A GGUF metadata key has the wrong type or an unusable value.
    #[error("GGUF metadata key `{key}`: {problem}")]
    BadKey { key: &'static str, problem: String },
    /// `tokenizer.ggml.model` names a tokenizer family owl does not build.
    #[error("tokenizer model `{0}` is not supported (supported: gpt2, llama)")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer owl has no split rules for.
    #[error("pre-tokenizer `{0}` is not supported; known: {known}", known = crate::pretokenize::known_names().join(", "))]
    UnsupportedPreTokenizer(String),
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    IdOutOfRange { id: u32, vocab_size: usize },
    /// A merge names a token that is not in the vocabulary.
    #[error("merge #{index} `{merge}`: {problem}")]
    BadMerge { index: usize, merge: String, problem: String },
    /// Reading a file of an HF tokenizer directory failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// An HF tokenizer file is malformed.
    #[error("{path}: {problem}")]
    BadFile { path: PathBuf, problem: String },
    /// The `tokenizers` engine rejected the vocabulary or failed on the input.
    #[error("tokenizer engine: {0}")]
    Engine(String),
}

impl TokenizerError {
    pub(crate) fn engine(e: impl std::fmt::Display) -> Self {
        TokenizerError::Engine(e.to_string())
    }
}

/// Compiling or rendering a chat template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// The template does not parse (Jinja syntax error), with line information.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// Rendering failed: a `raise_exception` call from the template, an undefined
    /// attribute, a type error, or an exhausted instruction budget.
    #[error("chat template failed: {0}")]
    Render(String),
    /// The template reaches for what a chat template never needs (Python internals).
    #[error("chat template refused: {0}")]
    Unsafe(String),
    /// The rendered prompt grew past the output limit.
    #[error("chat template output exceeds {limit} bytes")]
    OutputTooLarge { limit: usize },
    /// A message cannot be handed to a template (e.g. an image part to a text template).
    #[error("chat message {index}: {problem}")]
    BadMessage { index: usize, problem: String },
}
