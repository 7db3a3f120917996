//! A tiny deterministic language model and decoder for driving the engine in tests.
//!
//! Logits at position p = `table[token_p]` (a bigram table) + `history_weight` x the count
//! of each id among the tokens at positions 0..=p. The second term makes the output depend
//! on the whole prefix (so BOS replacement and cache reuse are visible); the first makes
//! greedy chains easy to predict.

use owl_engine::rng::Xoshiro256StarStar;
use owl_engine::{ByteTableDecoder, LanguageModel, ModelError};

/// One call to `forward`, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kv_len: usize,
    pub tokens: Vec<u32>,
    pub first_output: usize,
}

#[derive(Debug, Clone)]
pub struct FakeModel {
    pub vocab: usize,
    pub n_ctx: usize,
    pub table: Vec<f32>,
    pub history_weight: f32,
    pub cache: Vec<u32>,
    pub calls: Vec<Call>,
    /// The cache can only be cut at multiples of this (1 = anywhere; 0 = only cleared).
    pub truncate_granularity: usize,
    /// Fail the forward that would write this position.
    pub fail_at: Option<usize>,
    /// Record every call in `calls` (off for allocation counting: recording allocates).
    pub record_calls: bool,
}

impl FakeModel {
    pub fn new(vocab: usize, n_ctx: usize, table: Vec<f32>, history_weight: f32) -> Self {
        assert_eq!(table.len(), vocab * vocab);
        FakeModel {
            vocab,
            n_ctx,
            table,
            history_weight,
            cache: Vec::with_capacity(n_ctx),
            calls: Vec::new(),
            truncate_granularity: 1,
            fail_at: None,
            record_calls: true,
        }
    }

    /// A random bigram table with values in [-4, 4) from `seed`.
    pub fn random(vocab: usize, n_ctx: usize, seed: u64, history_weight: f32) -> Self {
        let mut rng = Xoshiro256StarStar::seed_from_u64(seed);
        let table = (0..vocab * vocab).map(|_| (rng.next_f64() * 8.0 - 4.0) as f32).collect();
        Self::new(vocab, n_ctx, table, history_weight)
    }

    /// The logits after a given full context (independent of the cache: the reference).
    pub fn logits_after(&self, context: &[u32]) -> Vec<f32> {
        let mut row = vec![0.0; self.vocab];
        self.write_logits(context, &mut row);
        row
    }

    fn write_logits(&self, context: &[u32], row: &mut [f32]) {
        let last = *context.last().expect("non-empty context") as usize;
        row.copy_from_slice(&self.table[last * self.vocab..(last + 1) * self.vocab]);
        for &t in context {
            row[t as usize] += self.history_weight;
        }
    }

    pub fn forwarded_tokens(&self) -> usize {
        self.calls.iter().map(|c| c.tokens.len()).sum()
    }
}

impl LanguageModel for FakeModel {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn context_size(&self) -> usize {
        self.n_ctx
    }

    fn kv_len(&self) -> usize {
        self.cache.len()
    }

    fn kv_truncate(&mut self, n: usize) -> usize {
        let keep = match self.truncate_granularity {
            0 => 0,
            g => n.min(self.cache.len()) / g * g,
        };
        self.cache.truncate(keep);
        keep
    }

    fn forward(&mut self, tokens: &[u32], first_output: usize, logits: &mut [f32]) -> Result<(), ModelError> {
        assert!(!tokens.is_empty(), "engine sent an empty batch");
        assert!(first_output <= tokens.len());
        assert_eq!(logits.len(), (tokens.len() - first_output) * self.vocab, "logits buffer size");
        assert!(self.cache.len() + tokens.len() <= self.n_ctx, "engine overflowed the context");
        if self.record_calls {
            self.calls.push(Call { kv_len: self.cache.len(), tokens: tokens.to_vec(), first_output });
        }
        for (i, &t) in tokens.iter().enumerate() {
            assert!((t as usize) < self.vocab, "engine sent id {t} outside the vocabulary");
            if self.fail_at == Some(self.cache.len()) {
                return Err(format!("injected failure at position {}", self.cache.len()).into());
            }
            self.cache.push(t);
            if i >= first_output {
                let r = i - first_output;
                self.write_logits(&self.cache, &mut logits[r * self.vocab..(r + 1) * self.vocab]);
            }
        }
        Ok(())
    }
}

/// A decoder where token i is the i-th entry of `pieces`.
pub fn decoder(pieces: &[&[u8]]) -> ByteTableDecoder {
    ByteTableDecoder::new(pieces.iter().map(|p| p.to_vec()).collect())
}

/// Greedy chain computed directly from the model definition (no engine involved).
pub fn reference_greedy(model: &FakeModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut context = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let row = model.logits_after(&context);
        let mut best = 0;
        for (i, &l) in row.iter().enumerate() {
            if l > row[best] {
                best = i;
            }
        }
        out.push(best as u32);
        context.push(best as u32);
    }
    out
}
