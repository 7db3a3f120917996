//! Log-probabilities of the model's distribution: the full log-softmax at temperature 1
//! (what OpenAI's `logprobs` and llama.cpp's `n_probs` report), the chosen token's value
//! and the top-K alternatives.
//!
//! Numerics: the normaliser `ln Σ exp(l - max)` sums f32 exponentials ([`crate::fastmath`],
//! relative error < 2e-7 each) in f64, so a 262k-token vocabulary loses nothing to the
//! accumulation; a token's logprob is then `(l - max) - ln Σ` in f64. Against the
//! reference (float64 throughout) the difference is ~1e-7.
//!
//! The top-K list is found without sorting the vocabulary ([`crate::select`]). Order:
//! logprob descending, ties by lower id. NaN logits count as impossible tokens (logprob
//! -inf) and are never listed.

use serde::Serialize;

use crate::fastmath::{max_f32, sum_exp};
use crate::select::TopK;

/// One token with its log-probability (the JSON shape `{"id":..,"logprob":..}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// The normaliser of one logits row: `logprob(l) = l - max - ln Σ exp(l_i - max)`.
#[derive(Debug, Clone, Copy)]
pub struct LogSoftmax {
    max: f32,
    log_sum: f64,
}

impl LogSoftmax {
    /// Scans the row twice (max, then the f64 sum of exponentials).
    pub fn of(logits: &[f32]) -> Self {
        let max = max_f32(logits);
        if max == f32::NEG_INFINITY {
            // No finite logit: every token is impossible.
            return LogSoftmax { max, log_sum: f64::NAN };
        }
        LogSoftmax { max, log_sum: sum_exp(logits, max).ln() }
    }

    /// The log-probability of a token whose logit is `logit` (in f64).
    pub fn logprob(&self, logit: f32) -> f64 {
        if logit.is_nan() || self.log_sum.is_nan() {
            return f64::NEG_INFINITY;
        }
        (f64::from(logit) - f64::from(self.max)) - self.log_sum
    }

    /// `ln Σ exp(l_i)` of the row (the "logsumexp").
    pub fn log_normalizer(&self) -> f64 {
        f64::from(self.max) + self.log_sum
    }
}

/// Reusable buffers for top-K selection, so that per-token calls do not allocate once
/// warmed up.
#[derive(Debug, Default, Clone)]
pub struct TopLogprobs {
    top: TopK,
}

impl TopLogprobs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the `k` most likely tokens of `logits` into `out` (cleared first), most
    /// likely first, with log-probabilities under `norm` (which must be `LogSoftmax::of`
    /// the same row). Fewer than `k` entries only when the row has fewer non-NaN logits.
    pub fn select(&mut self, logits: &[f32], k: usize, norm: &LogSoftmax, out: &mut Vec<TokenLogprob>) {
        out.clear();
        out.extend(
            self.top
                .select(logits, k)
                .iter()
                .map(|&(logit, id)| TokenLogprob { id, logprob: norm.logprob(logit) as f32 }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_top(logits: &[f32], k: usize) -> Vec<(u32, f64)> {
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, |m, l| m.max(l as f64));
        let lse = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
        let mut v: Vec<(u32, f64)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l as f64 - lse)).collect();
        v.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }

    #[test]
    fn logprobs_sum_to_one_and_match_definition() {
        let logits = [1.0f32, 2.0, 3.0, -1.0];
        let norm = LogSoftmax::of(&logits);
        let total: f64 = logits.iter().map(|&l| norm.logprob(l).exp()).sum();
        // f32 exponentials (relative error < 2e-7) summed in f64.
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        // By hand: lse = ln(e + e^2 + e^3 + e^-1).
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp() + (-1f64).exp()).ln();
        assert!((norm.logprob(3.0) - (3.0 - lse)).abs() < 1e-6);
        assert!((norm.log_normalizer() - lse).abs() < 1e-6);
    }

    #[test]
    fn stable_for_huge_logits() {
        let logits = [1e30f32, 1e30, -1e30];
        let norm = LogSoftmax::of(&logits);
        assert!((norm.logprob(1e30) - (0.5f64).ln()).abs() < 1e-12);
        assert!(norm.logprob(-1e30) < -1e29);
    }

    #[test]
    fn nan_and_neg_inf_are_impossible_tokens() {
        let logits = [f32::NAN, 0.0, f32::NEG_INFINITY, 0.0];
        let norm = LogSoftmax::of(&logits);
        assert_eq!(norm.logprob(f32::NAN), f64::NEG_INFINITY);
        assert_eq!(norm.logprob(f32::NEG_INFINITY), f64::NEG_INFINITY);
        assert!((norm.logprob(0.0) - 0.5f64.ln()).abs() < 1e-15);
        let mut top = TopLogprobs::new();
        let mut out = Vec::new();
        top.select(&logits, 4, &norm, &mut out);
        let ids: Vec<u32> = out.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![1, 3, 2], "NaN is never listed; -inf comes last");
        let all_bad = LogSoftmax::of(&[f32::NEG_INFINITY, f32::NAN]);
        assert_eq!(all_bad.logprob(f32::NEG_INFINITY), f64::NEG_INFINITY);
    }

    #[test]
    fn top_logprobs_agree_with_a_full_sort() {
        let mut rng = crate::rng::Xoshiro256StarStar::seed_from_u64(3);
        let mut top = TopLogprobs::new();
        let mut out = Vec::new();
        for &(n, k) in &[(1usize, 1usize), (10, 3), (1000, 20), (1000, 64), (1000, 65), (5000, 300), (50, 50), (50, 80)]
        {
            // Quantised values so that ties happen.
            let logits: Vec<f32> = (0..n).map(|_| (rng.below(200) as f32) * 0.05 - 5.0).collect();
            let norm = LogSoftmax::of(&logits);
            top.select(&logits, k, &norm, &mut out);
            let want = naive_top(&logits, k);
            assert_eq!(out.len(), want.len(), "n={n} k={k}");
            for (got, want) in out.iter().zip(&want) {
                assert_eq!(got.id, want.0, "n={n} k={k}");
                assert!((got.logprob as f64 - want.1).abs() < 1e-6);
            }
        }
    }
}
