//! Perplexity with llama-perplexity's scheme (llama.cpp tools/perplexity/perplexity.cpp,
//! `perplexity()` with the default stride), so numbers compare with llama.cpp's:
//!
//! - the text is tokenized with the model's special tokens (BOS first where the model adds
//!   one) and needs at least `2 * n_ctx` tokens;
//! - it is cut into `tokens / n_ctx` windows of `n_ctx` tokens (the tail is dropped); each
//!   window runs from an empty KV cache with its first token replaced by BOS when the model
//!   adds BOS;
//! - only the second half is scored: with `first = n_ctx / 2`, the logits at positions
//!   `first ..= n_ctx - 2` predict the tokens at `first + 1 ..= n_ctx - 1`, i.e.
//!   `n_ctx - 1 - first` tokens per window, so every scored token has at least half a
//!   window of context;
//! - `nll = logsumexp(logits) - logit[target]`, summed in f64; `ppl = exp(mean nll)`, with
//!   llama's uncertainty estimate `ppl * sqrt((mean(nll²) - mean²) / (count - 1))`.
//!
//! Logits are requested only for the scored half, in batches small enough that a batch's
//! logits stay under [`LOGITS_BUDGET`] floats (a 262k vocabulary would otherwise need
//! 268 MB for a 512-token window).

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::EngineError;
use crate::logprobs::LogSoftmax;
use crate::model::LanguageModel;

/// At most this many logits (f32) are held at once: 32 Mi floats = 128 MiB.
pub const LOGITS_BUDGET: usize = 32 << 20;

/// How to run a perplexity measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerplexityParams {
    /// Window size (`--ctx`, llama's `-c`); at most the model's context.
    pub n_ctx: usize,
    /// The BOS id when the model adds BOS (`tokenizer.ggml.add_bos_token`): each window's
    /// first token is replaced by it.
    pub bos: Option<u32>,
    /// Tokens per forward call.
    pub n_batch: usize,
    /// Score at most this many windows (`--chunks`); `None`: all.
    pub max_chunks: Option<usize>,
}

impl PerplexityParams {
    pub fn new(n_ctx: usize, bos: Option<u32>) -> Self {
        PerplexityParams { n_ctx, bos, n_batch: 512, max_chunks: None }
    }
}

/// The result (JSON: `{"ppl":..,"chunks":..,"tokens":..}` plus details).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Perplexity {
    pub ppl: f64,
    /// Windows evaluated.
    pub chunks: usize,
    /// Tokens scored (`chunks * (n_ctx - 1 - n_ctx / 2)`).
    pub tokens: usize,
    /// Mean negative log-likelihood per scored token (nats).
    pub nll: f64,
    /// llama-perplexity's "+/-" estimate of the ppl's standard error.
    pub ppl_stderr: f64,
    /// Tokens in the input (after tokenization).
    pub input_tokens: usize,
    pub n_ctx: usize,
}

/// Running state, reported after each window (llama prints `[i]ppl,` lines from it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerplexityProgress {
    pub chunk: usize,
    pub chunks: usize,
    pub ppl: f64,
}

/// Measures perplexity of `model` over `tokens` (see the module doc for the scheme).
/// `on_chunk` sees the running value after each window; `cancel` is polled between
/// forward calls.
pub fn perplexity<M: LanguageModel + ?Sized>(
    model: &mut M,
    tokens: &[u32],
    params: &PerplexityParams,
    cancel: &AtomicBool,
    on_chunk: impl FnMut(PerplexityProgress),
) -> Result<Perplexity, EngineError> {
    perplexity_with_rows(model, tokens, params, cancel, on_chunk, |_| Ok(()))
}

/// [`perplexity()`], handing `on_row` the logits of every scored position in order (what
/// a [`crate::BaseLogProbsWriter`] saves).
pub fn perplexity_with_rows<M: LanguageModel + ?Sized>(
    model: &mut M,
    tokens: &[u32],
    params: &PerplexityParams,
    cancel: &AtomicBool,
    mut on_chunk: impl FnMut(PerplexityProgress),
    mut on_row: impl FnMut(&[f32]) -> Result<(), EngineError>,
) -> Result<Perplexity, EngineError> {
    check_window(model, tokens, params)?;
    let n_ctx = params.n_ctx;
    let vocab = model.vocab_size();
    let n_chunks = (tokens.len() / n_ctx).min(params.max_chunks.unwrap_or(usize::MAX));
    let rows_per_batch = (LOGITS_BUDGET / vocab.max(1)).clamp(1, params.n_batch);
    let mut logits = vec![0.0f32; rows_per_batch * vocab];
    let mut window = vec![0u32; n_ctx];

    let mut count = 0usize;
    let mut nll = 0.0f64;
    let mut nll2 = 0.0f64;
    for chunk in 0..n_chunks {
        let start = chunk * n_ctx;
        window.copy_from_slice(&tokens[start..start + n_ctx]);
        if let Some(bos) = params.bos {
            window[0] = bos;
        }
        if model.kv_truncate(0) != 0 || model.kv_len() != 0 {
            return Err(EngineError::CacheMismatch { got: model.kv_len(), expected: 0 });
        }
        run_window(model, &window, params.n_batch, &mut logits, cancel, |pos, rows| {
            for (row, &target) in rows.chunks_exact(vocab).zip(&window[pos + 1..]) {
                on_row(row)?;
                let v = -LogSoftmax::of(row).logprob(row[target as usize]);
                nll += v;
                nll2 += v * v;
                count += 1;
            }
            Ok(())
        })?;
        on_chunk(PerplexityProgress { chunk: chunk + 1, chunks: n_chunks, ppl: (nll / count as f64).exp() });
    }
    model.kv_truncate(0);

    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let ppl_stderr = if var > 0.0 && count > 1 { (var / (count - 1) as f64).sqrt() * ppl } else { 0.0 };
    Ok(Perplexity { ppl, chunks: n_chunks, tokens: count, nll: mean, ppl_stderr, input_tokens: tokens.len(), n_ctx })
}

/// The checks every windowed measurement makes before running anything.
pub(crate) fn check_window<M: LanguageModel + ?Sized>(
    model: &M,
    tokens: &[u32],
    params: &PerplexityParams,
) -> Result<(), EngineError> {
    let n_ctx = params.n_ctx;
    let vocab = model.vocab_size();
    if n_ctx < 3 {
        return Err(EngineError::invalid("ctx", n_ctx, "must be at least 3 (half a window is scored)"));
    }
    check_batch_and_context(model, n_ctx, params)?;
    if tokens.len() < 2 * n_ctx {
        return Err(EngineError::NotEnoughTokens { have: tokens.len(), needed: 2 * n_ctx, n_ctx });
    }
    for (what, id) in tokens.iter().map(|&t| ("input", t)).chain(params.bos.map(|b| ("bos", b))) {
        if id as usize >= vocab {
            return Err(EngineError::TokenOutOfRange { id, vocab_size: vocab, what });
        }
    }

    Ok(())
}

/// `n_batch` is at least 1 and a window of `n_ctx` tokens fits the model's context.
pub(crate) fn check_batch_and_context<M: LanguageModel + ?Sized>(
    model: &M,
    n_ctx: usize,
    params: &PerplexityParams,
) -> Result<(), EngineError> {
    if params.n_batch == 0 {
        return Err(EngineError::invalid("n_batch", 0, "must be at least 1"));
    }
    if n_ctx > model.context_size() {
        return Err(EngineError::ContextTooSmall {
            what: format!("a perplexity window of {n_ctx} tokens"),
            needed: n_ctx,
            n_ctx: model.context_size(),
        });
    }
    Ok(())
}

/// One window through `model` from an empty cache: the first half unscored (no logits),
/// then the scored half in batches of at most `logits.len() / vocab` positions. Each batch
/// hands `on_batch` its first position and the logits of its positions that predict a
/// token inside the window (the window's last position predicts beyond it).
pub(crate) fn run_window<M: LanguageModel + ?Sized>(
    model: &mut M,
    window: &[u32],
    n_batch: usize,
    logits: &mut [f32],
    cancel: &AtomicBool,
    mut on_batch: impl FnMut(usize, &[f32]) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let (n_ctx, vocab) = (window.len(), model.vocab_size());
    let rows_per_batch = logits.len() / vocab.max(1);
    for piece in window[..n_ctx / 2].chunks(n_batch) {
        run(model, piece, piece.len(), &mut [], cancel)?;
    }
    let mut pos = n_ctx / 2;
    while pos < n_ctx {
        let n = rows_per_batch.min(n_ctx - pos);
        let out = &mut logits[..n * vocab];
        run(model, &window[pos..pos + n], 0, out, cancel)?;
        on_batch(pos, &out[..n.min(n_ctx - 1 - pos) * vocab])?;
        pos += n;
    }
    Ok(())
}

pub(crate) fn run<M: LanguageModel + ?Sized>(
    model: &mut M,
    tokens: &[u32],
    first_output: usize,
    logits: &mut [f32],
    cancel: &AtomicBool,
) -> Result<(), EngineError> {
    if cancel.load(Ordering::Relaxed) {
        model.kv_truncate(0);
        return Err(EngineError::Cancelled);
    }
    let position = model.kv_len();
    model.forward(tokens, first_output, logits).map_err(|source| {
        model.kv_truncate(0);
        EngineError::Model { position, source }
    })
}
