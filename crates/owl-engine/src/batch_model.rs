//! [`BatchModel`]: what the [`crate::Scheduler`] needs from a model — a KV cache of several
//! sequence slots and one forward call over a batch that mixes them — and [`OneSlot`], which
//! makes any single-sequence [`LanguageModel`] one.

use std::sync::Arc;

use owl_models::{Batch, LoraSet};

use crate::error::ModelError;
use crate::model::LanguageModel;

/// A causal language model over a KV cache of `n_slots()` sequence slots.
pub trait BatchModel {
    /// Logits per position.
    fn vocab_size(&self) -> usize;

    /// Positions one slot can hold.
    fn context_size(&self) -> usize;

    /// Sequence slots of the cache.
    fn n_slots(&self) -> usize;

    /// Most tokens one forward call may carry.
    fn max_batch_tokens(&self) -> usize;

    /// Positions currently cached in `slot`.
    fn slot_len(&self, slot: usize) -> usize;

    /// Drops positions `n..` of `slot`; returns how many are kept (`n`, or fewer where the
    /// cache cannot be cut there; 0 means the slot was cleared).
    fn truncate(&mut self, slot: usize, n: usize) -> usize;

    /// Makes `dst` hold the first `len` cached positions of `src` (prefix reuse across
    /// slots). Returns false where the cache cannot (`dst` is then empty).
    fn copy_prefix(&mut self, src: usize, dst: usize, len: usize) -> bool;

    /// Asks for batch-invariant forward passes (a token's logits do not depend on the other
    /// sequences of its batch) where the model offers them.
    fn set_batch_invariant(&mut self, _on: bool) {}

    /// Threads a forward pass keeps busy (`usize::MAX`: unknown, assume all of the
    /// machine's). The scheduler computes grammar masks beside the forward pass only where
    /// a core is left over: on a machine the pass fills, a second thread only steals time
    /// from the pass's own workers.
    fn compute_threads(&self) -> usize {
        usize::MAX
    }

    /// Width of the final hidden states ([`BatchModel::embed`]); 0: the model cannot embed.
    fn hidden_size(&self) -> usize {
        0
    }

    /// Runs `tokens` alone in `slot` (cleared before and after), with the adapters of
    /// `lora` if any, and writes the mean of their final hidden states to `mean`
    /// (`hidden_size()` floats).
    fn embed(
        &mut self,
        _slot: usize,
        _tokens: &[u32],
        _lora: Option<&Arc<LoraSet>>,
        _mean: &mut [f32],
    ) -> Result<(), ModelError> {
        Err("this model does not give hidden states".into())
    }

    /// Runs `batch` (every sequence continuing its slot's cached positions), writing the
    /// logits of the tokens that want them, in batch order, to `logits`
    /// (`[batch.n_logits()][vocab_size()]`).
    fn forward(&mut self, batch: &Batch, logits: &mut [f32]) -> Result<(), ModelError>;
}

/// A single-sequence [`LanguageModel`] as a [`BatchModel`] of one slot.
pub struct OneSlot<M: LanguageModel>(pub M);

impl<M: LanguageModel> BatchModel for OneSlot<M> {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    fn context_size(&self) -> usize {
        self.0.context_size()
    }

    fn n_slots(&self) -> usize {
        1
    }

    fn max_batch_tokens(&self) -> usize {
        usize::MAX
    }

    fn slot_len(&self, _slot: usize) -> usize {
        self.0.kv_len()
    }

    fn truncate(&mut self, _slot: usize, n: usize) -> usize {
        self.0.kv_truncate(n)
    }

    fn copy_prefix(&mut self, _src: usize, _dst: usize, _len: usize) -> bool {
        false
    }

    fn set_batch_invariant(&mut self, on: bool) {
        self.0.set_batch_invariant(on);
    }

    fn forward(&mut self, batch: &Batch, logits: &mut [f32]) -> Result<(), ModelError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.0.use_lora(batch.lora_of(0).cloned())?;
        if batch.seqs().iter().any(|&s| s != 0) {
            return Err("a one-slot model got a batch for another slot".into());
        }
        let start = self.0.kv_len();
        if batch.positions().iter().enumerate().any(|(i, &p)| p != start + i) {
            return Err(format!("batch positions do not continue the {start} cached ones").into());
        }
        let wants = batch.wants_logits();
        let first_output = wants.iter().position(|&w| w).unwrap_or(wants.len());
        if wants[first_output..].iter().any(|&w| !w) {
            return Err("a one-slot model returns logits for a suffix of the batch only".into());
        }
        self.0.forward(batch.tokens(), first_output, logits)
    }
}
