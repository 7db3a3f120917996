//! The key/value cache: per layer, per sequence slot, per KV head, one row per position.
//!
//! Layout of a layer: `[seq][head][slot][dim]`, so the keys of one head of one sequence are
//! contiguous and attention reads them in tiles. Full-attention layers keep `n_ctx` slots
//! per sequence and store position `p` at slot `p`. Sliding-window layers keep a ring of
//! `min(n_ctx, window + max_chunk - 1)` slots (position `p` at slot `p % slots`): the window
//! itself plus room for the tokens of one forward call, which are all written before any of
//! them attends — so the first query of a chunk still finds the `window - 1` keys before it.
//!
//! Storage is F16 by default (half the memory and bandwidth, ~1e-3 relative error in the
//! keys), F32 or Q8_0 on request (llama.cpp's `-ctk/-ctv q8_0`: 34 bytes per 32 values,
//! each head row quantized in blocks of 32 as it is written, dequantized a key tile at a
//! time by attention; ~0.4 % of each block's largest value as error). Buffers are allocated
//! zeroed up front (the OS maps the pages as they are first written), so a forward call
//! never allocates.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use owl_kernels::quant::quantize_row;
use owl_kernels::BlockFormat;

use crate::error::ModelError;
use crate::memory;
pub use owl_kernels::ops::attention::KvRows;

/// Element type of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    #[default]
    F16,
    F32,
    /// Blocks of 32 values with one f16 scale (ggml's Q8_0); head dimensions must be whole
    /// blocks.
    Q8_0,
}

/// Values per Q8_0 block, and its bytes.
const Q8_BLOCK: usize = 32;
const Q8_BLOCK_BYTES: usize = 34;

impl KvDtype {
    /// Bytes of `elements` values (a whole number of blocks for Q8_0).
    pub fn bytes_for(self, elements: usize) -> usize {
        match self {
            KvDtype::F16 => elements * 2,
            KvDtype::F32 => elements * 4,
            KvDtype::Q8_0 => elements / Q8_BLOCK * Q8_BLOCK_BYTES,
        }
    }

    /// The name `--cache-type` takes (llama.cpp's).
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F16 => "f16",
            KvDtype::F32 => "f32",
            KvDtype::Q8_0 => "q8_0",
        }
    }

    /// Whether a layer of this shape can be stored in this type.
    fn fits(self, shape: &KvLayerShape) -> bool {
        self != KvDtype::Q8_0 || (shape.k_dim.is_multiple_of(Q8_BLOCK) && shape.v_dim.is_multiple_of(Q8_BLOCK))
    }
}

/// What one layer stores per position, as its attention module declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayerShape {
    /// KV heads (1 for a shared latent).
    pub heads: usize,
    /// Key elements per head.
    pub k_dim: usize,
    /// Value elements per head (0 when values are derived from the keys, e.g. an MLA latent).
    pub v_dim: usize,
    /// Sliding window in positions (the query's own included), `None` for full attention.
    pub window: Option<usize>,
}

/// How big a cache to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheOptions {
    /// Sequence slots (sequences processed concurrently).
    pub n_seqs: usize,
    /// Positions per sequence.
    pub n_ctx: usize,
    pub dtype: KvDtype,
}

/// Cache storage of one layer in its element type.
#[derive(Debug)]
pub enum KvStore {
    /// f16 bit patterns (`u16` so that the zeroed allocation is lazy; viewed as `f16`).
    F16(Vec<u16>),
    F32(Vec<f32>),
    /// Q8_0 blocks as bytes; element `i` lives in block `i / 32`.
    Q8_0(Vec<u8>),
}

impl KvStore {
    fn zeroed(dtype: KvDtype, n: usize) -> Result<Self, ModelError> {
        Ok(match dtype {
            KvDtype::F16 => KvStore::F16(memory::zeroed_vec("the KV cache", n)?),
            KvDtype::F32 => KvStore::F32(memory::zeroed_vec("the KV cache", n)?),
            KvDtype::Q8_0 => KvStore::Q8_0(memory::zeroed_vec("the KV cache", KvDtype::Q8_0.bytes_for(n))?),
        })
    }

    /// Rewrites one element of every 4 KiB page with its own value, so that each page is
    /// resident now rather than on first use; the contents do not change.
    fn touch(&mut self) {
        fn each_page<T: Copy>(v: &mut [T]) {
            let step = (4096 / std::mem::size_of::<T>()).max(1);
            for x in v.iter_mut().step_by(step) {
                // SAFETY: `x` is a valid, aligned, exclusive reference; the volatile pair
                // keeps the compiler from dropping a store of the value just read.
                unsafe { std::ptr::write_volatile(x, std::ptr::read_volatile(x)) };
            }
        }
        match self {
            KvStore::F16(v) => each_page(v),
            KvStore::F32(v) => each_page(v),
            KvStore::Q8_0(v) => each_page(v),
        }
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        match self {
            KvStore::F16(v) => v.len() * 2,
            KvStore::F32(v) => v.len() * 4,
            KvStore::Q8_0(v) => v.len(),
        }
    }

    /// Stores `src` at element offset `at`.
    #[inline]
    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            KvStore::F16(v) => {
                let dst: &mut [f16] = v[at..at + src.len()].reinterpret_cast_mut();
                dst.convert_from_f32_slice(src);
            }
            KvStore::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            KvStore::Q8_0(v) => {
                let (from, len) = (KvDtype::Q8_0.bytes_for(at), KvDtype::Q8_0.bytes_for(src.len()));
                // The row is whole blocks (checked when the cache was made): not reached.
                let _ = quantize_row(BlockFormat::Q8_0, src, &mut v[from..from + len]);
            }
        }
    }

    fn copy_within(&mut self, src: usize, dst: usize, n: usize) {
        match self {
            KvStore::F16(v) => v.copy_within(src..src + n, dst),
            KvStore::F32(v) => v.copy_within(src..src + n, dst),
            KvStore::Q8_0(v) => {
                let q = KvDtype::Q8_0;
                v.copy_within(q.bytes_for(src)..q.bytes_for(src + n), q.bytes_for(dst))
            }
        }
    }
}

/// One layer's cache for every sequence slot.
#[derive(Debug)]
pub struct LayerKv {
    shape: KvLayerShape,
    /// Slots per sequence and head.
    slots: usize,
    k: KvStore,
    v: KvStore,
}

impl LayerKv {
    pub fn shape(&self) -> KvLayerShape {
        self.shape
    }

    /// Slots per sequence (ring length for sliding-window layers).
    pub fn slots(&self) -> usize {
        self.slots
    }

    #[inline]
    fn base(&self, seq: usize, head: usize, dim: usize) -> usize {
        (seq * self.shape.heads + head) * self.slots * dim
    }

    /// Stores the key and value rows of one token (`heads * k_dim` and `heads * v_dim`
    /// values, head-major) at `position` of sequence `seq`.
    #[inline]
    pub fn write(&mut self, seq: usize, position: usize, k: &[f32], v: &[f32]) {
        let slot = position % self.slots;
        let KvLayerShape { heads, k_dim, v_dim, .. } = self.shape;
        for h in 0..heads {
            let kb = self.base(seq, h, k_dim) + slot * k_dim;
            self.k.write(kb, &k[h * k_dim..(h + 1) * k_dim]);
            if v_dim > 0 {
                let vb = self.base(seq, h, v_dim) + slot * v_dim;
                self.v.write(vb, &v[h * v_dim..(h + 1) * v_dim]);
            }
        }
    }

    /// All key slots of one head of one sequence (`slots * k_dim` elements).
    #[inline]
    pub fn keys(&self, seq: usize, head: usize) -> KvRows<'_> {
        let n = self.slots * self.shape.k_dim;
        rows(&self.k, self.base(seq, head, self.shape.k_dim), n)
    }

    /// All value slots of one head of one sequence (`slots * v_dim` elements).
    #[inline]
    pub fn values(&self, seq: usize, head: usize) -> KvRows<'_> {
        let n = self.slots * self.shape.v_dim;
        rows(&self.v, self.base(seq, head, self.shape.v_dim), n)
    }

    /// The oldest position still held when a sequence has `len` positions.
    fn oldest_held(&self, len: usize) -> usize {
        len.saturating_sub(self.slots)
    }

    /// The oldest position a query at position `len` (the next one) may attend.
    fn oldest_needed(&self, len: usize) -> usize {
        match self.shape.window {
            Some(w) => (len + 1).saturating_sub(w),
            None => 0,
        }
    }

    fn bytes(&self) -> usize {
        self.k.bytes() + self.v.bytes()
    }
}

#[inline]
fn rows(store: &KvStore, at: usize, n: usize) -> KvRows<'_> {
    match store {
        KvStore::F16(v) => KvRows::F16(v[at..at + n].reinterpret_cast()),
        KvStore::F32(v) => KvRows::F32(&v[at..at + n]),
        KvStore::Q8_0(v) => {
            let q = KvDtype::Q8_0;
            KvRows::Q8_0(&v[q.bytes_for(at)..q.bytes_for(at + n)])
        }
    }
}

/// The cache of every layer for `n_seqs` sequence slots of up to `n_ctx` positions.
#[derive(Debug)]
pub struct KvCache {
    options: KvCacheOptions,
    /// Tokens one forward call may add to one sequence (the ring slack).
    max_chunk: usize,
    layers: Vec<LayerKv>,
    /// Positions held per sequence.
    lens: Vec<usize>,
    /// Lengths after the forward call in progress (see [`KvCache::plan`]).
    pending: Vec<usize>,
}

impl KvCache {
    /// A cache for layers of the given shapes, allowing `max_chunk` tokens per sequence in
    /// one forward call. Use `Model::new_kv_cache`, which knows both.
    pub fn new(shapes: &[KvLayerShape], max_chunk: usize, options: KvCacheOptions) -> Result<Self, ModelError> {
        if options.n_seqs == 0 || options.n_ctx == 0 {
            return Err(ModelError::Kv(format!(
                "need at least one sequence and one position (n_seqs {}, n_ctx {})",
                options.n_seqs, options.n_ctx
            )));
        }
        let total = KvCache::bytes_needed(shapes, max_chunk, options).ok_or_else(|| {
            ModelError::Kv(format!("a cache of {} positions overflows the address space", options.n_ctx))
        })?;
        if let Some(shape) = shapes.iter().find(|s| !options.dtype.fits(s)) {
            return Err(ModelError::Kv(format!(
                "a {} cache stores whole blocks of {Q8_BLOCK} values, and this model's heads have {} key and {} \
                 value elements: use f16 or f32",
                options.dtype.name(),
                shape.k_dim,
                shape.v_dim
            )));
        }
        memory::check(&format!("a KV cache of {} tokens", options.n_ctx), total)?;
        let mut layers = Vec::with_capacity(shapes.len());
        for (i, &shape) in shapes.iter().enumerate() {
            let slots = match shape.window {
                Some(w) => options.n_ctx.min(w.saturating_add(max_chunk.max(1) - 1)),
                None => options.n_ctx,
            };
            let count = |dim: usize| {
                options
                    .n_seqs
                    .checked_mul(shape.heads)
                    .and_then(|n| n.checked_mul(slots))
                    .and_then(|n| n.checked_mul(dim))
                    .ok_or_else(|| ModelError::Kv(format!("layer {i}: cache size overflows")))
            };
            let (nk, nv) = (count(shape.k_dim)?, count(shape.v_dim)?);
            layers.push(LayerKv {
                shape,
                slots,
                k: KvStore::zeroed(options.dtype, nk)?,
                v: KvStore::zeroed(options.dtype, nv)?,
            });
        }
        let lens = vec![0; options.n_seqs];
        Ok(KvCache { options, max_chunk: max_chunk.max(1), layers, pending: lens.clone(), lens })
    }

    /// Bytes a cache of these shapes and options takes; `None` when the count overflows.
    pub fn bytes_needed(shapes: &[KvLayerShape], max_chunk: usize, options: KvCacheOptions) -> Option<u64> {
        let mut total: u64 = 0;
        for shape in shapes {
            let slots = match shape.window {
                Some(w) => options.n_ctx.min(w.saturating_add(max_chunk.max(1) - 1)),
                None => options.n_ctx,
            };
            let per_slot = shape.heads.checked_mul(shape.k_dim.checked_add(shape.v_dim)?)?;
            // Bytes of one slot (whole blocks for Q8_0: every head row is).
            let slot_bytes = (per_slot as u64).checked_mul(options.dtype.bytes_for(Q8_BLOCK) as u64)? / Q8_BLOCK as u64;
            let layer = (options.n_seqs as u64).checked_mul(slots as u64)?.checked_mul(slot_bytes)?;
            total = total.checked_add(layer)?;
        }
        Some(total)
    }

    pub fn options(&self) -> KvCacheOptions {
        self.options
    }

    pub fn n_seqs(&self) -> usize {
        self.options.n_seqs
    }

    pub fn n_ctx(&self) -> usize {
        self.options.n_ctx
    }

    pub fn dtype(&self) -> KvDtype {
        self.options.dtype
    }

    /// Tokens one forward call may add to one sequence.
    pub fn max_chunk(&self) -> usize {
        self.max_chunk
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn layer(&self, i: usize) -> &LayerKv {
        &self.layers[i]
    }

    pub fn layer_mut(&mut self, i: usize) -> &mut LayerKv {
        &mut self.layers[i]
    }

    /// Makes the whole cache resident now. The zeroed allocation is only address space until
    /// written; a long-running server touches it at start so that its memory use is known
    /// (and fails, if it must, at start) and stays flat afterwards, as llama.cpp's cleared
    /// buffers do. Contents are unchanged.
    pub fn make_resident(&mut self) {
        for layer in &mut self.layers {
            layer.k.touch();
            layer.v.touch();
        }
    }

    /// Positions held for `seq` (= the position of its next token).
    pub fn seq_len(&self, seq: usize) -> usize {
        self.lens.get(seq).copied().unwrap_or(0)
    }

    /// Bytes allocated (virtual: pages are committed as they are written).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerKv::bytes).sum()
    }

    fn check_seq(&self, seq: usize) -> Result<(), ModelError> {
        if seq >= self.options.n_seqs {
            return Err(ModelError::Kv(format!(
                "sequence {seq} out of range (cache has {} slots)",
                self.options.n_seqs
            )));
        }
        Ok(())
    }

    /// Forgets every position of `seq`.
    pub fn clear_seq(&mut self, seq: usize) -> Result<(), ModelError> {
        self.check_seq(seq)?;
        self.lens[seq] = 0;
        Ok(())
    }

    /// Forgets every sequence.
    pub fn clear(&mut self) {
        self.lens.iter_mut().for_each(|l| *l = 0);
    }

    /// Keeps the first `len` positions of `seq` (rewind, e.g. after rejected draft tokens).
    /// A sliding-window ring holds `max_chunk - 1` positions beyond its window, so a rewind
    /// by more than `max_chunk` positions is refused there (the keys it would need are
    /// overwritten); full-attention layers rewind anywhere.
    pub fn truncate_seq(&mut self, seq: usize, len: usize) -> Result<(), ModelError> {
        self.check_seq(seq)?;
        let cur = self.lens[seq];
        if len > cur {
            return Err(ModelError::Kv(format!("cannot truncate sequence {seq} of {cur} positions to {len}")));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if len > 0 && l.oldest_needed(len) < l.oldest_held(cur) {
                return Err(ModelError::Kv(format!(
                    "cannot rewind sequence {seq} from {cur} to {len} positions: layer {i}'s sliding window \
                     no longer holds position {}",
                    l.oldest_needed(len)
                )));
            }
        }
        self.lens[seq] = len;
        Ok(())
    }

    /// Makes `dst` a copy of the first `len` positions of `src` (shared prompt prefix).
    pub fn copy_prefix(&mut self, src: usize, dst: usize, len: usize) -> Result<(), ModelError> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        let cur = self.lens[src];
        if len > cur {
            return Err(ModelError::Kv(format!("sequence {src} holds {cur} positions, cannot copy {len}")));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if len > 0 && l.oldest_needed(len) < l.oldest_held(cur) {
                return Err(ModelError::Kv(format!(
                    "cannot copy {len} positions of sequence {src}: layer {i}'s sliding window no longer holds \
                     position {}",
                    l.oldest_needed(len)
                )));
            }
        }
        if src != dst {
            for l in &mut self.layers {
                let from = l.oldest_needed(len).max(l.oldest_held(cur));
                for p in from..len {
                    let slot = p % l.slots;
                    for h in 0..l.shape.heads {
                        let (kd, vd) = (l.shape.k_dim, l.shape.v_dim);
                        let (s, d) = (l.base(src, h, kd) + slot * kd, l.base(dst, h, kd) + slot * kd);
                        l.k.copy_within(s, d, kd);
                        if vd > 0 {
                            let (s, d) = (l.base(src, h, vd) + slot * vd, l.base(dst, h, vd) + slot * vd);
                            l.v.copy_within(s, d, vd);
                        }
                    }
                }
            }
        }
        self.lens[dst] = len;
        Ok(())
    }

    /// Checks the (sequence, position) pairs of a batch before anything is written: each
    /// sequence's tokens continue its cached positions in order, stay inside `n_ctx`, and
    /// number at most `max_chunk` per call. Writes to `seq_ends[i]` the length token `i`'s
    /// sequence reaches in this call. Allocates nothing.
    pub(crate) fn plan(
        &mut self,
        seqs: &[usize],
        positions: &[usize],
        seq_ends: &mut [usize],
    ) -> Result<(), ModelError> {
        self.pending.copy_from_slice(&self.lens);
        for (i, (&seq, &pos)) in seqs.iter().zip(positions).enumerate() {
            let Some(next) = self.pending.get_mut(seq) else {
                return Err(ModelError::batch(
                    i,
                    format!("sequence {seq} outside the cache's {} slots", self.options.n_seqs),
                ));
            };
            if pos != *next {
                return Err(ModelError::batch(i, format!("position {pos}, but sequence {seq} continues at {}", *next)));
            }
            if pos >= self.options.n_ctx {
                return Err(ModelError::batch(
                    i,
                    format!("position {pos} beyond the context of {}", self.options.n_ctx),
                ));
            }
            *next += 1;
            if *next - self.lens[seq] > self.max_chunk {
                return Err(ModelError::batch(
                    i,
                    format!("more than {} tokens of sequence {seq} in one call", self.max_chunk),
                ));
            }
        }
        for (end, &seq) in seq_ends.iter_mut().zip(seqs) {
            *end = self.pending[seq];
        }
        Ok(())
    }

    /// Makes the lengths planned by [`KvCache::plan`] current (the forward call succeeded).
    pub(crate) fn commit(&mut self) {
        self.lens.copy_from_slice(&self.pending);
    }

    #[cfg(test)]
    fn set_len(&mut self, seq: usize, len: usize) {
        self.lens[seq] = len;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn shapes() -> Vec<KvLayerShape> {
        vec![
            KvLayerShape { heads: 2, k_dim: 4, v_dim: 4, window: None },
            KvLayerShape { heads: 2, k_dim: 4, v_dim: 4, window: Some(3) },
        ]
    }

    #[test]
    fn ring_holds_window_plus_chunk() {
        let kv = KvCache::new(&shapes(), 4, KvCacheOptions { n_seqs: 2, n_ctx: 100, dtype: KvDtype::F32 }).unwrap();
        assert_eq!(kv.layer(0).slots(), 100);
        assert_eq!(kv.layer(1).slots(), 6);
        assert_eq!(kv.bytes(), 2 * 2 * (100 + 6) * 8 * 4);
    }

    #[test]
    fn write_and_read_back_f16() {
        let mut kv = KvCache::new(&shapes(), 1, KvCacheOptions { n_seqs: 2, n_ctx: 8, dtype: KvDtype::F16 }).unwrap();
        let k: Vec<f32> = (0..8).map(|i| i as f32 * 0.5).collect();
        let v: Vec<f32> = (0..8).map(|i| -(i as f32)).collect();
        kv.layer_mut(0).write(1, 5, &k, &v);
        let KvRows::F16(keys) = kv.layer(0).keys(1, 1) else { panic!("f16 cache") };
        let row: Vec<f32> = keys[5 * 4..6 * 4].iter().map(|x| x.to_f32()).collect();
        assert_eq!(row, vec![2.0, 2.5, 3.0, 3.5]);
        let KvRows::F16(vals) = kv.layer(0).values(1, 0) else { panic!("f16 cache") };
        assert_eq!(vals[5 * 4 + 3].to_f32(), -3.0);
    }

    #[test]
    fn q8_0_rows_quantize_per_block_and_copy_whole() {
        let shapes = [KvLayerShape { heads: 2, k_dim: 64, v_dim: 32, window: None }];
        let options = KvCacheOptions { n_seqs: 2, n_ctx: 10, dtype: KvDtype::Q8_0 };
        let mut kv = KvCache::new(&shapes, 1, options).unwrap();
        // 2 seqs × 2 heads × 10 slots × (64 + 32) values, 34 bytes a block of 32.
        assert_eq!(kv.bytes(), 2 * 2 * 10 * 3 * 34);
        assert_eq!(KvCache::bytes_needed(&shapes, 1, options), Some(kv.bytes() as u64));
        let k: Vec<f32> = (0..128).map(|i| (i as f32 - 60.0) * 0.25).collect();
        let v: Vec<f32> = (0..64).map(|i| i as f32 / 7.0).collect();
        kv.layer_mut(0).write(1, 7, &k, &v);
        kv.set_len(1, 8);
        let read = |kv: &KvCache, seq: usize, head: usize, keys: bool| -> Vec<f32> {
            let (rows, dim) =
                if keys { (kv.layer(0).keys(seq, head), 64) } else { (kv.layer(0).values(seq, head), 32) };
            let KvRows::Q8_0(bytes) = rows else { panic!("q8_0 cache") };
            let mut out = vec![0f32; 10 * dim];
            owl_kernels::quant::dequantize_row(BlockFormat::Q8_0, bytes, &mut out).unwrap();
            out[7 * dim..8 * dim].to_vec()
        };
        for (head, (want_k, want_v)) in k.chunks(64).zip(v.chunks(32)).enumerate() {
            for (got, want) in [(read(&kv, 1, head, true), want_k), (read(&kv, 1, head, false), want_v)] {
                // Within half a step of each block's largest value (and its f16 scale).
                for (blk_got, blk_want) in got.chunks(32).zip(want.chunks(32)) {
                    let max = blk_want.iter().fold(0f32, |m, x| m.max(x.abs()));
                    for (g, w) in blk_got.iter().zip(blk_want) {
                        assert!((g - w).abs() <= max / 127.0 * 0.56, "head {head}: {g} vs {w}");
                    }
                }
            }
        }
        // A shared prefix copies the blocks as they are.
        kv.copy_prefix(1, 0, 8).unwrap();
        assert_eq!(read(&kv, 0, 1, true), read(&kv, 1, 1, true));
        assert_eq!(read(&kv, 0, 0, false), read(&kv, 1, 0, false));
        // Heads that are not whole blocks are refused with what to use instead.
        let odd = [KvLayerShape { heads: 1, k_dim: 48, v_dim: 48, window: None }];
        let err = KvCache::new(&odd, 1, options).unwrap_err().to_string();
        assert!(err.contains("q8_0") && err.contains("48") && err.contains("f16"), "{err}");
    }

    #[test]
    fn making_resident_keeps_contents() {
        let options = KvCacheOptions { n_seqs: 2, n_ctx: 3000, dtype: KvDtype::F16 };
        let mut kv = KvCache::new(&shapes(), 1, options).unwrap();
        let k: Vec<f32> = (0..8).map(|i| i as f32 + 1.0).collect();
        kv.layer_mut(0).write(1, 2999, &k, &k);
        kv.set_len(1, 3000);
        kv.make_resident();
        let KvRows::F16(keys) = kv.layer(0).keys(1, 1) else { panic!("f16 cache") };
        let row: Vec<f32> = keys[2999 * 4..3000 * 4].iter().map(|x| x.to_f32()).collect();
        assert_eq!(row, vec![5.0, 6.0, 7.0, 8.0]);
        assert_eq!(kv.seq_len(1), 3000);
        let KvRows::F16(keys) = kv.layer(0).keys(0, 0) else { panic!("f16 cache") };
        assert!(keys.iter().all(|x| *x == f16::ZERO));
    }

    #[test]
    fn rewind_limits_follow_the_ring() {
        let mut kv = KvCache::new(&shapes(), 2, KvCacheOptions { n_seqs: 1, n_ctx: 100, dtype: KvDtype::F32 }).unwrap();
        // window 3, chunk 2: 4 slots.
        kv.set_len(0, 10);
        // Held: positions 6..10. Next query at 8 needs 6, 7 (and itself): fine; at 7 it
        // would need 5, which the ring has overwritten.
        assert!(kv.truncate_seq(0, 8).is_ok());
        kv.set_len(0, 10);
        assert!(kv.truncate_seq(0, 7).is_err());
        assert!(kv.copy_prefix(0, 0, 7).is_err());
    }

    #[test]
    fn bad_sequence_is_an_error() {
        let mut kv = KvCache::new(&shapes(), 1, KvCacheOptions { n_seqs: 1, n_ctx: 4, dtype: KvDtype::F32 }).unwrap();
        assert!(kv.clear_seq(1).is_err());
        assert!(kv.truncate_seq(0, 1).is_err());
        assert!(KvCache::new(&shapes(), 1, KvCacheOptions { n_seqs: 0, n_ctx: 4, dtype: KvDtype::F32 }).is_err());
    }
}
