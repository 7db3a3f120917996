//! Prompt-processing and generation speed, measured like llama-bench
//! (llama.cpp tools/llama-bench/llama-bench.cpp):
//!
//! - `ppN`: from an empty KV cache, N random prompt tokens in forward calls of `n_batch`
//!   (logits of the last token only), BOS first when the model adds one;
//! - `tgN`: from an empty cache, N single-token forward calls (BOS first, then random ids);
//! - one untimed warm-up run per test (llama-bench's default), then `repetitions` timed
//!   runs; speed per run = tokens / seconds; reported: the mean of those speeds and their
//!   sample standard deviation (n - 1), llama-bench's `avg_ts` and `stddev_ts`;
//! - at a depth `d` (llama-bench's `-d`, the test then named `pp512 @ d4096`): `d` random
//!   tokens are processed first, untimed, in calls of `n_batch`, and each run starts from
//!   them (the cache cut back to `d` tokens, as llama-bench restores its saved state)
//!   instead of from an empty cache.
//!
//! Random ids come from a fixed-seed xoshiro256**, drawn before the clock starts.
//! Threads are a property of the model; `threads` is only recorded in the result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::error::EngineError;
use crate::model::LanguageModel;
use crate::rng::Xoshiro256StarStar;

/// What to run (the defaults are `owl bench`'s: `-p 64,512 -n 128 -r 5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchParams {
    pub n_prompt: Vec<usize>,
    pub n_gen: Vec<usize>,
    pub repetitions: usize,
    pub n_batch: usize,
    /// BOS id when the model adds BOS (the first token of each test).
    pub bos: Option<u32>,
    pub warmup: bool,
    /// Reported in the results (the model was built with this many threads).
    pub threads: usize,
    /// Depths (tokens already in the cache) every test runs at; `[0]`: from empty.
    pub n_depth: Vec<usize>,
}

impl Default for BenchParams {
    fn default() -> Self {
        BenchParams {
            n_prompt: vec![64, 512],
            n_gen: vec![128],
            repetitions: 5,
            n_batch: 512,
            bos: None,
            warmup: true,
            threads: 1,
            n_depth: vec![0],
        }
    }
}

/// One test's result (JSON: `{"test":"pp512","tokens_per_s":..,"stddev":..,"threads":..}`
/// plus details).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    /// `ppN` or `tgN`, with ` @ dD` at a depth D > 0 (llama-bench's names).
    pub test: String,
    /// Mean over repetitions of tokens per second.
    pub tokens_per_s: f64,
    /// Sample standard deviation of the per-repetition speeds (0 for one repetition).
    pub stddev: f64,
    pub threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Tokens in the cache before each run.
    pub n_depth: usize,
    pub repetitions: usize,
    /// Wall time of each repetition, nanoseconds.
    pub samples_ns: Vec<u64>,
}

/// Which kind of test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchTest {
    Prompt(usize),
    Generation(usize),
}

impl BenchTest {
    pub fn name(&self) -> String {
        match self {
            BenchTest::Prompt(n) => format!("pp{n}"),
            BenchTest::Generation(n) => format!("tg{n}"),
        }
    }

    /// [`BenchTest::name`] at `depth` tokens of context: `pp512 @ d4096`.
    pub fn name_at(&self, depth: usize) -> String {
        if depth == 0 {
            self.name()
        } else {
            format!("{} @ d{depth}", self.name())
        }
    }

    fn tokens(&self) -> usize {
        match *self {
            BenchTest::Prompt(n) | BenchTest::Generation(n) => n,
        }
    }
}

/// Runs every test of `params` at each depth (pp tests first, then tg, as llama-bench orders
/// them), calling `on_result` as each finishes. Zero-sized tests are skipped.
pub fn run_bench<M: LanguageModel + ?Sized>(
    model: &mut M,
    params: &BenchParams,
    cancel: &AtomicBool,
    mut on_result: impl FnMut(&BenchResult),
) -> Result<Vec<BenchResult>, EngineError> {
    let tests = params
        .n_prompt
        .iter()
        .map(|&n| BenchTest::Prompt(n))
        .chain(params.n_gen.iter().map(|&n| BenchTest::Generation(n)))
        .filter(|t| t.tokens() > 0)
        .collect::<Vec<_>>();
    let depths = if params.n_depth.is_empty() { vec![0] } else { params.n_depth.clone() };
    let mut results = Vec::new();
    for &depth in &depths {
        for &test in &tests {
            let r = bench_test(model, test, depth, params, cancel)?;
            on_result(&r);
            results.push(r);
        }
    }
    Ok(results)
}

/// Runs one test at `depth` tokens of context: warm-up (if asked) and
/// `params.repetitions` timed runs.
pub fn bench_test<M: LanguageModel + ?Sized>(
    model: &mut M,
    test: BenchTest,
    depth: usize,
    params: &BenchParams,
    cancel: &AtomicBool,
) -> Result<BenchResult, EngineError> {
    let n = test.tokens();
    let vocab = model.vocab_size();
    if params.repetitions == 0 {
        return Err(EngineError::invalid("repetitions", 0, "must be at least 1"));
    }
    if params.n_batch == 0 {
        return Err(EngineError::invalid("n_batch", 0, "must be at least 1"));
    }
    if n == 0 {
        return Err(EngineError::invalid("tokens", 0, "a test needs at least 1 token"));
    }
    if depth.saturating_add(n) > model.context_size() {
        return Err(EngineError::ContextTooSmall {
            what: format!("bench test {}", test.name_at(depth)),
            needed: depth.saturating_add(n),
            n_ctx: model.context_size(),
        });
    }
    if let Some(bos) = params.bos.filter(|&b| b as usize >= vocab) {
        return Err(EngineError::TokenOutOfRange { id: bos, vocab_size: vocab, what: "bos" });
    }

    let mut rng = Xoshiro256StarStar::seed_from_u64(0x6f77_6c5f_6265_6e63); // "owl_benc"
    let mut tokens: Vec<u32> = (0..n).map(|_| rng.below(vocab as u64) as u32).collect();
    if let Some(bos) = params.bos {
        tokens[0] = bos;
    }
    let mut logits = vec![0.0f32; vocab];

    // The context the runs start from: BOS (when the model adds one) and random ids, drawn
    // from their own stream so a test's tokens are the same at every depth.
    if depth > 0 {
        let mut rng = Xoshiro256StarStar::seed_from_u64(0x6f77_6c5f_6465_7074); // "owl_dept"
        let mut context: Vec<u32> = (0..depth).map(|_| rng.below(vocab as u64) as u32).collect();
        if let Some(bos) = params.bos {
            context[0] = bos;
            tokens[0] = rng.below(vocab as u64) as u32;
        }
        model.kv_truncate(0);
        for piece in context.chunks(params.n_batch) {
            if cancel.load(Ordering::Relaxed) {
                model.kv_truncate(0);
                return Err(EngineError::Cancelled);
            }
            forward(model, piece, piece.len(), &mut [])?;
        }
    }

    let run_once = |model: &mut M, logits: &mut [f32]| -> Result<(), EngineError> {
        if cancel.load(Ordering::Relaxed) {
            model.kv_truncate(0);
            return Err(EngineError::Cancelled);
        }
        if model.kv_truncate(depth) != depth {
            return Err(EngineError::CacheMismatch { got: model.kv_len(), expected: depth });
        }
        match test {
            BenchTest::Prompt(_) => {
                let n_pieces = tokens.len().div_ceil(params.n_batch);
                for (i, piece) in tokens.chunks(params.n_batch).enumerate() {
                    let first_output = if i + 1 == n_pieces { piece.len() - 1 } else { piece.len() };
                    let rows = piece.len() - first_output;
                    forward(model, piece, first_output, &mut logits[..rows * vocab])?;
                }
            }
            BenchTest::Generation(_) => {
                for t in tokens.chunks(1) {
                    forward(model, t, 0, logits)?;
                }
            }
        }
        Ok(())
    };

    if params.warmup {
        // llama-bench warms pp tests with the full prompt and tg tests with one token.
        match test {
            BenchTest::Prompt(_) => run_once(model, &mut logits)?,
            BenchTest::Generation(_) => {
                model.kv_truncate(depth);
                forward(model, &tokens[..1], 0, &mut logits)?;
            }
        }
    }
    let mut samples_ns = Vec::with_capacity(params.repetitions);
    for _ in 0..params.repetitions {
        let started = Instant::now();
        run_once(model, &mut logits)?;
        samples_ns.push(started.elapsed().as_nanos().max(1) as u64);
    }
    model.kv_truncate(0);

    let speeds: Vec<f64> = samples_ns.iter().map(|&ns| n as f64 * 1e9 / ns as f64).collect();
    let (mean, stddev) = mean_and_stddev(&speeds);
    Ok(BenchResult {
        test: test.name_at(depth),
        tokens_per_s: mean,
        stddev,
        threads: params.threads,
        n_prompt: if let BenchTest::Prompt(n) = test { n } else { 0 },
        n_gen: if let BenchTest::Generation(n) = test { n } else { 0 },
        n_depth: depth,
        repetitions: params.repetitions,
        samples_ns,
    })
}

fn forward<M: LanguageModel + ?Sized>(
    model: &mut M,
    tokens: &[u32],
    first_output: usize,
    logits: &mut [f32],
) -> Result<(), EngineError> {
    let position = model.kv_len();
    model.forward(tokens, first_output, logits).map_err(|source| {
        model.kv_truncate(0);
        EngineError::Model { position, source }
    })
}

/// Mean and sample standard deviation (divisor n - 1; 0 for fewer than two values).
pub fn mean_and_stddev(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_stddev_by_hand() {
        // mean 5, squared deviations 9+1+1+9 = 20, / 3 → sqrt(20/3).
        let (m, s) = mean_and_stddev(&[2.0, 4.0, 6.0, 8.0]);
        assert_eq!(m, 5.0);
        assert!((s - (20.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_and_stddev(&[3.0]), (3.0, 0.0));
        assert_eq!(mean_and_stddev(&[]), (0.0, 0.0));
    }

    #[test]
    fn test_names() {
        assert_eq!(BenchTest::Prompt(512).name(), "pp512");
        assert_eq!(BenchTest::Generation(128).name(), "tg128");
    }
}
