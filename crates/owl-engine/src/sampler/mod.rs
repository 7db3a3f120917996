//! The sampler chain: from one row of logits to one token id.
//!
//! Order (llama.cpp's default chain in common/sampling.cpp, minus the samplers owl does
//! not have — DRY, typical, XTC, top-n-sigma):
//!
//! ```text
//! logit bias → penalties (repeat, frequency, presence over the last N tokens)
//!   → temperature 0 ? argmax (ties → lowest id)
//!   : top-k → top-p → min-p → temperature → seeded draw
//! ```
//!
//! Top-p and min-p therefore see the temperature-1 distribution (after top-k), and the
//! temperature only shapes the final draw, as in llama.cpp. Temperature 0 is greedy: the
//! truncation steps never remove the maximum, so they are skipped.
//!
//! Cost per token is a few linear passes over the vocabulary: a copy of the logits (biases
//! and penalties are applied to the copy, touching only the penalised ids), then either an
//! argmax (greedy), a one-pass top-k selection ([`crate::select`]), or for top-p over the
//! whole vocabulary a weight histogram that bounds what must be sorted. Exponentials are
//! [`crate::fastmath::exp_f32`]. Everything is preallocated in [`Sampler::new`]:
//! [`Sampler::sample`] allocates nothing.
//!
//! Reproducibility: the draw uses xoshiro256** seeded through splitmix64 ([`crate::rng`]),
//! the candidate order before the draw is a function of the logits only (id order, or
//! sorted by logit with ties by id), and every float operation is plain IEEE arithmetic of
//! our own (no libm), so the same seed and the same logits give the same tokens on every
//! platform and build.

mod filters;
mod penalties;

pub use filters::Candidate;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::rng::{seed_from_time, Xoshiro256StarStar};
use crate::select::TopK;
use filters::{Order, Scratch};
use penalties::PenaltyWindow;

/// Sampling settings, named as the CLI flags and the server's request fields.
///
/// Defaults are llama.cpp's (`common_params_sampling`): temperature 0.8, top-k 40,
/// top-p 0.95, min-p 0.05, no penalties (window 64), random seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 = greedy (argmax, ties to the lowest id).
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off; in (0, 1].
    pub top_p: f32,
    /// 0 = off; in [0, 1].
    pub min_p: f32,
    /// 1 = off; > 0.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens (prompt included) the penalties look at; 0 = off.
    pub repeat_last_n: usize,
    /// Subtracted once from every token present in the window (OpenAI semantics).
    pub presence_penalty: f32,
    /// Subtracted `count` times from every token in the window (OpenAI semantics).
    pub frequency_penalty: f32,
    /// `None`: a fresh seed from the clock for every request (reported back).
    pub seed: Option<u64>,
    /// Added to the logits before anything else (`f32::NEG_INFINITY` bans a token).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Argmax decoding with no penalties: what the reference continuations use.
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Self::default() }
    }

    /// Checks every field's range; `vocab_size` bounds the logit-bias ids.
    pub fn validate(&self, vocab_size: usize) -> Result<(), EngineError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(EngineError::invalid("temperature", self.temperature, "must be a finite number >= 0"));
        }
        // 0 keeps only the most likely token, as llama.cpp's top-p sampler does.
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(EngineError::invalid("top_p", self.top_p, "must be in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(EngineError::invalid("min_p", self.min_p, "must be in [0, 1]"));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(EngineError::invalid("repeat_penalty", self.repeat_penalty, "must be a finite number > 0"));
        }
        if !self.presence_penalty.is_finite() {
            return Err(EngineError::invalid("presence_penalty", self.presence_penalty, "must be finite"));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(EngineError::invalid("frequency_penalty", self.frequency_penalty, "must be finite"));
        }
        for &(id, bias) in &self.logit_bias {
            if id as usize >= vocab_size {
                return Err(EngineError::TokenOutOfRange { id, vocab_size, what: "logit_bias" });
            }
            if bias.is_nan() || bias == f32::INFINITY {
                return Err(EngineError::invalid("logit_bias", bias, "must be finite or -inf"));
            }
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A configured sampler with its buffers, penalty window and random generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    vocab_size: usize,
    seed: u64,
    rng: Xoshiro256StarStar,
    /// The logits after biases and penalties.
    work: Vec<f32>,
    candidates: Vec<Candidate>,
    top_k: TopK,
    scratch: Scratch,
    window: PenaltyWindow,
}

impl Sampler {
    /// A sampler over a vocabulary of `vocab_size` logits. Validates `params`; picks a seed
    /// from the clock when `params.seed` is `None`.
    pub fn new(vocab_size: usize, params: SamplingParams) -> Result<Self, EngineError> {
        if vocab_size == 0 {
            return Err(EngineError::invalid("vocab_size", 0, "the vocabulary is empty"));
        }
        params.validate(vocab_size)?;
        let seed = params.seed.unwrap_or_else(seed_from_time);
        Ok(Sampler {
            vocab_size,
            seed,
            rng: Xoshiro256StarStar::seed_from_u64(seed),
            work: vec![0.0; vocab_size],
            candidates: Vec::with_capacity(vocab_size),
            top_k: TopK::default(),
            scratch: Scratch::new(vocab_size),
            window: PenaltyWindow::new(vocab_size, params.repeat_last_n),
            params,
        })
    }

    /// Starts a new request with `params`: new seed, empty penalty window, buffers kept.
    pub fn reset(&mut self, params: SamplingParams) -> Result<(), EngineError> {
        params.validate(self.vocab_size)?;
        self.seed = params.seed.unwrap_or_else(seed_from_time);
        self.rng = Xoshiro256StarStar::seed_from_u64(self.seed);
        self.window.reset(params.repeat_last_n);
        self.params = params;
        Ok(())
    }

    /// The seed in use (the one drawn from the clock when none was given).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Adds a token to the penalty window (prompt tokens and sampled tokens alike, as
    /// llama.cpp's CLI and server do).
    pub fn accept(&mut self, token: u32) {
        self.window.accept(token);
    }

    /// Picks the next token from one row of logits (length = vocabulary size). NaN logits
    /// count as -inf. Errors only on a wrong row length or when no token is possible.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, EngineError> {
        self.sample_allowed(logits, None)
    }

    /// [`Sampler::sample`] among the tokens set in `allowed` (a bitset: bit `i % 32` of word
    /// `i / 32` is token `i`; ids past its end are not allowed): a grammar's mask, applied
    /// after biases and penalties. If the biases leave no allowed token possible, the
    /// allowed token with the highest raw logit is taken, so the output stays in the grammar.
    pub fn sample_allowed(&mut self, logits: &[f32], allowed: Option<&[u32]>) -> Result<u32, EngineError> {
        if logits.len() != self.vocab_size {
            return Err(EngineError::LogitsLength { got: logits.len(), expected: self.vocab_size });
        }
        let p = &self.params;
        let work = &mut self.work;
        for (w, &l) in work.iter_mut().zip(logits) {
            *w = if l.is_nan() { f32::NEG_INFINITY } else { l.min(f32::MAX) };
        }
        for &(id, bias) in &p.logit_bias {
            work[id as usize] += bias;
        }
        self.window.apply(work, p.repeat_penalty, p.frequency_penalty, p.presence_penalty);
        if let Some(allowed) = allowed {
            apply_mask(work, allowed);
            if !work.iter().any(|w| w.is_finite()) {
                work.iter_mut()
                    .zip(logits)
                    .for_each(|(w, &l)| *w = if l.is_nan() { f32::NEG_INFINITY } else { l.min(f32::MAX) });
                apply_mask(work, allowed);
                return filters::argmax(work).ok_or(EngineError::NoFiniteLogits);
            }
        }

        if p.is_greedy() {
            return filters::argmax(work).ok_or(EngineError::NoFiniteLogits);
        }
        let cands = &mut self.candidates;
        cands.clear();
        let mut order = if p.top_k > 0 && p.top_k < work.len() {
            let best = self.top_k.select(work, p.top_k);
            cands.extend(best.iter().map(|&(logit, id)| Candidate { id, logit }));
            Order::ByLogitDesc
        } else {
            cands.extend(work.iter().enumerate().map(|(id, &logit)| Candidate { id: id as u32, logit }));
            Order::ById
        };
        filters::top_p(cands, p.top_p, &mut order, &mut self.scratch);
        filters::min_p(cands, p.min_p, order);
        filters::temperature(cands, p.temperature);
        filters::draw(cands, order, &mut self.scratch, &mut self.rng).ok_or(EngineError::NoFiniteLogits)
    }

    /// The candidates that survived the last [`Sampler::sample`] (after truncation and
    /// temperature), in the order the draw walked them: for diagnostics and tests.
    pub fn last_candidates(&self) -> &[Candidate] {
        &self.candidates
    }
}

/// Sets every logit whose bit in `allowed` is clear (or past its end) to -inf.
fn apply_mask(work: &mut [f32], allowed: &[u32]) {
    for (chunk, &bits) in work.chunks_mut(32).zip(allowed) {
        if bits == u32::MAX {
            continue;
        }
        for (i, w) in chunk.iter_mut().enumerate() {
            if bits & (1 << i) == 0 {
                *w = f32::NEG_INFINITY;
            }
        }
    }
    work.iter_mut().skip(allowed.len() * 32).for_each(|w| *w = f32::NEG_INFINITY);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(1),
            ..SamplingParams::default()
        };
        f(&mut p);
        p
    }

    /// A bitset over `n` ids with `ids` set.
    fn mask(n: usize, ids: &[u32]) -> Vec<u32> {
        let mut m = vec![0u32; n.div_ceil(32)];
        for &i in ids {
            m[i as usize / 32] |= 1 << (i % 32);
        }
        m
    }

    #[test]
    fn a_mask_limits_every_draw_to_its_tokens() {
        let logits: Vec<f32> = (0..70).map(|i| (i % 7) as f32).collect();
        let allowed = mask(70, &[3, 33, 64, 69]);
        let mut greedy = Sampler::new(70, SamplingParams::greedy()).unwrap();
        // Allowed logits: 3 → 3, 33 → 5, 64 → 1, 69 → 6.
        assert_eq!(greedy.sample_allowed(&logits, Some(&allowed)).unwrap(), 69);
        assert_eq!(greedy.sample(&logits).unwrap(), 6);
        let mut s = Sampler::new(70, params(|p| p.temperature = 5.0)).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..400 {
            seen.insert(s.sample_allowed(&logits, Some(&allowed)).unwrap());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [3, 33, 64, 69]);
        // A mask shorter than the vocabulary allows nothing past its end.
        assert_eq!(greedy.sample_allowed(&logits, Some(&mask(32, &[3, 5]))).unwrap(), 5);
    }

    #[test]
    fn a_mask_wins_over_biases_that_ban_all_it_allows() {
        let logits = [0.0, 4.0, 1.0, 2.0, 3.0];
        let p = SamplingParams {
            logit_bias: vec![(2, f32::NEG_INFINITY), (3, f32::NEG_INFINITY)],
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(5, p).unwrap();
        assert_eq!(s.sample_allowed(&logits, Some(&mask(5, &[2, 3]))).unwrap(), 3);
        assert_eq!(s.sample_allowed(&logits, Some(&mask(5, &[0, 2, 3]))).unwrap(), 0);
        assert!(matches!(s.sample_allowed(&[f32::NAN; 5], Some(&mask(5, &[2]))), Err(EngineError::NoFiniteLogits)));
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(5, SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.0, 2.0, -1.0, 2.0, 1.0]).unwrap(), 1);
        assert_eq!(s.sample(&[f32::NAN, 0.5, f32::NAN, 0.1, 0.0]).unwrap(), 1);
    }

    #[test]
    fn greedy_sees_penalties_and_bias() {
        let mut s = Sampler::new(
            3,
            params(|p| {
                p.temperature = 0.0;
                p.repeat_penalty = 2.0;
            }),
        )
        .unwrap();
        s.accept(0);
        // 3.0 / 2 = 1.5 < 2.0: the repeated token loses.
        assert_eq!(s.sample(&[3.0, 2.0, 0.0]).unwrap(), 1);
        let mut s = Sampler::new(
            3,
            params(|p| {
                p.temperature = 0.0;
                p.logit_bias = vec![(0, f32::NEG_INFINITY), (2, 0.5)];
            }),
        )
        .unwrap();
        assert_eq!(s.sample(&[3.0, 2.0, 1.75]).unwrap(), 2);
    }

    #[test]
    fn no_possible_token_is_an_error() {
        let mut s = Sampler::new(2, params(|_| {})).unwrap();
        assert!(matches!(s.sample(&[f32::NAN, f32::NEG_INFINITY]), Err(EngineError::NoFiniteLogits)));
        let mut g = Sampler::new(2, SamplingParams::greedy()).unwrap();
        assert!(matches!(g.sample(&[f32::NAN, f32::NAN]), Err(EngineError::NoFiniteLogits)));
        assert!(matches!(g.sample(&[0.0]), Err(EngineError::LogitsLength { got: 1, expected: 2 })));
    }

    #[test]
    fn invalid_parameters_are_named() {
        let bad = [
            params(|p| p.temperature = -0.1),
            params(|p| p.temperature = f32::NAN),
            params(|p| p.top_p = -0.1),
            params(|p| p.top_p = 1.5),
            params(|p| p.min_p = -0.5),
            params(|p| p.repeat_penalty = 0.0),
            params(|p| p.presence_penalty = f32::INFINITY),
            params(|p| p.logit_bias = vec![(7, 1.0)]),
            params(|p| p.logit_bias = vec![(0, f32::INFINITY)]),
        ];
        for p in bad {
            let e = Sampler::new(4, p.clone()).expect_err(&format!("{p:?}"));
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32 / 300.0).collect();
        let run = |seed: u64| -> Vec<u32> {
            let mut s = Sampler::new(1000, params(|p| p.seed = Some(seed))).unwrap();
            (0..64).map(|_| s.sample(&logits).unwrap()).collect()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        // reset() restarts the same stream.
        let mut s = Sampler::new(1000, params(|p| p.seed = Some(42))).unwrap();
        let first: Vec<u32> = (0..64).map(|_| s.sample(&logits).unwrap()).collect();
        s.reset(params(|p| p.seed = Some(42))).unwrap();
        let again: Vec<u32> = (0..64).map(|_| s.sample(&logits).unwrap()).collect();
        assert_eq!(first, again);
    }

    /// Pins the whole pipeline (generator, chain, exp, draw order): a change here changes
    /// every seeded output users may have recorded, on every platform alike.
    #[test]
    fn seeded_stream_is_pinned() {
        let mut rng = crate::rng::SplitMix64::new(99);
        let logits: Vec<f32> =
            (0..5000).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 12.0 - 6.0).collect();
        let mut s =
            Sampler::new(5000, SamplingParams { seed: Some(1234), repeat_penalty: 1.3, ..SamplingParams::default() })
                .unwrap();
        let ids: Vec<u32> = (0..12)
            .map(|_| {
                let id = s.sample(&logits).unwrap();
                s.accept(id);
                id
            })
            .collect();
        assert_eq!(ids, PINNED);
    }

    const PINNED: [u32; 12] = [2152, 4952, 1158, 41, 378, 714, 4585, 4517, 4315, 1329, 155, 1169];

    #[test]
    fn clock_seed_is_reported_and_reusable() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 10) as f32 * 0.1).collect();
        let mut a = Sampler::new(100, params(|p| p.seed = None)).unwrap();
        let seed = a.seed();
        let va: Vec<u32> = (0..32).map(|_| a.sample(&logits).unwrap()).collect();
        let mut b = Sampler::new(100, params(|p| p.seed = Some(seed))).unwrap();
        let vb: Vec<u32> = (0..32).map(|_| b.sample(&logits).unwrap()).collect();
        assert_eq!(va, vb);
    }

    #[test]
    fn chain_order_top_k_then_top_p_then_min_p() {
        // probs ∝ [0.4, 0.3, 0.2, 0.1]. top_k 3 → [0,1,2] renormalised to [4/9, 3/9, 2/9];
        // top_p 0.7 → 4/9 + 3/9 = 0.78 >= 0.7 keeps [0, 1]; min_p 0.8 → 0.3/0.4 = 0.75 < 0.8 drops 1.
        let logits = [0.4f32.ln(), 0.3f32.ln(), 0.2f32.ln(), 0.1f32.ln()];
        let mut s = Sampler::new(
            4,
            params(|p| {
                p.top_k = 3;
                p.top_p = 0.7;
            }),
        )
        .unwrap();
        s.sample(&logits).unwrap();
        let ids: Vec<u32> = s.last_candidates().iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![0, 1]);
        let mut s = Sampler::new(
            4,
            params(|p| {
                p.top_k = 3;
                p.top_p = 0.7;
                p.min_p = 0.8;
            }),
        )
        .unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&logits).unwrap(), 0);
        }
        // Without top-k the mass is over all four: top_p 0.75 needs 0.4 + 0.3 + 0.2.
        let mut s = Sampler::new(4, params(|p| p.top_p = 0.75)).unwrap();
        s.sample(&logits).unwrap();
        assert_eq!(s.last_candidates().len(), 3);
    }

    #[test]
    fn temperature_sharpens_the_draw() {
        let logits = [0.0f32, 1.0];
        let freq_of_1 = |t: f32| {
            let mut s = Sampler::new(2, params(|p| p.temperature = t)).unwrap();
            (0..20_000).filter(|_| s.sample(&logits).unwrap() == 1).count() as f64 / 20_000.0
        };
        // p(1) = 1 / (1 + e^(-1/t)): t=1 → 0.731, t=0.25 → 0.982, t=4 → 0.562.
        assert!((freq_of_1(1.0) - 0.731).abs() < 0.015);
        assert!((freq_of_1(0.25) - 0.982).abs() < 0.01);
        assert!((freq_of_1(4.0) - 0.562).abs() < 0.015);
    }

    #[test]
    fn sampling_allocates_nothing_after_setup() {
        let vocab = 50_000;
        let logits: Vec<f32> = (0..vocab).map(|i| ((i * 31) % 977) as f32 / 100.0).collect();
        for p in [
            SamplingParams { seed: Some(3), ..SamplingParams::default() },
            params(|p| p.top_p = 0.9),
            params(|p| p.min_p = 0.1),
            params(|_| {}),
        ] {
            let mut s = Sampler::new(vocab, SamplingParams { repeat_penalty: 1.1, ..p }).unwrap();
            s.sample(&logits).unwrap();
            let caps = (
                s.candidates.capacity(),
                s.scratch.weights.capacity(),
                s.candidates.as_ptr(),
                s.scratch.weights.as_ptr(),
            );
            for t in 0..200u32 {
                s.accept(t);
                s.sample(&logits).unwrap();
            }
            let after = (
                s.candidates.capacity(),
                s.scratch.weights.capacity(),
                s.candidates.as_ptr(),
                s.scratch.weights.as_ptr(),
            );
            assert_eq!(caps, after, "buffers were reallocated");
        }
    }
}
