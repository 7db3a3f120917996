//! [`Model`]: a loaded transformer with its scratch memory, and the batched forward pass.
//!
//! ```text
//! x      = embed(tokens) * embed_scale?
//! x      = block_i(x)            for every layer (attention reads/writes the KV cache)
//! logits = softcap?( final_norm(x[rows that want logits]) W_head^T )
//! ```
//!
//! Scratch is sized once for `max_batch_tokens` tokens: a forward call allocates nothing.
//! Attention streams over the cache (see `owl_kernels::ops::attention`), so scratch does not grow with
//! the context length.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use owl_kernels::ops::{matmul, matmul_batch_invariant, matmul_q8_0_wide, ActivationPrecision};
use owl_kernels::quant::BlockFormat;
use owl_kernels::ThreadPool;

use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::kv_cache::{KvCache, KvCacheOptions, KvDtype, KvLayerShape};
use crate::lora::LoraBatch;
use crate::memory;
use crate::observe::ActivationObserver;
use crate::skeleton::block::{Block, BlockBuffers, ForwardCtx, TokenRun};
use crate::skeleton::norm::RmsNorm;
use crate::skeleton::rope::{Rope, RopeTable};
use crate::weights::{SourceKind, Weight};
use owl_kernels::ops::attention::QUERY_BLOCK;

/// The file a model was loaded from, for tools that relate other files to it (a LoRA
/// adapter is checked against the base's names and matrix shapes before it is applied).
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub kind: SourceKind,
    /// The GGUF file or the Hugging Face directory.
    pub path: PathBuf,
    /// What the model calls itself: GGUF `general.name` / `general.basename` / the
    /// basename-size-finetune triple, HF `_name_or_path`; the file or directory name last.
    pub names: Vec<String>,
    /// Every stored 2-D tensor, `[rows, cols]` (PyTorch order), by its stored name.
    pub matrices: BTreeMap<String, [usize; 2]>,
    /// The output head is the embedding matrix (no tensor of its own).
    pub tied_head: bool,
}

/// What a family's loader produces; [`Model::assemble`] adds scratch and threads.
pub struct ModelParts {
    pub config: ModelConfig,
    /// `[vocab][hidden]` token embeddings, in their stored format.
    pub embedding: Weight,
    pub blocks: Vec<Block>,
    pub final_norm: RmsNorm,
    /// `[vocab][hidden]` output projection (a clone of `embedding` when tied).
    pub head: Weight,
}

/// Runtime choices made at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Threads of the model's pool (the caller counts as one).
    pub threads: usize,
    /// Most tokens one forward call may carry (scratch is sized for it).
    pub max_batch_tokens: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        LoadOptions { threads, max_batch_tokens: 512 }
    }
}

/// Where the memory of a model goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    /// Weights as held (quantized bytes, mapped from the file, plus f32 norms and biases).
    pub weight_bytes: usize,
    /// KV cache bytes one more position costs in the full-attention layers.
    pub kv_bytes_per_token: usize,
    /// KV cache bytes per sequence of the sliding-window layers (fixed-size rings).
    pub kv_window_bytes_per_seq: usize,
    /// Activation scratch for `max_batch_tokens`, independent of the context length.
    pub scratch_bytes: usize,
}

/// Where a forward call's result goes.
enum Output<'a> {
    /// `[n_logits][vocab]`.
    Logits(&'a mut [f32]),
    /// `[n_logits][hidden]`, the final norm's output.
    Hidden(&'a mut [f32]),
}

/// A point of the forward pass whose activations [`Model::forward_inspect`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The embedding output (after any scale): `[n_tokens][hidden]`.
    Embedding,
    /// The residual stream after layer `i`: `[n_tokens][hidden]`.
    Layer(usize),
    /// The final-norm output of the tokens that want logits: `[n_logits][hidden]`.
    FinalNorm,
}

/// A loaded model, ready to run batches.
pub struct Model {
    config: ModelConfig,
    embedding: Weight,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    head: Weight,
    ropes: Vec<Rope>,
    pool: ThreadPool,
    max_tokens: usize,
    batch_invariant: bool,
    scratch: Scratch,
    observer: Option<Arc<dyn ActivationObserver>>,
    file: Option<ModelFile>,
}

/// Activation buffers, sized for `max_tokens`.
struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    branch: Vec<f32>,
    arena: Vec<f32>,
    tables: Vec<RopeTable>,
    /// Per token: the length its sequence reaches in this call (LongRoPE's switch).
    seq_ends: Vec<usize>,
    /// The batch as runs of one sequence's consecutive positions (attention work units).
    runs: Vec<TokenRun>,
}

impl Model {
    /// Builds the runtime around a family's parts: thread pool, RoPE tables, scratch.
    pub fn assemble(parts: ModelParts, options: &LoadOptions) -> Result<Model, ModelError> {
        let ModelParts { config, embedding, blocks, final_norm, head } = parts;
        config.validate()?;
        if blocks.len() != config.n_layers || embedding.rows != config.vocab_size || head.rows != config.vocab_size {
            return Err(ModelError::config(
                "model parts",
                format!(
                    "{} blocks for {} layers, embedding {}x{}, head {}x{} for vocab {}",
                    blocks.len(),
                    config.n_layers,
                    embedding.rows,
                    embedding.cols,
                    head.rows,
                    head.cols,
                    config.vocab_size
                ),
            ));
        }
        // An untied head is read once per token like every projection, so it takes the
        // decode layout. A head tied to the embedding stays as it is: an interleaved copy
        // would sit beside the embedding's own pages (which row lookups fault back in, 64 KiB
        // at a time), one more copy of the largest tensor of a small model, for a format
        // (Q8_0 in every tied GGUF we ship) whose row-major kernel is already memory-bound.
        let tied = std::ptr::eq(head.matrix().data.as_ptr(), embedding.matrix().data.as_ptr());
        let head = if tied { head } else { head.interleaved_for_decode() };
        let max_tokens = options.max_batch_tokens.max(1);
        let pool = ThreadPool::new(options.threads.max(1));
        let ropes = config.ropes.iter().cloned().map(Rope::new).collect::<Result<Vec<_>, _>>()?;
        let h = config.hidden_size;
        let arena = blocks.iter().map(|b| b.scratch_floats(max_tokens, pool.n_threads())).max().unwrap_or(0);
        // Sized from the file's width and the caller's batch: checked, then allocated
        // fallibly, so an absurd batch is an error naming the bytes, not an abort.
        let what = format!("the activation scratch for {max_tokens} tokens a forward call");
        let per_row = max_tokens.checked_mul(h);
        let floats = per_row.and_then(|n| n.checked_mul(3)).and_then(|n| n.checked_add(arena));
        let bytes = floats.and_then(|n| n.checked_mul(4)).map_or(u64::MAX, |b| b as u64);
        memory::check(&what, bytes)?;
        let per_row = per_row.unwrap_or(usize::MAX);
        let mut runs = Vec::new();
        runs.try_reserve_exact(max_tokens).map_err(|_| ModelError::OutOfMemory {
            what: what.clone(),
            needed: bytes,
            available: memory::available_bytes().unwrap_or(0),
        })?;
        let scratch = Scratch {
            x: memory::zeroed_vec(&what, per_row)?,
            normed: memory::zeroed_vec(&what, per_row)?,
            branch: memory::zeroed_vec(&what, per_row)?,
            arena: memory::zeroed_vec(&what, arena)?,
            tables: ropes.iter().map(|r| RopeTable::with_capacity(r, max_tokens)).collect(),
            seq_ends: memory::zeroed_vec(&what, max_tokens)?,
            runs,
        };
        Ok(Model {
            config,
            embedding,
            blocks,
            final_norm,
            head,
            ropes,
            pool,
            max_tokens,
            batch_invariant: false,
            scratch,
            observer: None,
            file: None,
        })
    }

    /// The file this model came from (`None` for a model assembled from parts).
    pub fn file(&self) -> Option<&ModelFile> {
        self.file.as_ref()
    }

    pub(crate) fn set_file(&mut self, file: ModelFile) {
        self.file = Some(file);
    }

    /// The stored name of the output head's own tensor (`None` when tied to the
    /// embedding); LoRA pairs on it apply to the logits.
    fn head_tensor(&self) -> Option<&'static str> {
        let f = self.file.as_ref()?;
        (!f.tied_head).then_some(match f.kind {
            SourceKind::Hf => "lm_head.weight",
            SourceKind::Gguf => "output.weight",
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The decoder layers (for tools that work per op: owl-train's backward pass).
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// `[vocab][hidden]` token embeddings as stored.
    pub fn embedding(&self) -> &Weight {
        &self.embedding
    }

    pub fn final_norm(&self) -> &RmsNorm {
        &self.final_norm
    }

    /// `[vocab][hidden]` output projection (the embedding itself when tied).
    pub fn head(&self) -> &Weight {
        &self.head
    }

    /// `logits = head · normed` for `n` rows of final-norm output, as the forward pass
    /// computes them (no LoRA term, no soft-capping): on the default path a Q8_0 head takes
    /// 16-bit activations, because its 8-bit rounding reaches the logits undamped
    /// (docs/NUMERICS.md); that kernel is batch invariant by construction.
    pub fn head_logits(&self, normed: &[f32], n: usize, logits: &mut [f32]) -> Result<(), ModelError> {
        head_logits(&self.pool, &self.head, self.batch_invariant, normed, n, logits)
    }

    /// The model's RoPE variants, indexed by `AttentionSpec::rope`.
    pub fn ropes(&self) -> &[Rope] {
        &self.ropes
    }

    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    pub fn max_batch_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// How every matmul of this model treats activations: quantized like llama.cpp
    /// (default, fastest) or float32 against dequantized weights (a float32 reference's
    /// numerics; see `owl_kernels::ops::f32_activations`).
    pub fn set_activation_precision(&mut self, precision: ActivationPrecision) {
        self.pool.set_activation_precision(precision);
    }

    /// Shows every projection's input of the decoder layers to `observer` (the output head is
    /// not observed: llama-imatrix skips it by default too); `None` detaches it.
    pub fn set_activation_observer(&mut self, observer: Option<Arc<dyn ActivationObserver>>) {
        self.observer = observer;
    }

    pub fn activation_precision(&self) -> ActivationPrecision {
        self.pool.activation_precision()
    }

    /// Batch-invariant forward passes: a token's logits no longer depend on the other
    /// sequences of its batch. A sequence with one token in the batch (a decode step) takes
    /// the one-token kernels, bit for bit as if it ran alone; a sequence with several (a
    /// prompt chunk) takes the many-token kernels, whose bits per token do not depend on
    /// the batch; every logits row takes the one-token kernels. The batch must list its
    /// one-token sequences first (later ones are computed as prompt chunks). Mixture-of-
    /// experts layers group tokens per expert and stay batch-dependent.
    ///
    /// What this costs: decode steps of several sequences read each weight chunk once but
    /// multiply it once per token, from cache, rather than in one tile.
    pub fn set_batch_invariant(&mut self, on: bool) {
        self.batch_invariant = on;
    }

    pub fn batch_invariant(&self) -> bool {
        self.batch_invariant
    }

    /// The KV layout of every layer.
    pub fn kv_shapes(&self) -> Vec<KvLayerShape> {
        self.blocks.iter().map(|b| b.mixer.kv_shape()).collect()
    }

    /// A KV cache for `n_seqs` sequences of up to `n_ctx` positions.
    pub fn new_kv_cache(&self, n_seqs: usize, n_ctx: usize, dtype: KvDtype) -> Result<KvCache, ModelError> {
        KvCache::new(&self.kv_shapes(), self.max_tokens, KvCacheOptions { n_seqs, n_ctx, dtype })
    }

    /// Memory of weights, KV cache (with elements of `dtype`) and scratch.
    pub fn memory_report(&self, dtype: KvDtype) -> MemoryReport {
        let weight_bytes = self.embedding.bytes()
            + self.blocks.iter().map(Block::weight_bytes).sum::<usize>()
            + self.final_norm.bytes()
            + if std::ptr::eq(self.head.matrix().data.as_ptr(), self.embedding.matrix().data.as_ptr()) {
                0
            } else {
                self.head.bytes()
            };
        let (mut per_token, mut window) = (0, 0);
        for s in self.kv_shapes() {
            let row = dtype.bytes_for(s.heads * (s.k_dim + s.v_dim));
            match s.window {
                None => per_token += row,
                Some(w) => window += row * (w + self.max_tokens - 1),
            }
        }
        let s = &self.scratch;
        let floats = s.x.len() + s.normed.len() + s.branch.len() + s.arena.len();
        let scratch_bytes = floats * 4
            + s.tables.iter().map(RopeTable::bytes).sum::<usize>()
            + s.seq_ends.len() * 8
            + s.runs.capacity() * std::mem::size_of::<TokenRun>();
        MemoryReport { weight_bytes, kv_bytes_per_token: per_token, kv_window_bytes_per_seq: window, scratch_bytes }
    }

    /// Runs `batch`, storing its keys/values in `kv`, and writes the logits of the tokens
    /// that want them, in batch order, to `logits` (`[batch.n_logits()][vocab]`).
    pub fn forward(&mut self, batch: &Batch, kv: &mut KvCache, logits: &mut [f32]) -> Result<(), ModelError> {
        self.run(batch, kv, Output::Logits(logits), &mut |_, _| {})
    }

    /// Runs `batch` like [`Model::forward`] but stops before the output projection: writes
    /// the final-norm hidden states of the tokens that want logits (`[n][hidden]`), the
    /// last hidden states transformers' models return (embeddings pool them).
    pub fn forward_hidden(&mut self, batch: &Batch, kv: &mut KvCache, hidden: &mut [f32]) -> Result<(), ModelError> {
        self.run(batch, kv, Output::Hidden(hidden), &mut |_, _| {})
    }

    /// [`Model::forward`], reporting the activations at every [`Stage`] to `inspect`.
    pub fn forward_inspect(
        &mut self,
        batch: &Batch,
        kv: &mut KvCache,
        logits: &mut [f32],
        inspect: &mut dyn FnMut(Stage, &[f32]),
    ) -> Result<(), ModelError> {
        self.run(batch, kv, Output::Logits(logits), inspect)
    }

    fn check_cache(&self, kv: &KvCache) -> Result<(), ModelError> {
        if kv.n_layers() != self.blocks.len() {
            return Err(ModelError::Kv(format!("cache has {} layers, model {}", kv.n_layers(), self.blocks.len())));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if kv.layer(i).shape() != b.mixer.kv_shape() {
                return Err(ModelError::Kv(format!("layer {i}: cache shape does not match the model")));
            }
        }
        Ok(())
    }

    fn run(
        &mut self,
        batch: &Batch,
        kv: &mut KvCache,
        output: Output<'_>,
        inspect: &mut dyn FnMut(Stage, &[f32]),
    ) -> Result<(), ModelError> {
        let n = batch.len();
        let (h, vocab) = (self.config.hidden_size, self.config.vocab_size);
        let (logits, hidden_only) = match output {
            Output::Logits(l) => (l, false),
            Output::Hidden(x) => (x, true),
        };
        let (width, what) = if hidden_only { (h, "hidden states") } else { (vocab, "logits") };
        if n > self.max_tokens {
            return Err(ModelError::batch(
                self.max_tokens,
                format!("{n} tokens exceed max_batch_tokens {}", self.max_tokens),
            ));
        }
        let n_logits = batch.n_logits();
        if logits.len() != n_logits * width {
            return Err(ModelError::OutputLength { what, expected: n_logits * width, got: logits.len() });
        }
        if n == 0 {
            return Ok(());
        }
        self.check_cache(kv)?;
        for (i, &t) in batch.tokens().iter().enumerate() {
            if t as usize >= vocab {
                return Err(ModelError::batch(i, format!("token {t} outside the vocabulary of {vocab}")));
            }
        }
        let head_tensor = self.head_tensor();
        let s = &mut self.scratch;
        kv.plan(batch.seqs(), batch.positions(), &mut s.seq_ends[..n])?;

        // Embeddings.
        let x = &mut s.x[..n * h];
        for (row, &t) in x.chunks_exact_mut(h).zip(batch.tokens()) {
            self.embedding.dequantize_row(t as usize, row)?;
        }
        if let Some(scale) = self.config.embed_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        inspect(Stage::Embedding, x);

        for (table, rope) in s.tables.iter_mut().zip(&self.ropes) {
            table.fill(rope, batch.positions(), &s.seq_ends[..n]);
        }
        TokenRun::split(batch.seqs(), batch.positions(), QUERY_BLOCK, &mut s.runs);
        let n_single = self.batch_invariant.then(|| leading_single_tokens(batch.seqs()));
        let lora =
            if batch.has_lora() { LoraBatch::group(n, |t| batch.lora_of(batch.seqs()[t]).cloned()) } else { None };
        let ctx = ForwardCtx {
            pool: &self.pool,
            n_tokens: n,
            seqs: batch.seqs(),
            positions: batch.positions(),
            ropes: &s.tables,
            runs: &s.runs,
            n_single,
            observer: self.observer.as_deref(),
            lora: lora.as_ref(),
        };
        let mut buffers = BlockBuffers { normed: &mut s.normed, branch: &mut s.branch, arena: &mut s.arena };
        for (i, block) in self.blocks.iter().enumerate() {
            block.forward(&ctx, kv.layer_mut(i), x, &mut buffers)?;
            inspect(Stage::Layer(i), x);
        }

        // Final norm and output projection, only for the rows that want logits.
        let mut m = 0;
        for (t, _) in batch.wants_logits().iter().enumerate().filter(|(_, &w)| w) {
            let (src, dst) = (&x[t * h..(t + 1) * h], &mut s.normed[m * h..(m + 1) * h]);
            self.final_norm.apply(&self.pool, src, dst);
            m += 1;
        }
        let normed = &s.normed[..m * h];
        inspect(Stage::FinalNorm, normed);
        if hidden_only {
            logits.copy_from_slice(normed);
        } else if m > 0 {
            head_logits(&self.pool, &self.head, self.batch_invariant, normed, m, logits)?;
            if let (Some(lora), Some(tensor)) = (&lora, head_tensor) {
                // Logits rows are the batch rows that want logits, in order.
                let mut logit_row = vec![usize::MAX; n];
                for (i, t) in batch.wants_logits().iter().enumerate().filter(|(_, &w)| w).map(|(t, _)| t).enumerate() {
                    logit_row[t] = i;
                }
                if let Some(rows) = lora.restrict(|t| (logit_row[t] != usize::MAX).then_some(logit_row[t])) {
                    rows.apply(&self.pool, tensor, normed, h, logits, vocab);
                }
            }
            if let Some(cap) = self.config.final_softcap {
                logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
            }
        }
        kv.commit();
        Ok(())
    }
}

/// How many tokens at the start of a batch are the only token of their sequence in it.
fn leading_single_tokens(seqs: &[usize]) -> usize {
    let alone = |t: usize| (t == 0 || seqs[t - 1] != seqs[t]) && seqs.get(t + 1).is_none_or(|&s| s != seqs[t]);
    (0..seqs.len()).take_while(|&t| alone(t)).count()
}

/// [`Model::head_logits`], on the fields (the forward pass holds its scratch mutably).
fn head_logits(
    pool: &ThreadPool,
    head: &Weight,
    batch_invariant: bool,
    normed: &[f32],
    n: usize,
    logits: &mut [f32],
) -> Result<(), ModelError> {
    let head = head.matrix();
    if head.format == BlockFormat::Q8_0 && pool.activation_precision() == ActivationPrecision::Quantized {
        matmul_q8_0_wide(pool, &head, normed, n, logits)?;
    } else if batch_invariant {
        matmul_batch_invariant(pool, &head, normed, n, n, logits)?;
    } else {
        matmul(pool, &head, normed, n, logits)?;
    }
    Ok(())
}
