//! [`ModelRunner`]: an owl-models [`Model`] with a [`KvCache`] of one or more sequence
//! slots, as a [`LanguageModel`] (slot 0) and a [`BatchModel`] (every slot) the engine can
//! drive.
//!
//! Batches longer than the model's `max_batch_tokens` are split into several forward calls
//! (the model sized its scratch for that many tokens). A cut of the cache that the model
//! refuses (a sliding-window ring that no longer holds the positions the cut would need)
//! clears the sequence instead; the session then runs the prompt again from the start.

use std::borrow::BorrowMut;
use std::sync::Arc;

use owl_models::{Batch, KvCache, KvDtype, LoraSet, Model, ModelError as OwlModelError};

use crate::batch_model::BatchModel;
use crate::error::ModelError;
use crate::model::LanguageModel;

/// The model (owned, or borrowed as `&mut Model`) and its cache.
pub struct ModelRunner<M: BorrowMut<Model> = Model> {
    model: M,
    kv: KvCache,
    batch: Batch,
    /// Adapters of the single-sequence ([`LanguageModel`]) path.
    lora: Option<Arc<LoraSet>>,
}

/// The sequence slot this runner uses in its cache.
const SEQ: usize = 0;

impl<M: BorrowMut<Model>> ModelRunner<M> {
    /// A runner with a cache of `n_ctx` positions stored as `dtype`.
    // owl-models' error type is large; it is returned once, at setup.
    #[allow(clippy::result_large_err)]
    pub fn new(model: M, n_ctx: usize, dtype: KvDtype) -> Result<Self, OwlModelError> {
        Self::with_slots(model, 1, n_ctx, dtype)
    }

    /// A runner with a cache of `n_slots` sequences of `n_ctx` positions each.
    #[allow(clippy::result_large_err)]
    pub fn with_slots(model: M, n_slots: usize, n_ctx: usize, dtype: KvDtype) -> Result<Self, OwlModelError> {
        let kv = model.borrow().new_kv_cache(n_slots, n_ctx, dtype)?;
        let batch = Batch::with_capacity(model.borrow().max_batch_tokens());
        Ok(ModelRunner { model, kv, batch, lora: None })
    }

    /// Runs the single-sequence ([`LanguageModel`]) forward passes with `lora` (perplexity
    /// of an adapted model); batches a scheduler builds name their own adapters. Clears the
    /// cache, which was computed without them.
    pub fn set_lora(&mut self, lora: Option<Arc<LoraSet>>) {
        self.kv.clear();
        self.lora = lora;
    }

    pub fn model(&self) -> &Model {
        self.model.borrow()
    }

    pub fn model_mut(&mut self) -> &mut Model {
        self.model.borrow_mut()
    }

    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// See [`KvCache::make_resident`].
    pub fn make_kv_cache_resident(&mut self) {
        self.kv.make_resident();
    }

    pub fn into_model(self) -> M {
        self.model
    }
}

impl<M: BorrowMut<Model>> LanguageModel for ModelRunner<M> {
    fn vocab_size(&self) -> usize {
        self.model.borrow().vocab_size()
    }

    fn context_size(&self) -> usize {
        self.kv.n_ctx()
    }

    fn kv_len(&self) -> usize {
        self.kv.seq_len(SEQ)
    }

    fn kv_truncate(&mut self, n: usize) -> usize {
        let len = self.kv.seq_len(SEQ);
        if n >= len {
            return len;
        }
        if n > 0 && self.kv.truncate_seq(SEQ, n).is_ok() {
            return n;
        }
        self.kv.clear();
        0
    }

    fn use_lora(&mut self, lora: Option<Arc<LoraSet>>) -> Result<(), ModelError> {
        self.lora = lora;
        Ok(())
    }

    fn forward(&mut self, tokens: &[u32], first_output: usize, logits: &mut [f32]) -> Result<(), ModelError> {
        let model = self.model.borrow_mut();
        let vocab = model.vocab_size();
        let max = model.max_batch_tokens().max(1);
        let total = logits.len();
        let mut row = 0;
        for (c, chunk) in tokens.chunks(max).enumerate() {
            let offset = c * max;
            let start = self.kv.seq_len(SEQ);
            self.batch.clear();
            for (i, &t) in chunk.iter().enumerate() {
                self.batch.push(t, SEQ, start + i, offset + i >= first_output);
            }
            if let Some(lora) = &self.lora {
                self.batch.set_lora(SEQ, Arc::clone(lora));
            }
            let rows = self.batch.n_logits();
            let out = logits.get_mut(row * vocab..(row + rows) * vocab).ok_or_else(|| {
                format!("logits buffer of {total} floats is too short for {} rows of {vocab}", row + rows)
            })?;
            model.forward(&self.batch, &mut self.kv, out)?;
            row += rows;
        }
        Ok(())
    }

    fn set_batch_invariant(&mut self, on: bool) {
        self.model.borrow_mut().set_batch_invariant(on);
    }
}

impl<M: BorrowMut<Model>> BatchModel for ModelRunner<M> {
    fn vocab_size(&self) -> usize {
        self.model.borrow().vocab_size()
    }

    fn context_size(&self) -> usize {
        self.kv.n_ctx()
    }

    fn n_slots(&self) -> usize {
        self.kv.n_seqs()
    }

    fn max_batch_tokens(&self) -> usize {
        self.model.borrow().max_batch_tokens()
    }

    fn compute_threads(&self) -> usize {
        self.model.borrow().pool().n_threads()
    }

    fn slot_len(&self, slot: usize) -> usize {
        self.kv.seq_len(slot)
    }

    fn truncate(&mut self, slot: usize, n: usize) -> usize {
        let len = self.kv.seq_len(slot);
        if n >= len {
            return len;
        }
        if n > 0 && self.kv.truncate_seq(slot, n).is_ok() {
            return n;
        }
        let _ = self.kv.clear_seq(slot);
        self.kv.seq_len(slot)
    }

    fn copy_prefix(&mut self, src: usize, dst: usize, len: usize) -> bool {
        if self.kv.copy_prefix(src, dst, len).is_ok() {
            return true;
        }
        let _ = self.kv.clear_seq(dst);
        false
    }

    fn set_batch_invariant(&mut self, on: bool) {
        self.model.borrow_mut().set_batch_invariant(on);
    }

    fn hidden_size(&self) -> usize {
        self.model.borrow().config().hidden_size
    }

    fn embed(
        &mut self,
        slot: usize,
        tokens: &[u32],
        lora: Option<&Arc<LoraSet>>,
        mean: &mut [f32],
    ) -> Result<(), ModelError> {
        let model = self.model.borrow_mut();
        let h = model.config().hidden_size;
        if mean.len() != h {
            return Err(format!("{} floats for a hidden size of {h}", mean.len()).into());
        }
        self.kv.clear_seq(slot)?;
        let max = model.max_batch_tokens().max(1);
        let mut hidden = vec![0f32; max.min(tokens.len()) * h];
        let mut sum = vec![0f64; h];
        let mut result = Ok(());
        for (c, chunk) in tokens.chunks(max).enumerate() {
            self.batch.clear();
            self.batch.push_sequence(slot, c * max, chunk, true);
            if let Some(lora) = lora {
                self.batch.set_lora(slot, Arc::clone(lora));
            }
            let out = &mut hidden[..chunk.len() * h];
            if let Err(e) = model.forward_hidden(&self.batch, &mut self.kv, out) {
                result = Err(e);
                break;
            }
            for row in out.chunks_exact(h) {
                sum.iter_mut().zip(row).for_each(|(s, &v)| *s += f64::from(v));
            }
        }
        let _ = self.kv.clear_seq(slot);
        result?;
        let n = tokens.len().max(1) as f64;
        mean.iter_mut().zip(&sum).for_each(|(m, &s)| *m = (s / n) as f32);
        Ok(())
    }

    fn forward(&mut self, batch: &Batch, logits: &mut [f32]) -> Result<(), ModelError> {
        Ok(self.model.borrow_mut().forward(batch, &mut self.kv, logits)?)
    }
}
