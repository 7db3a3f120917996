//! A generation session: one model with its KV cache, generating one request at a time
//! through a one-slot [`Scheduler`] (the engine path of every request) and a [`TextStream`].
//!
//! [`Session::generate`] does, in order:
//!
//! 1. fit the prompt into the context ([`ContextOverflow`]: error, or drop the oldest
//!    tokens after a kept prefix such as BOS);
//! 2. reuse the KV cache: keep the longest common prefix of the new prompt with the cached
//!    tokens (at most `prompt.len() - 2`, so the rest runs as one piece; see the scheduler's
//!    batch invariance), prefill only the new suffix, in chunks of `n_batch` tokens;
//! 3. decode: logprobs (optional) → sample → EOG? → detokenize → stop strings → emit
//!    [`Event::Token`] and [`Event::Text`] → forward the token; until an EOG token, a stop
//!    string, the token limit, a full context, the cancellation flag or the callback's
//!    `Break`.
//!
//! The last sampled token is not run through the model (its logits are never needed), so
//! after a reply the cache holds the prompt and all generated tokens but the last; the
//! next turn's prompt, rendered through the chat template, shares most of that prefix.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use owl_models::LoraSet;
use serde::{Deserialize, Serialize};

use crate::batch_model::OneSlot;
use crate::error::EngineError;
use crate::grammar::Constraint;
use crate::logprobs::TokenLogprob;
use crate::model::{LanguageModel, TextDecoder};
use crate::sampler::SamplingParams;
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerEvent, SeqOutcome, SeqRequest, Verdict};
use crate::stop::{EogSet, StopReason};
use crate::text_stream::TextStream;

/// Session-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Prompt tokens per forward call during prefill (llama.cpp's `n_batch`/`n_ubatch`).
    pub n_batch: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { n_batch: 512 }
    }
}

/// What to do with a prompt that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextOverflow {
    /// A prompt longer than the context is an error ([`EngineError::PromptTooLong`]).
    #[default]
    Error,
    /// Keep the first `keep_first` tokens (e.g. 1 for BOS) and drop the oldest of the
    /// rest, so that the prompt leaves room for `min(max_tokens, n_ctx / 2)` new tokens
    /// (at least 1; `n_ctx / 2` when there is no token limit).
    TruncateLeft { keep_first: usize },
}

/// Everything one request asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    /// `None`: until EOG, a stop string or the end of the context.
    pub max_tokens: Option<usize>,
    /// Stop strings, matched across token boundaries, never part of the output.
    pub stop: Vec<String>,
    /// End-of-generation token ids (from the model's metadata); never part of the output.
    pub eog: EogSet,
    /// Compute the chosen token's log-probability.
    pub logprobs: bool,
    /// Also list this many most likely tokens per step (implies `logprobs`).
    pub top_logprobs: usize,
    pub overflow: ContextOverflow,
    /// A grammar the output must follow ([`crate::GrammarCompiler::compile`]): each
    /// token is sampled among those that keep the output in it.
    pub grammar: Option<Constraint>,
    /// LoRA adapters the sequence runs with (`None`: the base model). Cached prefixes are
    /// only reused between requests with the same adapters.
    pub lora: Option<Arc<LoraSet>>,
}

/// One generated token, as streamed (JSON: `{"id","text","logprob","top"}`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct TokenEvent {
    pub id: u32,
    /// The text this token completed (valid UTF-8; empty while a multi-byte character is
    /// still incomplete). This is the raw piece: a stop string is cut from the visible
    /// text ([`Event::Text`]), not from here.
    pub text: String,
    /// The raw bytes the token adds to the output (OpenAI's logprobs `bytes`): all of them
    /// at once, also when the token ends inside a character and `text` is still empty.
    pub bytes: Vec<u8>,
    /// Log-probability of the token under the model's full softmax at temperature 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprob: Option<f32>,
    /// The `top_logprobs` most likely tokens, logprob descending, ties by lower id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TokenLogprob>,
}

/// What the generation callback receives.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A token was generated (EOG tokens are not reported).
    Token(&'a TokenEvent),
    /// Visible text became final: print or send exactly these pieces. Their concatenation
    /// is [`Generation::text`]: without stop strings and held-back partial matches.
    Text(&'a str),
}

/// Where the time went (JSON: the `timings` object of `owl generate --json`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Timings {
    /// Prompt tokens run through the model in this call (the reused prefix excluded).
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    /// Tokens generated (EOG excluded).
    pub gen_tokens: usize,
    /// From the end of the prefill to the end of generation: sampling, detokenizing and
    /// the decode forward passes.
    pub gen_ms: f64,
    /// Prompt tokens whose KV entries were reused from the previous turn.
    pub cached_tokens: usize,
}

impl Timings {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        per_second(self.prompt_tokens, self.prompt_ms)
    }

    pub fn gen_tokens_per_s(&self) -> f64 {
        per_second(self.gen_tokens, self.gen_ms)
    }
}

fn per_second(tokens: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        tokens as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

/// The outcome of one [`Session::generate`] call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The prompt as run (after truncation, if any).
    pub prompt_ids: Vec<u32>,
    /// Generated ids, EOG excluded; tokens that formed a stop string included.
    pub ids: Vec<u32>,
    /// The visible text: the concatenation of all [`Event::Text`] pieces.
    pub text: String,
    pub stop_reason: StopReason,
    pub timings: Timings,
    /// The sampler's seed (drawn from the clock when none was given), to reproduce the run.
    pub seed: u64,
}

/// One model and its KV cache: a conversation, or a sequence of requests that may share
/// prefixes. A [`Scheduler`] of one slot underneath: `owl run` and `owl generate` take the
/// same engine path as every request of the server.
pub struct Session<M: LanguageModel> {
    scheduler: Scheduler<OneSlot<M>>,
    stream: TextStream,
}

impl<M: LanguageModel> Session<M> {
    /// A session over `model`, whose cache is cleared first.
    pub fn new(model: M, config: SessionConfig) -> Result<Self, EngineError> {
        if config.n_batch < 2 {
            return Err(EngineError::invalid("n_batch", config.n_batch, "must be at least 2"));
        }
        // One slot: a queue of one is enough for the request being generated.
        let scheduler_config = SchedulerConfig { max_batch_tokens: config.n_batch.max(3), max_queue: 1 };
        let scheduler = Scheduler::new(OneSlot(model), scheduler_config)?;
        Ok(Session { scheduler, stream: TextStream::new() })
    }

    pub fn model(&self) -> &M {
        &self.scheduler.model().0
    }

    /// The model, e.g. to change threads. Touching its cache here is noticed: the next
    /// `generate` then starts from an empty cache.
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.scheduler.model_mut().0
    }

    pub fn into_model(self) -> M {
        self.scheduler.into_model().0
    }

    pub fn context_size(&self) -> usize {
        self.scheduler.context_size()
    }

    /// The tokens currently in the KV cache.
    pub fn cached_tokens(&self) -> &[u32] {
        self.scheduler.cached_tokens(0)
    }

    /// Empties the KV cache (e.g. `/clear` in a chat).
    pub fn clear_cache(&mut self) {
        self.scheduler.clear_cache();
    }

    /// Generates a continuation of `prompt`, streaming events to `on_event` (return
    /// `ControlFlow::Break(())` to stop, reported as [`StopReason::Cancelled`]).
    /// `cancel` is polled before every step (a prompt chunk or a token); the caller clears
    /// it before the next request.
    pub fn generate<D, F>(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        decoder: &mut D,
        cancel: &AtomicBool,
        mut on_event: F,
    ) -> Result<Generation, EngineError>
    where
        D: TextDecoder + ?Sized,
        F: FnMut(Event<'_>) -> ControlFlow<()>,
    {
        let seq = self.scheduler.submit(SeqRequest { prompt: prompt.to_vec(), params: params.clone() })?;
        let fitted = fit_prompt(prompt, self.scheduler.context_size(), params)?;
        let stream = &mut self.stream;
        stream.start(decoder, &fitted, &params.stop);
        let mut outcome = None;
        while outcome.is_none() {
            if cancel.load(Ordering::Relaxed) {
                self.scheduler.cancel(seq);
            }
            if !self.scheduler.has_work() {
                break;
            }
            self.scheduler.step(|event| match event {
                SchedulerEvent::Token { token, .. } => stream.push(decoder, &token, &mut on_event),
                SchedulerEvent::Finished { outcome: o, .. } => {
                    outcome = Some(o.clone());
                    Verdict::Continue
                }
            })?;
        }
        let outcome = outcome.unwrap_or_else(|| SeqOutcome {
            prompt_ids: fitted,
            ids: Vec::new(),
            stop_reason: StopReason::Cancelled,
            timings: Timings::default(),
            seed: params.sampling.seed.unwrap_or(0),
        });
        let stop_reason = stream.finish(decoder, outcome.stop_reason, &mut on_event);
        Ok(Generation {
            prompt_ids: outcome.prompt_ids,
            ids: outcome.ids,
            text: stream.take_text(),
            stop_reason,
            timings: outcome.timings,
            seed: outcome.seed,
        })
    }
}

pub use crate::scheduler::common_prefix_len;

/// Applies [`ContextOverflow`] to a prompt for a context of `n_ctx` positions.
pub fn fit_prompt(prompt: &[u32], n_ctx: usize, params: &GenerateParams) -> Result<Vec<u32>, EngineError> {
    match params.overflow {
        ContextOverflow::Error => {
            if prompt.len() > n_ctx {
                Err(EngineError::PromptTooLong { prompt_tokens: prompt.len(), n_ctx })
            } else {
                Ok(prompt.to_vec())
            }
        }
        ContextOverflow::TruncateLeft { keep_first } => {
            let reserve = params.max_tokens.unwrap_or(usize::MAX).min(n_ctx / 2).max(1);
            let limit = n_ctx.saturating_sub(reserve).max(1);
            if prompt.len() <= limit {
                return Ok(prompt.to_vec());
            }
            let keep = keep_first.min(limit - 1);
            let mut out = Vec::with_capacity(limit);
            out.extend_from_slice(&prompt[..keep]);
            out.extend_from_slice(&prompt[prompt.len() - (limit - keep)..]);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix() {
        assert_eq!(common_prefix_len(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix_len(&[], &[1]), 0);
        assert_eq!(common_prefix_len(&[1, 2], &[1, 2]), 2);
    }

    #[test]
    fn fit_prompt_error_and_truncation() {
        let prompt: Vec<u32> = (0..10).collect();
        let mut p = GenerateParams::default();
        assert_eq!(fit_prompt(&prompt, 10, &p).unwrap(), prompt);
        let e = fit_prompt(&prompt, 9, &p).unwrap_err();
        assert!(matches!(e, EngineError::PromptTooLong { prompt_tokens: 10, n_ctx: 9 }));
        assert!(e.to_string().contains("10 tokens") && e.to_string().contains("holds 9"));

        p.overflow = ContextOverflow::TruncateLeft { keep_first: 1 };
        p.max_tokens = Some(3);
        // n_ctx 8, reserve 3: 5 tokens stay: BOS-like 0, then the last 4.
        assert_eq!(fit_prompt(&prompt, 8, &p).unwrap(), vec![0, 6, 7, 8, 9]);
        // No limit: room for n_ctx / 2.
        p.max_tokens = None;
        assert_eq!(fit_prompt(&prompt, 8, &p).unwrap(), vec![0, 7, 8, 9]);
        // Fits already: unchanged.
        assert_eq!(fit_prompt(&prompt, 40, &p).unwrap(), prompt);
        // keep_first larger than what fits still leaves the last token.
        p.overflow = ContextOverflow::TruncateLeft { keep_first: 100 };
        assert_eq!(fit_prompt(&prompt, 4, &p).unwrap(), vec![0, 9]);
        assert_eq!(fit_prompt(&prompt, 1, &p).unwrap(), vec![9]);
    }
}
