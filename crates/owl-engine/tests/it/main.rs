//! owl-engine integration tests: sessions, stop strings, perplexity and bench driven
//! through the public API with a deterministic fake model, and log-probabilities checked
//! against the real-model fixtures.

#![allow(clippy::unwrap_used)]

mod alloc_count;
mod bench;
mod fake;
mod grammar;
mod logprobs_fixture;
mod perplexity;
mod real_models;
mod scheduler;
mod session;
mod stop_props;
