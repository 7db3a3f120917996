//! The engine's error type: every failure names what was wrong and the numbers involved.

/// An error from the model side of the [`crate::LanguageModel`] trait, boxed so that any
/// backend's own error type fits.
pub type ModelError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of sessions, samplers, perplexity and bench runs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A sampling or generation parameter is out of its range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter { name: &'static str, value: String, reason: &'static str },

    /// Generation needs at least one prompt token to have logits to sample from.
    #[error("the prompt is empty: generation needs at least one prompt token")]
    EmptyPrompt,

    /// The prompt does not fit into the context and truncation was not asked for.
    #[error(
        "the prompt has {prompt_tokens} tokens but the context holds {n_ctx}: \
         shorten the prompt, raise the context size, or truncate it from the left"
    )]
    PromptTooLong { prompt_tokens: usize, n_ctx: usize },

    /// A token id (from a prompt, a logit bias or a stop set) is not in the vocabulary.
    #[error("token id {id} at {what} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfRange { id: u32, vocab_size: usize, what: &'static str },

    /// The model returned a logits row of the wrong length.
    #[error("the model gave {got} logits where {expected} (rows x vocabulary) were expected")]
    LogitsLength { got: usize, expected: usize },

    /// Every logit is NaN or -inf (after biases and penalties): there is nothing to sample.
    #[error("every logit is NaN or -infinity after biases and penalties: nothing can be sampled")]
    NoFiniteLogits,

    /// The model's KV cache did not behave as its trait promises.
    #[error("the model's KV cache holds {got} positions where {expected} were expected")]
    CacheMismatch { got: usize, expected: usize },

    /// The model's forward pass failed.
    #[error("model forward pass failed at position {position}: {source}")]
    Model {
        position: usize,
        #[source]
        source: ModelError,
    },

    /// Perplexity needs at least two windows of text (llama-perplexity's rule).
    #[error(
        "perplexity with a context of {n_ctx} needs at least {needed} tokens; \
         the text has only {have}"
    )]
    NotEnoughTokens { have: usize, needed: usize, n_ctx: usize },

    /// A KL-divergence base model with another vocabulary than the model's.
    #[error("the base model has a vocabulary of {base} tokens, the model {model}: they cannot be compared")]
    VocabularyMismatch { model: usize, base: usize },

    /// A saved base log-probabilities file (llama-perplexity's `--kl-divergence-base`
    /// format) is unreadable, malformed, or does not fit the run.
    #[error("base log-probabilities file: {0}")]
    BaseFile(String),

    /// A perplexity window or a bench test does not fit into the model's context.
    #[error("{what} needs {needed} positions but the model's context holds {n_ctx}")]
    ContextTooSmall { what: String, needed: usize, n_ctx: usize },

    /// Every sequence slot is busy and the queue of waiting requests is full.
    #[error("the server is busy: all sequence slots are in use and {waiting} requests are already waiting")]
    QueueFull { waiting: usize },

    /// The engine is shutting down and takes no new requests.
    #[error("the server is shutting down and takes no new requests")]
    ShuttingDown,

    /// The run was stopped through its cancellation flag (perplexity, bench).
    #[error("cancelled")]
    Cancelled,
}

impl EngineError {
    pub(crate) fn invalid(name: &'static str, value: impl ToString, reason: &'static str) -> Self {
        EngineError::InvalidParameter { name, value: value.to_string(), reason }
    }
}
