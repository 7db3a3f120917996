//! A generation session: one model with its KV cache, a sampler, and the loop that turns
//! prompt ids into a stream of tokens and text.
//!
//! [`Session::generate`] does, in order:
//!
//! 1. fit the prompt into the context ([`ContextOverflow`]: error, or drop the oldest
//!    tokens after a kept prefix such as BOS);
//! 2. reuse the KV cache: keep the longest common prefix of the new prompt with the cached
//!    tokens (at most `prompt.len() - 1`, since the last prompt token's logits are needed),
//!    drop the rest, prefill only the new suffix, in chunks of `n_batch` tokens;
//! 3. decode: logprobs (optional) → sample → EOG? → detokenize → stop strings → emit
//!    [`Event::Token`] and [`Event::Text`] → forward the token; until an EOG token, a stop
//!    string, the token limit, a full context, the cancellation flag or the callback's
//!    `Break`.
//!
//! The last sampled token is not run through the model (its logits are never needed), so
//! after a reply the cache holds the prompt and all generated tokens but the last; the
//! next turn's prompt, rendered through the chat template, shares most of that prefix.
//!
//! Per token the loop allocates nothing once warmed up: the logits row, the sampler's
//! buffers, the event (its text and top list are cleared and refilled) and the stop
//! matcher's buffers are all reused. Growing the result's `ids`/`text` is amortised.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::logprobs::{LogSoftmax, TokenLogprob, TopLogprobs};
use crate::model::{LanguageModel, TextDecoder};
use crate::sampler::{Sampler, SamplingParams};
use crate::stop::{EogSet, StopMatcher, StopReason};

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

/// One model, its KV cache and a sampler: a conversation or a sequence of requests that
/// may share prefixes.
pub struct Session<M: LanguageModel> {
    model: M,
    config: SessionConfig,
    /// The tokens whose KV entries are in the cache, in order (== `model.kv_len()`).
    cached: Vec<u32>,
    logits: Vec<f32>,
    sampler: Sampler,
    top: TopLogprobs,
    matcher: StopMatcher,
    event: TokenEvent,
    released: String,
}

impl<M: LanguageModel> Session<M> {
    /// A session over `model`, whose cache is cleared first.
    pub fn new(mut model: M, config: SessionConfig) -> Result<Self, EngineError> {
        if config.n_batch == 0 {
            return Err(EngineError::invalid("n_batch", 0, "must be at least 1"));
        }
        let vocab = model.vocab_size();
        let sampler = Sampler::new(vocab, SamplingParams::greedy())?;
        let kept = model.kv_truncate(0);
        if kept != 0 || model.kv_len() != 0 {
            return Err(EngineError::CacheMismatch { got: model.kv_len(), expected: 0 });
        }
        Ok(Session {
            model,
            config,
            cached: Vec::new(),
            logits: vec![0.0; vocab],
            sampler,
            top: TopLogprobs::new(),
            matcher: StopMatcher::default(),
            event: TokenEvent::default(),
            released: String::new(),
        })
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, e.g. to change threads. Touching its cache here is noticed: the next
    /// `generate` then starts from an empty cache.
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    pub fn into_model(self) -> M {
        self.model
    }

    pub fn context_size(&self) -> usize {
        self.model.context_size()
    }

    /// The tokens currently in the KV cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Empties the KV cache (e.g. `/clear` in a chat).
    pub fn clear_cache(&mut self) {
        self.model.kv_truncate(0);
        self.cached.clear();
    }

    /// Generates a continuation of `prompt`, streaming events to `on_event` (return
    /// `ControlFlow::Break(())` to stop, reported as [`StopReason::Cancelled`]).
    /// `cancel` is polled between prefill chunks and before every token; the caller
    /// clears it before the next request.
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
        let vocab = self.model.vocab_size();
        let n_ctx = self.model.context_size();
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if n_ctx == 0 {
            return Err(EngineError::ContextTooSmall { what: "generation".into(), needed: prompt.len() + 1, n_ctx });
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange { id, vocab_size: vocab, what: "prompt" });
        }
        self.sampler.reset(params.sampling.clone())?;
        let prompt = fit_prompt(prompt, n_ctx, params)?;

        // Reuse the cached prefix; keep at least the last prompt token to run.
        self.sync_cache()?;
        let common = common_prefix_len(&self.cached, &prompt).min(prompt.len() - 1);
        let kept = self.model.kv_truncate(common);
        if kept > common || self.model.kv_len() != kept {
            let got = self.model.kv_len();
            self.clear_cache();
            return Err(EngineError::CacheMismatch { got, expected: common });
        }
        self.cached.truncate(kept);

        // Penalties look at the prompt too (only the window's worth matters).
        let window = params.sampling.repeat_last_n;
        for &t in &prompt[prompt.len().saturating_sub(window)..] {
            self.sampler.accept(t);
        }

        let mut generation = Generation {
            prompt_ids: Vec::new(),
            ids: Vec::new(),
            text: String::new(),
            stop_reason: StopReason::MaxTokens,
            timings: Timings { cached_tokens: kept, ..Timings::default() },
            seed: self.sampler.seed(),
        };

        // Prefill the new suffix; logits only for the very last prompt token.
        let started = Instant::now();
        let suffix = &prompt[kept..];
        let n_chunks = suffix.len().div_ceil(self.config.n_batch);
        for (i, chunk) in suffix.chunks(self.config.n_batch).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                generation.stop_reason = StopReason::Cancelled;
                generation.timings.prompt_ms = ms_since(started);
                generation.prompt_ids = prompt;
                return Ok(generation);
            }
            let first_output = if i + 1 == n_chunks { chunk.len() - 1 } else { chunk.len() };
            self.forward(chunk, first_output)?;
            generation.timings.prompt_tokens += chunk.len();
        }
        generation.timings.prompt_ms = ms_since(started);

        // Decode.
        let started = Instant::now();
        decoder.reset(&prompt);
        self.matcher.set_stops(params.stop.iter().map(String::as_str));
        let max_tokens = params.max_tokens.unwrap_or(usize::MAX);
        let want_logprob = params.logprobs || params.top_logprobs > 0;
        let mut reason = loop {
            if generation.ids.len() >= max_tokens {
                break StopReason::MaxTokens;
            }
            if cancel.load(Ordering::Relaxed) {
                break StopReason::Cancelled;
            }
            let row = &self.logits[..vocab];
            let norm = want_logprob.then(|| LogSoftmax::of(row));
            let id = self.sampler.sample(row)?;
            self.sampler.accept(id);
            if params.eog.contains(id) {
                break StopReason::Eog { id };
            }
            generation.ids.push(id);

            let event = &mut self.event;
            event.id = id;
            event.text.clear();
            event.bytes.clear();
            decoder.push(id, &mut event.text, &mut event.bytes);
            event.logprob = norm.map(|n| n.logprob(row[id as usize]) as f32);
            match &norm {
                Some(n) if params.top_logprobs > 0 => self.top.select(row, params.top_logprobs, n, &mut event.top),
                _ => event.top.clear(),
            }
            self.released.clear();
            let hit = self.matcher.push(&event.text, &mut self.released);
            let mut flow = on_event(Event::Token(event));
            if !self.released.is_empty() {
                generation.text.push_str(&self.released);
                if on_event(Event::Text(&self.released)).is_break() {
                    flow = ControlFlow::Break(());
                }
            }
            if let Some(index) = hit {
                break StopReason::Stop { index, text: params.stop[index].clone() };
            }
            if flow.is_break() {
                break StopReason::Cancelled;
            }
            if generation.ids.len() >= max_tokens {
                break StopReason::MaxTokens;
            }
            if self.model.kv_len() >= n_ctx {
                break StopReason::ContextFull;
            }
            self.forward(&[id], 0)?;
        };

        // End of stream: flush the detokenizer and the held-back text.
        if !matches!(reason, StopReason::Stop { .. }) {
            self.event.text.clear();
            decoder.finish(&mut self.event.text);
            self.released.clear();
            let hit = match self.matcher.push(&self.event.text, &mut self.released) {
                Some(k) => Some(k),
                None => self.matcher.finish(&mut self.released),
            };
            if !self.released.is_empty() {
                generation.text.push_str(&self.released);
                // The stream is over: a Break here changes nothing.
                let _ = on_event(Event::Text(&self.released));
            }
            if let Some(index) = hit {
                reason = StopReason::Stop { index, text: params.stop[index].clone() };
            }
        }
        generation.stop_reason = reason;
        generation.timings.gen_tokens = generation.ids.len();
        generation.timings.gen_ms = ms_since(started);
        generation.prompt_ids = prompt;
        Ok(generation)
    }

    /// Runs `tokens` through the model, keeping `cached` in step; the logits of
    /// `tokens[first_output..]` (at most one row here) land in `self.logits`.
    fn forward(&mut self, tokens: &[u32], first_output: usize) -> Result<(), EngineError> {
        let vocab = self.logits.len();
        let position = self.model.kv_len();
        let rows = tokens.len() - first_output;
        debug_assert!(rows <= 1);
        let out = &mut self.logits[..rows * vocab];
        if let Err(source) = self.model.forward(tokens, first_output, out) {
            self.clear_cache();
            return Err(EngineError::Model { position, source });
        }
        if self.model.kv_len() != position + tokens.len() {
            let got = self.model.kv_len();
            self.clear_cache();
            return Err(EngineError::CacheMismatch { got, expected: position + tokens.len() });
        }
        self.cached.extend_from_slice(tokens);
        Ok(())
    }

    /// If the model's cache was changed behind our back, start from empty.
    fn sync_cache(&mut self) -> Result<(), EngineError> {
        if self.model.kv_len() != self.cached.len() {
            self.clear_cache();
            if self.model.kv_len() != 0 {
                return Err(EngineError::CacheMismatch { got: self.model.kv_len(), expected: 0 });
            }
        }
        Ok(())
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Length of the longest common prefix of two id sequences.
pub fn common_prefix_len(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

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
