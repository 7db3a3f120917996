//! Continuous batching: one forward call per step over every active sequence.
//!
//! A [`Scheduler`] owns a [`BatchModel`] with `n_slots` sequence slots. Requests
//! ([`SeqRequest`]) wait in a bounded queue until a slot is free; each [`Scheduler::step`]
//!
//! 1. admits waiting requests into free slots, reusing cached prefixes (below);
//! 2. builds one batch: first the decode step of every sequence that has sampled a token
//!    (one token each), then prompt chunks of admitted sequences, oldest first, within the
//!    model's token budget — so new prompts join while others decode (chunked prefill);
//! 3. runs one forward call, then samples every sequence whose logits came back and reports
//!    each token ([`SchedulerEvent::Token`]); the caller's answer ([`Verdict`]) may stop it;
//! 4. ends sequences (EOG, token limit, full context, stop, cancellation) and frees their
//!    slots at once, so a request that went away frees its slot within one step.
//!
//! **Prefix reuse.** A slot keeps its cache after its sequence ends. A new request goes to
//! the free slot whose cached tokens share the longest prefix with its prompt; where another
//! slot (free or busy) shares a longer one, that prefix is copied over. Only the rest of the
//! prompt is computed. A system prompt or the earlier turns of a chat are thereby computed
//! once. (llama.cpp's server keeps a prompt per slot the same way; vLLM's paged blocks share
//! prefixes without the copy, at the price of a paged attention kernel.)
//!
//! **Batch invariance.** The model runs batch-invariant ([`BatchModel::set_batch_invariant`]):
//! decode steps are listed first and take the one-token kernels; a prompt always runs in
//! pieces of at least two tokens (a reused prefix leaves at least two to compute, a chunk
//! never leaves one behind), which take the many-token kernels. A greedy reply is therefore
//! the same whether its request ran alone or beside others.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use owl_models::{Batch, LoraSet};

use crate::batch_model::BatchModel;
use crate::error::EngineError;
use crate::grammar::Constraint;
use crate::logprobs::{LogSoftmax, TokenLogprob, TopLogprobs};
use crate::sampler::Sampler;
use crate::session::{fit_prompt, GenerateParams, Timings};
use crate::stop::StopReason;

/// A request's handle, unique within its scheduler.
pub type SeqId = u64;

/// Limits of a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most tokens per forward call (at most the model's own limit).
    pub max_batch_tokens: usize,
    /// Most requests waiting for a slot (beyond those that free slots take at the next
    /// step); beyond it [`Scheduler::submit`] refuses ([`EngineError::QueueFull`]).
    pub max_queue: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { max_batch_tokens: 512, max_queue: 64 }
    }
}

/// One generation request: prompt ids and what to do with them. `params.stop` is not read
/// here: stop strings are text, matched by the caller ([`crate::TextStream`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SeqRequest {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
}

/// A sampled token as the scheduler reports it.
#[derive(Debug, Clone, Copy)]
pub struct Sampled<'a> {
    pub id: u32,
    /// Log-probability under the full softmax at temperature 1 (when asked for).
    pub logprob: Option<f32>,
    /// The most likely alternatives (when asked for).
    pub top: &'a [TokenLogprob],
}

/// How a sequence ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqOutcome {
    /// The prompt as run (after any truncation).
    pub prompt_ids: Vec<u32>,
    /// Generated ids, EOG excluded.
    pub ids: Vec<u32>,
    pub stop_reason: StopReason,
    pub timings: Timings,
    /// The sampler's seed.
    pub seed: u64,
}

/// What a step reports.
#[derive(Debug, Clone, Copy)]
pub enum SchedulerEvent<'a> {
    Token { seq: SeqId, token: Sampled<'a> },
    Finished { seq: SeqId, outcome: &'a SeqOutcome },
}

/// The caller's answer to a token: go on, or end the sequence with a reason (a stop string
/// matched, the client went away).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Continue,
    Stop(StopReason),
}

/// Counters since the scheduler was made (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedulerStats {
    pub steps: u64,
    pub admitted: u64,
    pub finished: u64,
    /// Prompt tokens of admitted requests.
    pub prompt_tokens: u64,
    /// Of those, tokens whose KV entries were reused instead of computed.
    pub cached_prompt_tokens: u64,
    pub generated_tokens: u64,
}

impl SchedulerStats {
    /// Share of prompt tokens served from the prefix cache.
    pub fn prefix_hit_rate(&self) -> f64 {
        if self.prompt_tokens == 0 {
            0.0
        } else {
            self.cached_prompt_tokens as f64 / self.prompt_tokens as f64
        }
    }
}

struct Active {
    id: SeqId,
    /// Admission order: prompt chunks go oldest first.
    order: u64,
    prompt: Vec<u32>,
    /// Prompt tokens in the slot's cache.
    prefilled: usize,
    /// A sampled token not yet run through the model.
    pending: Option<u32>,
    params: GenerateParams,
    sampler: Sampler,
    ids: Vec<u32>,
    timings: Timings,
    admitted: Instant,
    decoding: Option<Instant>,
    stop: Option<StopReason>,
}

struct Slot {
    /// The tokens whose KV entries the slot holds, in order.
    cached: Vec<u32>,
    /// The adapters those entries were computed with.
    lora: Option<Arc<LoraSet>>,
    active: Option<Active>,
    /// When the slot last took a request (the least recently used is reused first).
    used: u64,
}

struct Waiting {
    id: SeqId,
    request: SeqRequest,
    sampler: Sampler,
}

/// Continuous batching over a [`BatchModel`]; see the module docs.
pub struct Scheduler<M: BatchModel> {
    model: M,
    config: SchedulerConfig,
    slots: Vec<Slot>,
    queue: VecDeque<Waiting>,
    next_id: SeqId,
    clock: u64,
    batch: Batch,
    /// Slot of each logits row of the current batch.
    rows: Vec<usize>,
    logits: Vec<f32>,
    top: TopLogprobs,
    top_buf: Vec<TokenLogprob>,
    stats: SchedulerStats,
}

impl<M: BatchModel> Scheduler<M> {
    /// A scheduler over `model`, whose slots are cleared and which is switched to
    /// batch-invariant forward passes.
    pub fn new(mut model: M, config: SchedulerConfig) -> Result<Self, EngineError> {
        let n_slots = model.n_slots();
        if n_slots == 0 {
            return Err(EngineError::invalid("parallel", 0, "needs at least one sequence slot"));
        }
        let max_batch_tokens = config.max_batch_tokens.min(model.max_batch_tokens());
        // Every decode step plus a two-token prompt piece must fit, or prompts would starve.
        if max_batch_tokens < n_slots + 2 {
            return Err(EngineError::invalid(
                "batch size",
                max_batch_tokens,
                "must exceed the number of parallel sequences by at least 2",
            ));
        }
        for s in 0..n_slots {
            if model.truncate(s, 0) != 0 || model.slot_len(s) != 0 {
                return Err(EngineError::CacheMismatch { got: model.slot_len(s), expected: 0 });
            }
        }
        model.set_batch_invariant(true);
        let slots = (0..n_slots).map(|_| Slot { cached: Vec::new(), lora: None, active: None, used: 0 }).collect();
        Ok(Scheduler {
            model,
            config: SchedulerConfig { max_batch_tokens, ..config },
            slots,
            queue: VecDeque::new(),
            next_id: 1,
            clock: 0,
            batch: Batch::with_capacity(max_batch_tokens),
            rows: Vec::with_capacity(max_batch_tokens),
            logits: Vec::new(),
            top: TopLogprobs::new(),
            top_buf: Vec::new(),
            stats: SchedulerStats::default(),
        })
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, e.g. to change threads. Touching its cache here is noticed: slots whose
    /// length no longer matches start from empty.
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    pub fn into_model(self) -> M {
        self.model
    }

    pub fn context_size(&self) -> usize {
        self.model.context_size()
    }

    pub fn n_slots(&self) -> usize {
        self.slots.len()
    }

    pub fn stats(&self) -> SchedulerStats {
        self.stats
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Sequences holding a slot.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.active.is_some()).count()
    }

    /// Whether a step has anything to do.
    pub fn has_work(&self) -> bool {
        !self.queue.is_empty() || self.slots.iter().any(|s| s.active.is_some())
    }

    /// The tokens cached in `slot`.
    pub fn cached_tokens(&self, slot: usize) -> &[u32] {
        self.slots.get(slot).map_or(&[], |s| &s.cached)
    }

    /// Empties every idle slot's cache (a running sequence keeps its own).
    pub fn clear_cache(&mut self) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.active.is_none() {
                self.model.truncate(i, 0);
                slot.cached.clear();
            }
        }
    }

    /// Queues a request. Errors, before anything runs: an empty prompt, an id outside the
    /// vocabulary, a prompt longer than the context (unless `params.overflow` truncates),
    /// invalid sampling parameters, a full queue.
    pub fn submit(&mut self, request: SeqRequest) -> Result<SeqId, EngineError> {
        let vocab = self.model.vocab_size();
        let n_ctx = self.model.context_size();
        if request.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if let Some(&id) = request.prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange { id, vocab_size: vocab, what: "prompt" });
        }
        if n_ctx == 0 {
            let needed = request.prompt.len() + 1;
            return Err(EngineError::ContextTooSmall { what: "generation".into(), needed, n_ctx });
        }
        let prompt = fit_prompt(&request.prompt, n_ctx, &request.params)?;
        let sampler = Sampler::new(vocab, request.params.sampling.clone())?;
        // Requests that free slots will take at the next step do not count as waiting.
        let free = self.slots.iter().filter(|s| s.active.is_none()).count();
        let waiting = self.queue.len().saturating_sub(free);
        if self.queue.len() >= free + self.config.max_queue {
            return Err(EngineError::QueueFull { waiting });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Waiting { id, request: SeqRequest { prompt, ..request }, sampler });
        Ok(id)
    }

    /// An embedding of `tokens`: the mean of their final hidden states (under the adapters
    /// of `lora`, if any), L2-normalised, run alone in a free slot (whose cached prefix is
    /// given up). `Ok(None)`: every slot is
    /// busy; ask again after a step. Errors: an empty input, ids outside the vocabulary,
    /// more tokens than a slot's context, a model without hidden states.
    pub fn embed(&mut self, tokens: &[u32], lora: Option<&Arc<LoraSet>>) -> Result<Option<Vec<f32>>, EngineError> {
        let vocab = self.model.vocab_size();
        let n_ctx = self.model.context_size();
        let h = self.model.hidden_size();
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange { id, vocab_size: vocab, what: "input" });
        }
        if tokens.len() > n_ctx {
            return Err(EngineError::PromptTooLong { prompt_tokens: tokens.len(), n_ctx });
        }
        if h == 0 {
            return Err(EngineError::Model { position: 0, source: "this model does not give hidden states".into() });
        }
        let free =
            (0..self.slots.len()).filter(|&i| self.slots[i].active.is_none()).min_by_key(|&i| self.slots[i].used);
        let Some(slot) = free else { return Ok(None) };
        let mut mean = vec![0f32; h];
        self.slots[slot].cached.clear();
        self.slots[slot].lora = None;
        let result = self.model.embed(slot, tokens, lora, &mut mean);
        if self.model.slot_len(slot) != 0 {
            self.model.truncate(slot, 0);
        }
        result.map_err(|source| EngineError::Model { position: 0, source })?;
        let norm = mean.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        if norm > 0.0 {
            mean.iter_mut().for_each(|v| *v = (f64::from(*v) / norm) as f32);
        }
        Ok(Some(mean))
    }

    /// Ends a request: a waiting one leaves the queue at once (true), a running one ends at
    /// the next step as [`StopReason::Cancelled`] and frees its slot there. False: unknown
    /// (already finished).
    pub fn cancel(&mut self, seq: SeqId) -> bool {
        if let Some(i) = self.queue.iter().position(|w| w.id == seq) {
            self.queue.remove(i);
            return true;
        }
        for slot in &mut self.slots {
            if let Some(a) = slot.active.as_mut().filter(|a| a.id == seq) {
                a.stop.get_or_insert(StopReason::Cancelled);
                return true;
            }
        }
        false
    }

    /// Ends every request (a server shutting down): the waiting ones leave the queue at
    /// once and are returned, the running ones end at the next step as
    /// [`StopReason::Cancelled`], reported like any finished sequence.
    pub fn cancel_all(&mut self) -> Vec<SeqId> {
        for slot in &mut self.slots {
            if let Some(a) = slot.active.as_mut() {
                a.stop.get_or_insert(StopReason::Cancelled);
            }
        }
        self.queue.drain(..).map(|w| w.id).collect()
    }

    /// One step (see the module docs). `on_event` hears every token and every finished
    /// sequence (cancelled waiting requests are not reported). On a forward error every
    /// running sequence is dropped without a report and the error returned.
    pub fn step<F>(&mut self, mut on_event: F) -> Result<(), EngineError>
    where
        F: FnMut(SchedulerEvent<'_>) -> Verdict,
    {
        self.finish_stopped(&mut on_event);
        // An idle slot whose cache was changed behind our back starts from empty.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.active.is_none() && self.model.slot_len(i) != slot.cached.len() {
                self.model.truncate(i, 0);
                slot.cached.clear();
            }
        }
        self.admit();
        self.finish_stopped(&mut on_event);
        if !self.build_batch() {
            return Ok(());
        }
        let vocab = self.model.vocab_size();
        let n_logits = self.rows.len();
        self.logits.resize(n_logits * vocab, 0.0);
        let logits = &mut self.logits[..n_logits * vocab];
        if let Err(source) = forward_beside_masks(&mut self.model, &self.batch, logits, &mut self.slots, &self.rows) {
            let position = self.batch.positions().first().copied().unwrap_or(0);
            self.drop_all();
            return Err(EngineError::Model { position, source });
        }
        self.stats.steps += 1;
        // The cache now holds the batch.
        for t in 0..self.batch.len() {
            let slot = &mut self.slots[self.batch.seqs()[t]];
            slot.cached.push(self.batch.tokens()[t]);
            if let Some(a) = slot.active.as_mut() {
                if a.pending.take().is_none() {
                    a.prefilled += 1;
                }
            }
        }
        for s in 0..self.slots.len() {
            if self.model.slot_len(s) != self.slots[s].cached.len() {
                let (got, expected) = (self.model.slot_len(s), self.slots[s].cached.len());
                self.drop_all();
                return Err(EngineError::CacheMismatch { got, expected });
            }
        }
        for r in 0..n_logits {
            self.sample_row(r, &mut on_event)?;
        }
        self.finish_stopped(&mut on_event);
        Ok(())
    }

    /// Moves waiting requests into free slots, reusing the longest cached prefix.
    fn admit(&mut self) {
        while !self.queue.is_empty() {
            let free: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].active.is_none()).collect();
            if free.is_empty() {
                return;
            }
            let Some(Waiting { id, request, sampler }) = self.queue.pop_front() else { return };
            let prompt = request.prompt;
            // At most len - 2 reused (len - 1 for a one-token prompt... which keeps none):
            // the rest runs as one piece of two or more tokens (batch invariance).
            let reusable = prompt.len().saturating_sub(2);
            // A cache computed under other adapters holds other keys and values.
            let lora = request.params.lora.clone().filter(|l| !l.is_empty());
            let shared = |s: &Slot| {
                if s.lora != lora {
                    return 0;
                }
                common_prefix_len(&s.cached, &prompt).min(reusable)
            };
            // The free slot with the longest shared prefix, else the least recently used.
            let &dst = free
                .iter()
                .max_by_key(|&&i| (shared(&self.slots[i]), std::cmp::Reverse(self.slots[i].used)))
                .unwrap_or(&free[0]);
            let mut keep = shared(&self.slots[dst]);
            let best = (0..self.slots.len()).filter(|&i| i != dst).max_by_key(|&i| shared(&self.slots[i]));
            if let Some(src) = best {
                let len = shared(&self.slots[src]);
                if len > keep {
                    if self.model.copy_prefix(src, dst, len) {
                        let prefix = self.slots[src].cached[..len].to_vec();
                        self.slots[dst].cached = prefix;
                        keep = len;
                    } else {
                        self.slots[dst].cached.clear();
                        keep = 0;
                    }
                }
            }
            let kept = self.model.truncate(dst, keep).min(keep);
            let slot = &mut self.slots[dst];
            slot.cached.truncate(kept);
            if self.model.slot_len(dst) != kept {
                self.model.truncate(dst, 0);
                slot.cached.clear();
            }
            let kept = slot.cached.len();
            slot.lora = lora;
            self.clock += 1;
            slot.used = self.clock;
            let mut sampler = sampler;
            // Penalties look at the prompt too (only the window's worth matters).
            let window = request.params.sampling.repeat_last_n;
            for &t in &prompt[prompt.len().saturating_sub(window)..] {
                sampler.accept(t);
            }
            self.stats.admitted += 1;
            self.stats.prompt_tokens += prompt.len() as u64;
            self.stats.cached_prompt_tokens += kept as u64;
            slot.active = Some(Active {
                id,
                order: self.clock,
                prefilled: kept,
                prompt,
                pending: None,
                params: request.params,
                sampler,
                ids: Vec::new(),
                timings: Timings { cached_tokens: kept, ..Timings::default() },
                admitted: Instant::now(),
                decoding: None,
                stop: None,
            });
            // A request with no tokens to generate ends here, before its prompt runs.
            let a = slot.active.as_mut().filter(|a| a.params.max_tokens == Some(0));
            if let Some(a) = a {
                a.stop = Some(StopReason::MaxTokens);
            }
        }
    }

    /// Fills the batch: decode steps first, then prompt pieces by age. False: nothing to run.
    fn build_batch(&mut self) -> bool {
        self.batch.clear();
        self.rows.clear();
        let budget = self.config.max_batch_tokens;
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(token) = slot.active.as_ref().and_then(|a| a.pending) {
                self.batch.push(token, i, slot.cached.len(), true);
                self.rows.push(i);
            }
            if let (Some(lora), Some(_)) = (&slot.lora, &slot.active) {
                self.batch.set_lora(i, Arc::clone(lora));
            }
        }
        // One-token prompts first: they join the leading run of one-token sequences, as
        // they would run alone.
        let mut prefilling: Vec<(bool, u64, usize)> = (self.slots.iter().enumerate())
            .filter_map(|(i, s)| {
                let a = s.active.as_ref().filter(|a| a.prefilled < a.prompt.len())?;
                Some((a.prompt.len() - a.prefilled > 1, a.order, i))
            })
            .collect();
        prefilling.sort_unstable();
        for (_, _, i) in prefilling {
            let room = budget - self.batch.len();
            let slot = &self.slots[i];
            let Some(a) = slot.active.as_ref() else { continue };
            let remaining = a.prompt.len() - a.prefilled;
            let take = prompt_piece(remaining, room);
            if take == 0 {
                continue;
            }
            let done = a.prefilled + take == a.prompt.len();
            let start = slot.cached.len();
            for (k, &t) in a.prompt[a.prefilled..a.prefilled + take].iter().enumerate() {
                self.batch.push(t, i, start + k, done && k + 1 == take);
            }
            if done {
                self.rows.push(i);
            }
        }
        !self.batch.is_empty()
    }

    /// Samples the sequence of logits row `r`.
    fn sample_row<F>(&mut self, r: usize, on_event: &mut F) -> Result<(), EngineError>
    where
        F: FnMut(SchedulerEvent<'_>) -> Verdict,
    {
        let vocab = self.model.vocab_size();
        let n_ctx = self.model.context_size();
        let slot_index = self.rows[r];
        let slot = &mut self.slots[slot_index];
        let Some(a) = slot.active.as_mut() else { return Ok(()) };
        if a.stop.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        if a.decoding.is_none() {
            a.timings.prompt_tokens = a.prompt.len() - a.timings.cached_tokens;
            a.timings.prompt_ms = ms_between(a.admitted, now);
            a.decoding = Some(now);
        }
        let max_tokens = a.params.max_tokens.unwrap_or(usize::MAX);
        if a.ids.len() >= max_tokens {
            a.stop = Some(StopReason::MaxTokens);
            return Ok(());
        }
        let row = &self.logits[r * vocab..(r + 1) * vocab];
        let want_logprob = a.params.logprobs || a.params.top_logprobs > 0;
        let norm = want_logprob.then(|| LogSoftmax::of(row));
        let allowed = match a.params.grammar.as_mut().map(Constraint::allowed) {
            None => None,
            Some(Ok(words)) => Some(words),
            Some(Err(e)) => {
                a.stop = Some(StopReason::Grammar { error: Some(e.to_string()) });
                return Ok(());
            }
        };
        let id = match a.sampler.sample_allowed(row, allowed) {
            Ok(id) => id,
            Err(e) => {
                self.drop_all();
                return Err(e);
            }
        };
        a.sampler.accept(id);
        // Under a grammar, an end-of-generation id was allowed only where the grammar may end.
        if a.params.eog.contains(id) || a.params.grammar.as_ref().is_some_and(|g| g.is_end(id)) {
            a.stop = Some(StopReason::Eog { id });
            return Ok(());
        }
        let mut grammar_stop = None;
        if let Some(g) = a.params.grammar.as_mut() {
            match g.accept(id) {
                Ok(()) if g.is_complete() => grammar_stop = Some(StopReason::Grammar { error: None }),
                Ok(()) => {}
                Err(e) => grammar_stop = Some(StopReason::Grammar { error: Some(e.to_string()) }),
            }
        }
        a.ids.push(id);
        self.stats.generated_tokens += 1;
        match &norm {
            Some(n) if a.params.top_logprobs > 0 => self.top.select(row, a.params.top_logprobs, n, &mut self.top_buf),
            _ => self.top_buf.clear(),
        }
        let token = Sampled { id, logprob: norm.map(|n| n.logprob(row[id as usize]) as f32), top: &self.top_buf };
        if let Verdict::Stop(reason) = on_event(SchedulerEvent::Token { seq: a.id, token }) {
            a.stop = Some(reason);
        } else if let Some(reason) = grammar_stop {
            a.stop = Some(reason);
        } else if a.ids.len() >= max_tokens {
            a.stop = Some(StopReason::MaxTokens);
        } else if slot.cached.len() >= n_ctx {
            a.stop = Some(StopReason::ContextFull);
        } else {
            a.pending = Some(id);
        }
        Ok(())
    }

    /// Ends every sequence with a stop reason, reports it and frees its slot.
    fn finish_stopped<F>(&mut self, on_event: &mut F)
    where
        F: FnMut(SchedulerEvent<'_>) -> Verdict,
    {
        for slot in &mut self.slots {
            if slot.active.as_ref().is_none_or(|a| a.stop.is_none()) {
                continue;
            }
            let Some(a) = slot.active.take() else { continue };
            let mut timings = a.timings;
            let now = Instant::now();
            match a.decoding {
                Some(t) => timings.gen_ms = ms_between(t, now),
                None => timings.prompt_ms = ms_between(a.admitted, now),
            }
            timings.gen_tokens = a.ids.len();
            let outcome = SeqOutcome {
                prompt_ids: a.prompt,
                ids: a.ids,
                stop_reason: a.stop.unwrap_or(StopReason::Cancelled),
                timings,
                seed: a.sampler.seed(),
            };
            self.stats.finished += 1;
            on_event(SchedulerEvent::Finished { seq: a.id, outcome: &outcome });
        }
    }

    /// After a failed forward: every running sequence is dropped and every cache cleared.
    fn drop_all(&mut self) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            slot.active = None;
            slot.cached.clear();
            self.model.truncate(i, 0);
        }
    }
}

/// Tokens of a prompt with `remaining` tokens to run that go into a batch with `room` left:
/// never a piece of one token out of several, never one token left behind (a prompt runs in
/// pieces of two or more, so that they take the many-token kernels).
fn prompt_piece(remaining: usize, room: usize) -> usize {
    if remaining <= 1 {
        return remaining.min(room);
    }
    let mut take = remaining.min(room);
    if take < remaining && remaining - take == 1 {
        take -= 1;
    }
    if take < 2 {
        0
    } else {
        take
    }
}

fn ms_between(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1000.0
}

/// Length of the longest common prefix of two id sequences.
pub fn common_prefix_len(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The forward pass, with the grammar masks of the sequences it samples computed on a
/// second thread meanwhile where the machine has a core the pass leaves idle (a mask
/// depends only on the tokens accepted so far, not on the logits). Otherwise the masks are
/// computed at sampling time: measured on 2 cores with 2 pass threads, the extra thread
/// cost Qwen2.5-Coder 0.5B 7 % of its decode speed (docs/PERFORMANCE.md).
fn forward_beside_masks<M: BatchModel>(
    model: &mut M,
    batch: &Batch,
    logits: &mut [f32],
    slots: &mut [Slot],
    rows: &[usize],
) -> Result<(), crate::error::ModelError> {
    if !spare_core(model.compute_threads()) {
        return model.forward(batch, logits);
    }
    let mut constraints: Vec<&mut Constraint> = slots
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| rows.contains(i))
        .filter_map(|(_, slot)| slot.active.as_mut())
        .filter(|a| a.stop.is_none())
        .filter_map(|a| a.params.grammar.as_mut())
        .collect();
    if constraints.is_empty() {
        return model.forward(batch, logits);
    }
    std::thread::scope(|scope| {
        let masks = scope.spawn(move || {
            for c in &mut constraints {
                c.prepare();
            }
        });
        let result = model.forward(batch, logits);
        // A panic in the grammar engine is its own bug; the masks are then computed again
        // (and fail cleanly) at sampling time.
        let _ = masks.join();
        result
    })
}

/// Whether the machine has a core beyond the forward pass's `threads`.
fn spare_core(threads: usize) -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    threads < cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_pieces_are_never_single_tokens_of_longer_prompts() {
        assert_eq!(prompt_piece(1, 5), 1);
        assert_eq!(prompt_piece(1, 0), 0);
        assert_eq!(prompt_piece(2, 1), 0);
        assert_eq!(prompt_piece(2, 2), 2);
        assert_eq!(prompt_piece(3, 2), 0, "two would leave one behind");
        assert_eq!(prompt_piece(10, 9), 8);
        assert_eq!(prompt_piece(10, 100), 10);
        assert_eq!(prompt_piece(10, 1), 0);
        for remaining in 2..40 {
            for room in 0..45 {
                let t = prompt_piece(remaining, room);
                assert!(t <= room && t <= remaining);
                assert!(t == 0 || t >= 2);
                assert!(remaining - t != 1);
            }
        }
    }
}
