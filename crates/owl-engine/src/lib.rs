//! owl-engine: turning a model's logits into generated text.
//!
//! - [`Scheduler`]: continuous batching over a [`BatchModel`] of several sequence slots —
//!   one batched forward per step, chunked prefill beside decoding, a bounded queue,
//!   prefix reuse across requests, batch-invariant results; [`TextStream`] turns a
//!   sequence's tokens into text and stop strings.
//! - [`Session`]: one model with its KV cache (a one-slot scheduler); [`Session::generate`] prefills a prompt
//!   (reusing the cached common prefix from the previous turn), then samples, detokenizes
//!   and streams [`Event`]s ([`TokenEvent`] per token, final text pieces) until an EOG
//!   token, a stop string, the token limit, the context limit or cancellation
//!   ([`StopReason`]); [`Generation`] holds the result and its [`Timings`].
//! - [`Sampler`] / [`SamplingParams`]: llama.cpp's sampler chain (logit bias → penalties →
//!   top-k → top-p → min-p → temperature → seeded draw; temperature 0 = argmax), with
//!   no allocation per token. Randomness from [`rng`] (xoshiro256**, splitmix64 seeding).
//! - [`GrammarCompiler`], [`Constraint`]: constrained decoding (JSON Schema, regex, Lark)
//!   with llguidance: a per-step mask of the tokens that keep the output in the grammar.
//! - [`StopMatcher`], [`EogSet`]: stop strings across token boundaries, end-of-generation ids.
//! - [`LogSoftmax`], [`TopLogprobs`]: log-probabilities and top-K alternatives.
//! - [`perplexity()`]: llama-perplexity's windowed scheme; [`run_bench`]: llama-bench's pp/tg.
//! - [`LanguageModel`], [`TextDecoder`]: what the engine needs from a model and a
//!   detokenizer; [`ModelRunner`] (an owl-models `Model` + one-sequence `KvCache`) and
//!   [`TokenizerDecoder`] (owl-tokenizer's `StreamDecoder`) implement them.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod base_logprobs;
pub mod batch_model;
pub mod bench;
mod detokenizer;
mod error;
pub mod fastmath;
pub mod grammar;
pub mod imatrix;
pub mod kl_divergence;
pub mod logprobs;
pub mod model;
pub mod perplexity;
pub mod rng;
mod runner;
pub mod sampler;
pub mod scheduler;
mod select;
pub mod session;
pub mod stop;
pub mod text_stream;

pub use base_logprobs::{BaseLogProbs, BaseLogProbsWriter};
pub use batch_model::{BatchModel, OneSlot};
pub use bench::{bench_test, run_bench, BenchParams, BenchResult, BenchTest};
pub use detokenizer::TokenizerDecoder;
pub use error::{EngineError, ModelError};
pub use grammar::{Constraint, GrammarCompiler, GrammarError, GrammarSpec};
pub use imatrix::{ImatrixCollector, ImatrixStats};
pub use kl_divergence::{kl_divergence, kl_divergence_saved, KlDivergence};
pub use logprobs::{LogSoftmax, TokenLogprob, TopLogprobs};
pub use model::{ByteTableDecoder, LanguageModel, TextDecoder};
/// The LoRA adapters a request runs with (owl-models applies them; see [`GenerateParams::lora`]).
pub use owl_models::LoraSet;
pub use perplexity::{perplexity, perplexity_with_rows, Perplexity, PerplexityParams, PerplexityProgress};
pub use runner::ModelRunner;
pub use sampler::{Sampler, SamplingParams};
pub use scheduler::{
    Sampled, Scheduler, SchedulerConfig, SchedulerEvent, SchedulerStats, SeqId, SeqOutcome, SeqRequest, Verdict,
};
pub use session::{ContextOverflow, Event, GenerateParams, Generation, Session, SessionConfig, Timings, TokenEvent};
pub use stop::{EogSet, StopMatcher, StopReason};
pub use text_stream::TextStream;
