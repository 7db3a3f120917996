//! A layer's attention as pool work: every block of queries (a run of one sequence's
//! queries with the heads that share a KV head) is an item. When a batch has fewer blocks
//! than the threads can keep busy (a decode step: one block per KV head), each block's key
//! spans become items of their own and a second pass merges them in position order — the
//! split-K of flash-decoding (Dao, Haziza, Massa & Sizov 2023). The merge is the one
//! [`super::attend`] does span by span, in the same order, so both ways give the same bits.

use std::ops::Range;

use crate::ThreadPool;

use super::Body;
use super::KvRows;
use super::{attend, attend_span_with, finish, merge, scratch_floats, spans, state_floats, work_floats};
use super::{KeyWindow, Queries, RowState, ScoreParams, QUERY_BLOCK};
use crate::parallel::DisjointSlice;

/// One item of a layer's attention: queries of one sequence (at most `QUERY_BLOCK`, at
/// most the layer's `n_heads` heads each) and the rows of the KV head they read.
pub struct Block<'a> {
    pub queries: Queries<'a>,
    pub keys: KvRows<'a>,
    pub values: KvRows<'a>,
}

/// What every block of a layer shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockShape {
    /// Most heads (rows per query) a block has.
    pub n_heads: usize,
    pub k_dim: usize,
    pub v_dim: usize,
    pub keys_seen: KeyWindow,
    pub params: ScoreParams,
}

/// Span states kept for a split batch (1 MiB): a decode step of a model with 8 KV heads of
/// 4 query heads × 128 dims at 16k positions fits; a larger one runs unsplit (same bits).
const SPLIT_FLOATS: usize = 1 << 18;

/// Most blocks a batch may have to be split (bounds the per-block bookkeeping on the stack).
const MAX_SPLIT_BLOCKS: usize = 64;

/// f32 scratch of [`attend_blocks`] on a pool of `n_threads`.
pub fn scratch_floats_for(shape: &BlockShape, n_threads: usize) -> usize {
    n_threads * per_thread(shape) + SPLIT_FLOATS
}

fn per_thread(shape: &BlockShape) -> usize {
    scratch_floats(shape.n_heads, shape.k_dim, shape.v_dim) + QUERY_BLOCK * shape.n_heads * shape.v_dim
}

/// Attends every block `0..n_blocks` (`block(b)` describes it) and hands each block's
/// outputs, `[queries][heads][v_dim]`, to `emit(b, ..)`. Each block is emitted exactly
/// once, from some pool thread.
pub fn attend_blocks<'a>(
    pool: &ThreadPool,
    n_blocks: usize,
    shape: &BlockShape,
    scratch: &mut [f32],
    block: &(dyn Fn(usize) -> Block<'a> + Sync),
    emit: &(dyn Fn(usize, &[f32]) + Sync),
) {
    let per_thread = per_thread(shape);
    let (threads, split) = scratch.split_at_mut(pool.n_threads() * per_thread);
    if let Some(plan) = SplitPlan::new(pool.n_threads(), n_blocks, shape, block) {
        attend_split(pool, &plan, shape, threads, &mut split[..SPLIT_FLOATS], block, emit);
        return;
    }
    let thread_scratch = DisjointSlice::new(threads);
    let (vd, seen, params) = (shape.v_dim, shape.keys_seen, shape.params);
    pool.parallel_for(n_blocks, 1, &|thread, items| {
        // SAFETY: thread indices are unique within a job, so per-thread ranges are disjoint.
        let scratch = unsafe { thread_scratch.range(thread * per_thread..(thread + 1) * per_thread) };
        let (work, out) = scratch.split_at_mut(per_thread - QUERY_BLOCK * shape.n_heads * vd);
        for b in items {
            let blk = block(b);
            let out = &mut out[..blk.queries.positions.len() * blk.queries.n_heads * vd];
            attend(&blk.queries, blk.keys, blk.values, shape.k_dim, vd, seen, params, work, out);
            emit(b, out);
        }
    });
}

/// Where each block's span states live in the split buffer: block `b` has `n_spans[b]`
/// consecutive states of `rows[b]` rows from float `offset[b]`; its spans are the items
/// `first_item[b]..first_item[b] + n_spans[b]` of the first pass.
struct SplitPlan {
    n_blocks: usize,
    rows: [usize; MAX_SPLIT_BLOCKS],
    n_spans: [usize; MAX_SPLIT_BLOCKS],
    first_item: [usize; MAX_SPLIT_BLOCKS],
    offset: [usize; MAX_SPLIT_BLOCKS],
    n_items: usize,
}

impl SplitPlan {
    /// A plan when splitting pays: several threads, too few blocks to keep them busy
    /// (fewer than four per thread), more spans than blocks, and every state fits.
    fn new<'a>(
        n_threads: usize,
        n_blocks: usize,
        shape: &BlockShape,
        block: &(dyn Fn(usize) -> Block<'a> + Sync),
    ) -> Option<Self> {
        if n_threads < 2 || n_blocks >= 4 * n_threads || n_blocks > MAX_SPLIT_BLOCKS {
            return None;
        }
        let mut plan = SplitPlan {
            n_blocks,
            rows: [0; MAX_SPLIT_BLOCKS],
            n_spans: [0; MAX_SPLIT_BLOCKS],
            first_item: [0; MAX_SPLIT_BLOCKS],
            offset: [0; MAX_SPLIT_BLOCKS],
            n_items: 0,
        };
        let mut floats = 0;
        for b in 0..n_blocks {
            let q = block(b).queries;
            plan.rows[b] = q.positions.len() * q.n_heads;
            plan.n_spans[b] = spans(q.positions, shape.keys_seen).count();
            plan.first_item[b] = plan.n_items;
            plan.offset[b] = floats;
            plan.n_items += plan.n_spans[b];
            floats += plan.n_spans[b] * state_floats(plan.rows[b], shape.v_dim);
        }
        (plan.n_items > n_blocks && floats <= SPLIT_FLOATS).then_some(plan)
    }

    /// The block and span index of first-pass item `item`.
    fn item(&self, item: usize) -> (usize, usize) {
        let b = (0..self.n_blocks).rev().find(|&b| self.first_item[b] <= item).unwrap_or(0);
        (b, item - self.first_item[b])
    }

    /// Floats of block `b`'s states, all spans.
    fn states(&self, b: usize, v_dim: usize) -> Range<usize> {
        let len = state_floats(self.rows[b], v_dim);
        self.offset[b]..self.offset[b] + self.n_spans[b] * len
    }
}

/// The split batch: every (block, span) state in parallel, then every block's states merged
/// in span order, finished and emitted.
fn attend_split<'a>(
    pool: &ThreadPool,
    plan: &SplitPlan,
    shape: &BlockShape,
    threads: &mut [f32],
    split: &mut [f32],
    block: &(dyn Fn(usize) -> Block<'a> + Sync),
    emit: &(dyn Fn(usize, &[f32]) + Sync),
) {
    let work_len = work_floats(shape.k_dim, shape.v_dim);
    let per_thread = per_thread(shape);
    let thread_scratch = DisjointSlice::new(threads);
    let states = DisjointSlice::new(split);
    let vd = shape.v_dim;
    pool.parallel_for(plan.n_items, 1, &|thread, items| {
        // SAFETY: thread indices are unique within a job, so per-thread ranges are disjoint.
        let work = unsafe { thread_scratch.range(thread * per_thread..thread * per_thread + work_len) };
        for item in items {
            let (b, s) = plan.item(item);
            let blk = block(b);
            let Some(span) = spans(blk.queries.positions, shape.keys_seen).nth(s) else { continue };
            let len = state_floats(plan.rows[b], vd);
            let at = plan.offset[b] + s * len;
            // SAFETY: (block, span) states are disjoint and each belongs to one item.
            let floats = unsafe { states.range(at..at + len) };
            let mut state = RowState::in_floats(floats, plan.rows[b], vd);
            let (k, seen, params) = (shape.k_dim, shape.keys_seen, shape.params);
            attend_span_with(
                Body::Fastest,
                &blk.queries,
                blk.keys,
                blk.values,
                k,
                vd,
                seen,
                params,
                span,
                work,
                &mut state,
            );
        }
    });
    pool.parallel_for(plan.n_blocks, 1, &|_, items| {
        for b in items {
            // SAFETY: each block's states belong to this item only.
            let floats = unsafe { states.range(plan.states(b, vd)) };
            let len = state_floats(plan.rows[b], vd);
            let (first, rest) = floats.split_at_mut(len);
            let mut acc = RowState::in_floats(first, plan.rows[b], vd);
            for part in rest.chunks_exact_mut(len) {
                merge(&mut acc, &RowState::in_floats(part, plan.rows[b], vd), vd);
            }
            finish(&mut acc, vd);
            emit(b, acc.out);
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use half::f16;

    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0).collect()
    }

    /// A layer's batch split into spans on 2 and 3 threads gives the bits of the unsplit
    /// batch (1 thread) and of [`attend`] per block, for decode steps and short prompt
    /// blocks at depth (4097 keys: 17 spans, the last of one key), a sliding window over a
    /// ring that has wrapped, MLA-like rows (576 wide, one KV head), and a block count at
    /// which splitting stops paying. Each block is emitted once.
    #[test]
    fn split_batches_give_the_bits_of_unsplit_ones() {
        // (k_dim, v_dim, heads per block, KV heads, last position + 1, window, queries)
        let cases = [
            (64, 64, 3, 3, 4097, None, 1),
            (64, 64, 3, 3, 4097, None, 5),
            (20, 12, 2, 2, 900, Some(300), 1),
            (576, 576, 4, 1, 1000, None, 1),
            (8, 8, 1, 3, 257, None, 2),
            (16, 16, 2, 8, 600, None, 1),
        ];
        for (dk, dv, nh, n_kv, end, window, nq) in cases {
            let slots = window.map_or(end, |w| w + QUERY_BLOCK);
            let keys: Vec<f16> = data(n_kv * slots * dk, 1).iter().map(|&x| f16::from_f32(x)).collect();
            let values: Vec<f16> = data(n_kv * slots * dv, 2).iter().map(|&x| f16::from_f32(x)).collect();
            let width = n_kv * nh * dk;
            let q: Vec<f32> = data(nq * width, 3).iter().map(|x| x * 2.0 / (dk as f32).sqrt()).collect();
            let positions: Vec<usize> = (end - nq..end).collect();
            let shape = BlockShape {
                n_heads: nh,
                k_dim: dk,
                v_dim: dv,
                keys_seen: KeyWindow { slots, window },
                params: ScoreParams { scale: 0.4, softcap: None },
            };
            let block = |b: usize| Block {
                queries: Queries { q: &q[b * nh * dk..], stride: width, positions: &positions, n_heads: nh },
                keys: KvRows::F16(&keys[b * slots * dk..(b + 1) * slots * dk]),
                values: KvRows::F16(&values[b * slots * dv..(b + 1) * slots * dv]),
            };
            let direct: Vec<Vec<f32>> = (0..n_kv)
                .map(|b| {
                    let blk = block(b);
                    let mut scratch = vec![f32::NAN; scratch_floats(nh, dk, dv)];
                    let mut out = vec![0.0; nq * nh * dv];
                    attend(
                        &blk.queries,
                        blk.keys,
                        blk.values,
                        dk,
                        dv,
                        shape.keys_seen,
                        shape.params,
                        &mut scratch,
                        &mut out,
                    );
                    out
                })
                .collect();
            for threads in [1, 2, 3] {
                let pool = ThreadPool::new(threads);
                let split = SplitPlan::new(pool.n_threads(), n_kv, &shape, &block).is_some();
                assert_eq!(split, threads > 1 && n_kv < 4 * threads, "{threads} threads, {n_kv} blocks, {end} keys");
                let emitted: Mutex<Vec<Option<Vec<f32>>>> = Mutex::new(vec![None; n_kv]);
                let mut scratch = vec![f32::NAN; scratch_floats_for(&shape, pool.n_threads())];
                attend_blocks(&pool, n_kv, &shape, &mut scratch, &block, &|b, out| {
                    let previous = emitted.lock().unwrap()[b].replace(out.to_vec());
                    assert!(previous.is_none(), "block {b} emitted twice");
                });
                for (b, out) in emitted.into_inner().unwrap().into_iter().enumerate() {
                    let out = out.unwrap_or_else(|| panic!("block {b} never emitted"));
                    assert!(out.iter().all(|x| x.is_finite()));
                    assert_eq!(
                        out, direct[b],
                        "dims {dk}/{dv}, {end} keys, window {window:?}, {threads} threads, block {b}"
                    );
                }
            }
        }
    }

    /// Spans cut at multiples of KEY_SPAN, from the first key any query sees to the last query.
    #[test]
    fn spans_cover_the_visible_keys_once() {
        let all = KeyWindow { slots: 10_000, window: None };
        let spans_of = |p: &[usize], w| spans(p, w).collect::<Vec<_>>();
        assert_eq!(spans_of(&[0], all), vec![0..1]);
        assert_eq!(spans_of(&[255], all), vec![0..256]);
        assert_eq!(spans_of(&[256], all), vec![0..256, 256..257]);
        assert_eq!(spans_of(&[600, 601], all), vec![0..256, 256..512, 512..602]);
        let window = KeyWindow { slots: 400, window: Some(300) };
        assert_eq!(spans_of(&[700], window), vec![401..512, 512..701]);
        assert_eq!(spans_of(&[], all), Vec::<Range<usize>>::new());
    }
}
