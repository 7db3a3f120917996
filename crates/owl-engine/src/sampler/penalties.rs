//! Repetition, presence and frequency penalties over the last N tokens.
//!
//! Semantics of llama.cpp's `llama_sampler_penalties` (src/llama-sampling.cpp): for every
//! distinct token seen `count` times among the last `last_n` accepted tokens,
//!
//! ```text
//! logit = logit <= 0 ? logit * repeat : logit / repeat      (repetition, CTRL paper fixed for negatives)
//! logit -= count * frequency + (count > 0) * presence       (OpenAI's presence/frequency formula)
//! ```
//!
//! The window is a ring buffer with per-token counts kept up to date on every accept, so
//! applying the penalties costs O(last_n) per token, whatever the vocabulary size, and
//! nothing is allocated after construction.

#[derive(Debug, Clone)]
pub(crate) struct PenaltyWindow {
    /// The last `capacity` accepted tokens; `head` is the oldest once full.
    ring: Vec<u32>,
    capacity: usize,
    head: usize,
    /// Occurrences of each token inside the window.
    counts: Vec<u32>,
    /// Per-token stamp of the last `apply` that penalised it (each token once per call).
    stamps: Vec<u32>,
    stamp: u32,
}

/// The ring is preallocated up to this many entries; a larger window (e.g. "the whole
/// context") grows as tokens arrive instead of reserving an unchecked size up front.
const PREALLOCATED_WINDOW: usize = 4096;

impl PenaltyWindow {
    pub(crate) fn new(vocab_size: usize, capacity: usize) -> Self {
        PenaltyWindow {
            ring: Vec::with_capacity(capacity.min(PREALLOCATED_WINDOW)),
            capacity,
            head: 0,
            counts: vec![0; vocab_size],
            stamps: vec![0; vocab_size],
            stamp: 0,
        }
    }

    /// Empties the window (new request); `capacity` may change.
    pub(crate) fn reset(&mut self, capacity: usize) {
        for &t in &self.ring {
            self.counts[t as usize] = 0;
        }
        self.ring.clear();
        self.ring.reserve(capacity.min(PREALLOCATED_WINDOW));
        self.capacity = capacity;
        self.head = 0;
    }

    /// Records a token (ids outside the vocabulary are the caller's bug and are ignored).
    pub(crate) fn accept(&mut self, token: u32) {
        if self.capacity == 0 || token as usize >= self.counts.len() {
            return;
        }
        if self.ring.len() < self.capacity {
            self.ring.push(token);
        } else {
            let evicted = std::mem::replace(&mut self.ring[self.head], token);
            self.counts[evicted as usize] -= 1;
            self.head = (self.head + 1) % self.capacity;
        }
        self.counts[token as usize] += 1;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    /// Applies the penalties to a row of logits (index = id).
    pub(crate) fn apply(&mut self, logits: &mut [f32], repeat: f32, frequency: f32, presence: f32) {
        if self.ring.is_empty() || (repeat == 1.0 && frequency == 0.0 && presence == 0.0) {
            return;
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Wrapped after 4 billion calls: old stamps could collide, start over.
            self.stamps.iter_mut().for_each(|s| *s = 0);
            self.stamp = 1;
        }
        for &t in &self.ring {
            let t = t as usize;
            if self.stamps[t] == self.stamp {
                continue;
            }
            self.stamps[t] = self.stamp;
            let count = self.counts[t] as f32;
            let l = &mut logits[t];
            if *l <= 0.0 {
                *l *= repeat;
            } else {
                *l /= repeat;
            }
            *l -= count * frequency + presence;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<f32> {
        logits.to_vec()
    }

    #[test]
    fn llama_cpp_formula_by_hand() {
        let mut w = PenaltyWindow::new(4, 8);
        for t in [1, 1, 2, 1] {
            w.accept(t);
        }
        let mut c = cands(&[1.0, 2.0, -2.0, 3.0]);
        w.apply(&mut c, 2.0, 0.5, 0.25);
        // token 1: 2.0 / 2 - (3 * 0.5 + 0.25) = -0.75
        // token 2: -2.0 * 2 - (1 * 0.5 + 0.25) = -4.75
        assert_eq!(c, vec![1.0, -0.75, -4.75, 3.0]);
    }

    #[test]
    fn window_forgets_old_tokens() {
        let mut w = PenaltyWindow::new(5, 2);
        for t in [3, 3, 4, 0] {
            w.accept(t);
        }
        // Window now holds [4, 0]: token 3 has left it.
        let mut c = cands(&[1.0, 1.0, 1.0, 1.0, 1.0]);
        w.apply(&mut c, 1.0, 1.0, 0.0);
        assert_eq!(c, vec![0.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(w.len(), 2);
        w.reset(3);
        let mut c = cands(&[1.0; 5]);
        w.apply(&mut c, 2.0, 1.0, 1.0);
        assert!(c.iter().all(|&l| l == 1.0), "reset empties the window");
    }

    #[test]
    fn huge_window_does_not_reserve_its_size() {
        let mut w = PenaltyWindow::new(4, usize::MAX);
        w.reset(usize::MAX);
        for t in [1, 2, 1] {
            w.accept(t);
        }
        let mut c = cands(&[1.0; 4]);
        w.apply(&mut c, 1.0, 1.0, 0.0);
        assert_eq!(c, vec![1.0, -1.0, 0.0, 1.0]);
    }

    #[test]
    fn zero_window_disables() {
        let mut w = PenaltyWindow::new(3, 0);
        w.accept(1);
        let mut c = cands(&[1.0, 1.0, 1.0]);
        w.apply(&mut c, 2.0, 1.0, 1.0);
        assert!(c.iter().all(|&l| l == 1.0));
    }
}
