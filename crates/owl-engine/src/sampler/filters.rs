//! The chain's steps over a candidate buffer, each with llama.cpp's semantics
//! (src/llama-sampling.cpp: `llama_sampler_top_p/min_p/temp/dist`; top-k is a
//! [`crate::select::TopK`] over the logits).
//!
//! The buffer is either the whole vocabulary in id order, or the survivors of top-k sorted
//! by logit descending with ties by lower id. Each step keeps one of these two canonical
//! orders (filters `retain`, top-p sorts what it keeps), so the draw at the end sees a
//! sequence that depends on the logits alone, whatever selection algorithm got there.
//!
//! Weights are `exp_f32(logit - max)` from [`crate::fastmath`] everywhere (bit-identical on
//! every platform), summed in f64.

use std::cmp::Ordering;

use crate::fastmath::{exp_f32, max_f32, sum_f32};
use crate::rng::Xoshiro256StarStar;

/// A token still in the running, with its (possibly modified) logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// Descending logit, ties by ascending id. Logits are never NaN in the buffer (the sampler
/// maps NaN to -inf on entry), so `partial_cmp` always answers; -0.0 and +0.0 tie.
pub(crate) fn by_logit_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.partial_cmp(&a.logit).unwrap_or(Ordering::Equal).then(a.id.cmp(&b.id))
}

/// Whether the buffer is in id order or sorted by [`by_logit_desc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    ById,
    ByLogitDesc,
}

fn max_logit(cands: &[Candidate], order: Order) -> f32 {
    match order {
        Order::ByLogitDesc => cands.first().map_or(f32::NEG_INFINITY, |c| c.logit),
        Order::ById => cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.logit)),
    }
}

/// Fills `weights` with `exp(logit - max)` of every candidate; returns their sum.
fn weigh(cands: &[Candidate], max: f32, weights: &mut Vec<f32>) -> f64 {
    weights.clear();
    weights.extend(cands.iter().map(|c| exp_f32(c.logit - max)));
    sum_f32(weights)
}

/// The id with the highest value, ties to the lowest id (llama.cpp's greedy rule);
/// `None` when every value is -inf (NaN never wins).
pub(crate) fn argmax(values: &[f32]) -> Option<u32> {
    // Two simple passes (a vectorized max, then the first position equal to it) beat one
    // pass that tracks the index.
    let max = max_f32(values);
    if max == f32::NEG_INFINITY {
        return None;
    }
    values.iter().position(|&v| v == max).map(|i| i as u32)
}

/// Histogram buckets for top-p over a whole vocabulary: `BUCKET_SCALE` buckets per unit of
/// logit below the maximum, the last one collecting everything further down.
const BUCKETS: usize = 1024;
const BUCKET_SCALE: f32 = 32.0;

fn bucket(max: f32, logit: f32) -> usize {
    let d = (max - logit) * BUCKET_SCALE;
    if d < (BUCKETS - 1) as f32 {
        d as usize
    } else {
        BUCKETS - 1
    }
}

/// Buffers for top-p and the draw, allocated once per sampler.
#[derive(Debug, Clone)]
pub(crate) struct Scratch {
    pub(crate) weights: Vec<f32>,
    mass: Vec<f64>,
}

impl Scratch {
    pub(crate) fn new(vocab_size: usize) -> Self {
        Scratch { weights: Vec::with_capacity(vocab_size), mass: vec![0.0; BUCKETS] }
    }
}

/// The shortest prefix of `sorted` whose weight reaches `target`.
fn nucleus_len(sorted: &[Candidate], max: f32, target: f64) -> Option<usize> {
    let mut cum = 0.0f64;
    for (i, c) in sorted.iter().enumerate() {
        cum += f64::from(exp_f32(c.logit - max));
        if cum >= target {
            return Some(i + 1);
        }
    }
    None
}

/// Nucleus: the shortest most-likely prefix whose probability mass (softmax over the
/// current candidates, temperature 1) reaches `p`; at least one token. p >= 1: no-op.
///
/// Over a whole vocabulary (no top-k before) the buffer is not sorted: a histogram of the
/// weights by distance below the maximum finds how far down the nucleus reaches, and only
/// the candidates above that line (plus one bucket of margin) are sorted. The cut is then
/// taken exactly as on a fully sorted buffer (same order, same sums), so it does not depend
/// on the histogram.
pub(crate) fn top_p(cands: &mut Vec<Candidate>, p: f32, order: &mut Order, scratch: &mut Scratch) {
    if p >= 1.0 || cands.len() <= 1 {
        return;
    }
    let max = max_logit(cands, *order);
    if max == f32::NEG_INFINITY {
        return; // nothing is possible; the draw reports it
    }
    let total = weigh(cands, max, &mut scratch.weights);
    let target = f64::from(p) * total;
    let n = cands.len();
    let keep = if *order == Order::ByLogitDesc {
        nucleus_len(cands, max, target).unwrap_or(n)
    } else {
        let mass = &mut scratch.mass;
        mass.iter_mut().for_each(|m| *m = 0.0);
        for (c, &w) in cands.iter().zip(&scratch.weights) {
            mass[bucket(max, c.logit)] += f64::from(w);
        }
        let mut cum = 0.0;
        let mut line = BUCKETS - 1;
        for (b, &m) in mass.iter().enumerate() {
            cum += m;
            if cum >= target {
                line = b;
                break;
            }
        }
        let line = line + 1; // margin for the different summation order below
        let mut found = None;
        if line < BUCKETS - 1 {
            // Move the candidates above the line to the front, sort them, cut.
            let mut k = 0;
            for i in 0..n {
                if bucket(max, cands[i].logit) <= line {
                    cands.swap(i, k);
                    k += 1;
                }
            }
            cands[..k].sort_unstable_by(by_logit_desc);
            found = nucleus_len(&cands[..k], max, target);
        }
        match found {
            Some(k) => k,
            None => {
                cands.sort_unstable_by(by_logit_desc);
                nucleus_len(cands, max, target).unwrap_or(n)
            }
        }
    };
    cands.truncate(keep.max(1));
    *order = Order::ByLogitDesc;
}

/// Min-p: drops tokens whose probability is below `p` times the most likely one's, i.e.
/// whose logit is below `max + ln p`. The maximum always stays. p <= 0: no-op.
pub(crate) fn min_p(cands: &mut Vec<Candidate>, p: f32, order: Order) {
    if p <= 0.0 || cands.len() <= 1 {
        return;
    }
    let threshold = max_logit(cands, order) + p.ln();
    cands.retain(|c| c.logit >= threshold);
}

/// Divides every logit by the temperature (t > 0; 1 is a no-op).
pub(crate) fn temperature(cands: &mut [Candidate], t: f32) {
    if t == 1.0 {
        return;
    }
    for c in cands.iter_mut() {
        c.logit /= t;
    }
}

/// Draws one candidate with probability softmax(logits): one uniform in [0, 1) scaled by
/// the sum of weights, then a walk of the cumulative sum in buffer order. `None` when no
/// candidate has positive weight.
pub(crate) fn draw(
    cands: &[Candidate],
    order: Order,
    scratch: &mut Scratch,
    rng: &mut Xoshiro256StarStar,
) -> Option<u32> {
    let max = max_logit(cands, order);
    if max == f32::NEG_INFINITY {
        return None;
    }
    let total = weigh(cands, max, &mut scratch.weights);
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let target = rng.next_f64() * total;
    let mut cum = 0.0f64;
    let mut last_positive = None;
    for (c, &w) in cands.iter().zip(&scratch.weights) {
        if w > 0.0 {
            cum += f64::from(w);
            last_positive = Some(c.id);
            if target < cum {
                return Some(c.id);
            }
        }
    }
    // Rounding left the target at the very top of the range: the last possible token.
    last_positive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<Candidate> {
        logits.iter().enumerate().map(|(i, &l)| Candidate { id: i as u32, logit: l }).collect()
    }

    fn ids(c: &[Candidate]) -> Vec<u32> {
        c.iter().map(|c| c.id).collect()
    }

    #[test]
    fn argmax_prefers_lowest_id_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), None);
        assert_eq!(argmax(&[-0.0, 0.0]), Some(0));
        assert_eq!(argmax(&[f32::NAN, -5.0]), Some(1));
    }

    #[test]
    fn top_p_cuts_at_the_token_that_reaches_p() {
        // probs = [0.2, 0.5, 0.3] by construction (logits = ln p).
        let logits = [0.2f32.ln(), 0.5f32.ln(), 0.3f32.ln()];
        let mut scratch = Scratch::new(3);
        // Off the exact edges 0.5 and 0.8, which f32 logs blur by ~1e-8.
        for (p, want) in
            [(0.4f32, vec![1]), (0.6, vec![1, 2]), (0.79, vec![1, 2]), (0.81, vec![1, 2, 0]), (0.99, vec![1, 2, 0])]
        {
            for start in [Order::ById, Order::ByLogitDesc] {
                let mut c = cands(&logits);
                if start == Order::ByLogitDesc {
                    c.sort_by(by_logit_desc);
                }
                let mut order = start;
                top_p(&mut c, p, &mut order, &mut scratch);
                assert_eq!(ids(&c), want, "p = {p}, {start:?}");
                assert_eq!(order, Order::ByLogitDesc);
            }
        }
        let mut c = cands(&logits);
        let mut order = Order::ById;
        top_p(&mut c, 1.0, &mut order, &mut scratch);
        assert_eq!(ids(&c), vec![0, 1, 2]);
        assert_eq!(order, Order::ById);
        top_p(&mut c, 0.0, &mut order, &mut scratch);
        assert_eq!(ids(&c), vec![1], "at least one token stays");
    }

    #[test]
    fn top_p_histogram_equals_a_full_sort() {
        let mut rng = Xoshiro256StarStar::seed_from_u64(11);
        let mut scratch = Scratch::new(50_000);
        for &n in &[100usize, 129, 1000, 50_000] {
            for &spread in &[0.01f32, 0.3, 3.0, 60.0] {
                for &p in &[0.05f32, 0.5, 0.9, 0.999] {
                    let logits: Vec<f32> = (0..n).map(|_| (rng.below(1000) as f32) * spread / 100.0).collect();
                    let mut fast = cands(&logits);
                    let mut order = Order::ById;
                    top_p(&mut fast, p, &mut order, &mut scratch);
                    // Reference: sort everything with f64 exp, then cut.
                    let mut full = cands(&logits);
                    let max = full.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.logit));
                    let total: f64 = full.iter().map(|c| (f64::from(c.logit) - f64::from(max)).exp()).sum();
                    full.sort_by(by_logit_desc);
                    let mut cum = 0.0;
                    let mut keep = full.len();
                    for (i, c) in full.iter().enumerate() {
                        cum += (f64::from(c.logit) - f64::from(max)).exp();
                        if cum >= f64::from(p) * total {
                            keep = i + 1;
                            break;
                        }
                    }
                    full.truncate(keep);
                    // The f32 exponentials may move a cut that sits within ~1e-7 of p.
                    let diff = fast.len().abs_diff(full.len());
                    assert!(diff <= 1, "n = {n}, spread = {spread}, p = {p}: {} vs {}", fast.len(), full.len());
                    let common = fast.len().min(full.len());
                    assert_eq!(fast[..common], full[..common]);
                }
            }
        }
    }

    #[test]
    fn min_p_is_relative_to_the_best_token() {
        // probs proportional to [1, 0.5, 0.09, 0.2]: min_p 0.1 keeps ratios >= 0.1.
        let logits = [0.0f32, 0.5f32.ln(), 0.09f32.ln(), 0.2f32.ln()];
        let mut c = cands(&logits);
        min_p(&mut c, 0.1, Order::ById);
        assert_eq!(ids(&c), vec![0, 1, 3], "order kept");
        let mut c = cands(&logits);
        min_p(&mut c, 1.0, Order::ById);
        assert_eq!(ids(&c), vec![0]);
        let mut c = cands(&logits);
        min_p(&mut c, 0.0, Order::ById);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn draw_follows_the_softmax() {
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let c = cands(&logits);
        let mut rng = Xoshiro256StarStar::seed_from_u64(5);
        let mut scratch = Scratch::new(3);
        let mut counts = [0usize; 3];
        let n = 60_000;
        for _ in 0..n {
            counts[draw(&c, Order::ById, &mut scratch, &mut rng).expect("possible") as usize] += 1;
        }
        for (i, &want) in [0.5f64, 0.3, 0.2].iter().enumerate() {
            let got = counts[i] as f64 / n as f64;
            // sd of a frequency at n = 60k is <= 0.002: 0.01 is five of them.
            assert!((got - want).abs() < 0.01, "token {i}: {got} vs {want}");
        }
    }

    #[test]
    fn draw_never_picks_impossible_tokens() {
        let c = cands(&[f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, -200.0]);
        let mut rng = Xoshiro256StarStar::seed_from_u64(9);
        let mut scratch = Scratch::new(4);
        for _ in 0..1000 {
            assert_eq!(draw(&c, Order::ById, &mut scratch, &mut rng), Some(1));
        }
        let none = cands(&[f32::NEG_INFINITY; 2]);
        assert_eq!(draw(&none, Order::ById, &mut scratch, &mut rng), None);
    }

    #[test]
    fn temperature_divides() {
        let mut c = cands(&[2.0, -4.0]);
        temperature(&mut c, 0.5);
        assert_eq!(c[0].logit, 4.0);
        assert_eq!(c[1].logit, -8.0);
    }
}
