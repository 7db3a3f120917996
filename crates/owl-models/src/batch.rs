//! A batch for one forward call: tokens of one or more sequences, each with its position,
//! and which of them need logits. Prompt chunks and decode steps mix freely; a sequence's
//! tokens must continue its cached positions in order (validated by the forward call).
//! A sequence may name the LoRA adapters its tokens run with ([`Batch::set_lora`]).

use std::sync::Arc;

use crate::lora::LoraSet;

/// Tokens with (sequence slot, position) and a logits flag. Reuse one `Batch` (`clear`,
/// `push`) so that steady-state decoding allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    tokens: Vec<u32>,
    seqs: Vec<usize>,
    positions: Vec<usize>,
    logits: Vec<bool>,
    /// (sequence, adapters) for the sequences that run with adapters.
    loras: Vec<(usize, Arc<LoraSet>)>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Batch {
            tokens: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
            logits: Vec::with_capacity(n),
            loras: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.tokens.clear();
        self.seqs.clear();
        self.positions.clear();
        self.logits.clear();
        self.loras.clear();
    }

    /// Runs the tokens of `seq` in this batch with the adapters of `set` (an empty set, or
    /// none set, runs the base model).
    pub fn set_lora(&mut self, seq: usize, set: Arc<LoraSet>) {
        match self.loras.iter_mut().find(|(s, _)| *s == seq) {
            Some(entry) => entry.1 = set,
            None => self.loras.push((seq, set)),
        }
    }

    /// The adapters `seq` runs with in this batch.
    pub fn lora_of(&self, seq: usize) -> Option<&Arc<LoraSet>> {
        self.loras.iter().find(|(s, _)| *s == seq).map(|(_, set)| set)
    }

    /// Whether any sequence of the batch runs with adapters.
    pub fn has_lora(&self) -> bool {
        self.loras.iter().any(|(_, set)| !set.is_empty())
    }

    /// Adds `token` at `position` of sequence `seq`; `logits`: return its next-token logits.
    pub fn push(&mut self, token: u32, seq: usize, position: usize, logits: bool) {
        self.tokens.push(token);
        self.seqs.push(seq);
        self.positions.push(position);
        self.logits.push(logits);
    }

    /// Adds `tokens` of `seq` at positions `start..`, asking for logits at every position
    /// (`all_logits`) or only at the last.
    pub fn push_sequence(&mut self, seq: usize, start: usize, tokens: &[u32], all_logits: bool) {
        for (i, &t) in tokens.iter().enumerate() {
            self.push(t, seq, start + i, all_logits || i + 1 == tokens.len());
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn seqs(&self) -> &[usize] {
        &self.seqs
    }

    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    pub fn wants_logits(&self) -> &[bool] {
        &self.logits
    }

    /// Tokens whose logits the forward call returns, in batch order.
    pub fn n_logits(&self) -> usize {
        self.logits.iter().filter(|&&l| l).count()
    }
}
