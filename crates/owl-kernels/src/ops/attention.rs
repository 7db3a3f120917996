//! Causal attention of a block of queries (consecutive positions of one sequence, the query
//! heads that share one KV head) over that head's cached rows, streamed in key tiles with an
//! online softmax (Milakov & Gimelshein 2018; FlashAttention's recurrence): memory is
//! O(tile), not O(context), so a model runs to its full context length without a scores
//! matrix.
//!
//! For each (query, head): scores of a tile `s_j = softcap(q·k_j * scale)`, running maximum
//! `m`, running denominator `l` and running output `o` are rescaled by `exp(m_old - m_new)`
//! whenever the maximum grows. The result `o / l` equals softmax(s)·V up to f32 rounding.
//! Each key/value tile is converted to f32 once and serves every query of the block (a
//! prompt chunk's queries share almost all their keys).
//!
//! Two bodies: this file's portable one (plain Rust, one (query, head) row at a time; the
//! reference the other is tested against, and the path of CPUs without AVX2), and
//! [`avx2`]'s, chosen at run time, which takes several rows against each key tile in
//! register tiles so that a prompt chunk's queries (and a GQA group's heads) share every
//! key and value load.

use std::ops::Range;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::exp::{exp_poly, madd};
use crate::quant::BlockFormat;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod blocks;

pub use blocks::{attend_blocks, scratch_floats_for, Block, BlockShape};

/// Keys converted and scored at a time.
pub const KEY_TILE: usize = 32;
/// Most queries attended together (a block of a prompt chunk).
pub const QUERY_BLOCK: usize = 16;

/// Score post-processing of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreParams {
    /// Multiplier on q·k (head_dim^-0.5, query_pre_attn_scalar^-0.5, ...).
    pub scale: f32,
    /// Gemma 2's `cap * tanh(s / cap)` after scaling.
    pub softcap: Option<f32>,
}

/// Which cached rows a block of queries sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyWindow {
    /// Rows in the ring: position `p` is row `p % slots`.
    pub slots: usize,
    /// Sliding window (a query at `p` sees `p - window < j <= p`), `None`: all `j <= p`.
    pub window: Option<usize>,
}

impl KeyWindow {
    #[inline]
    fn first(&self, p: usize) -> usize {
        self.window.map_or(0, |w| (p + 1).saturating_sub(w))
    }
}

/// Keys are attended in spans of this many positions (aligned to its multiples), each span's
/// softmax state folded into the running one in position order. A block of queries over a
/// long context is then several independent pieces of work that threads can share (the
/// split-K of flash-decoding, Dao et al. 2023), and the result does not depend on how many
/// threads took part: the spans and the order of their merge are the same either way. A
/// context of at most one span computes exactly as a single online-softmax pass.
pub const KEY_SPAN: usize = 256;

/// f32 working memory one thread needs for [`attend`] with up to `QUERY_BLOCK` queries:
/// the body's tiles ([`work_floats`]), the running maxima and sums, and one span's state.
pub fn scratch_floats(n_heads: usize, k_dim: usize, v_dim: usize) -> usize {
    work_floats(k_dim, v_dim) + 2 * QUERY_BLOCK * n_heads + state_floats(QUERY_BLOCK * n_heads, v_dim)
}

/// f32 working memory of one body call: the converted key and value tiles and one tile's
/// scores (a row's, portable; a row group's, AVX2).
fn work_floats(k_dim: usize, v_dim: usize) -> usize {
    KEY_TILE * (k_dim + v_dim) + SCORE_FLOATS
}

/// Floats of the softmax state of `rows` rows: outputs, maxima, sums.
fn state_floats(rows: usize, v_dim: usize) -> usize {
    rows * (v_dim + 2)
}

/// Scores (weights) kept at a time: a row's tile (portable) or a row group's (AVX2).
#[cfg(target_arch = "x86_64")]
const SCORE_FLOATS: usize = avx2::GROUP_SCRATCH;
#[cfg(not(target_arch = "x86_64"))]
const SCORE_FLOATS: usize = KEY_TILE;

/// Converts cache rows to f32.
trait Rows: Copy {
    fn load(self, start: usize, dst: &mut [f32]);

    /// [`load`](Rows::load) with F16C conversions.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load_f16c(self, start: usize, dst: &mut [f32]) {
        self.load(start, dst)
    }
}

impl Rows for &[f32] {
    #[inline(always)]
    fn load(self, start: usize, dst: &mut [f32]) {
        dst.copy_from_slice(&self[start..start + dst.len()]);
    }
}

impl Rows for &[f16] {
    #[inline(always)]
    fn load(self, start: usize, dst: &mut [f32]) {
        self[start..start + dst.len()].convert_to_f32_slice(dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_f16c(self, start: usize, dst: &mut [f32]) {
        // SAFETY: the caller guarantees AVX2 and F16C.
        unsafe { avx2::f16_to_f32(&self[start..start + dst.len()], dst) }
    }
}

/// A borrowed run of KV-cache rows, typed.
#[derive(Debug, Clone, Copy)]
pub enum KvRows<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
    /// Q8_0 blocks (34 bytes per 32 values).
    Q8_0(&'a [u8]),
}

/// Q8_0 cache rows (34-byte blocks of 32 values; rows are whole blocks).
#[derive(Clone, Copy)]
struct Q8Rows<'a>(&'a [u8]);

impl Rows for Q8Rows<'_> {
    #[inline(always)]
    fn load(self, start: usize, dst: &mut [f32]) {
        let (block, bytes) = (BlockFormat::Q8_0.block_elems(), BlockFormat::Q8_0.block_bytes());
        let (from, to) = (start / block * bytes, (start + dst.len()) / block * bytes);
        // The AVX2 dequantizer where the CPU has it (the same bits as the scalar one).
        #[cfg(target_arch = "x86_64")]
        let done = crate::quant::dequantize_avx2::dequantize_row(BlockFormat::Q8_0, &self.0[from..to], dst);
        #[cfg(not(target_arch = "x86_64"))]
        let done = crate::quant::dequantize_row(BlockFormat::Q8_0, &self.0[from..to], dst);
        // Whole blocks by construction (the cache refuses other head sizes): not reached.
        if done.is_err() {
            dst.fill(0.0);
        }
    }
}

/// Any cache rows, dispatched per tile (keys and values of different types; a cache never
/// makes them, but the pair is typed apart).
impl Rows for KvRows<'_> {
    #[inline(always)]
    fn load(self, start: usize, dst: &mut [f32]) {
        match self {
            KvRows::F16(r) => r.load(start, dst),
            KvRows::F32(r) => r.load(start, dst),
            KvRows::Q8_0(r) => Q8Rows(r).load(start, dst),
        }
    }
}

/// The queries of one block and where their results go.
pub struct Queries<'a> {
    /// Query `i`, head `h` is `q[i * stride + h * k_dim ..][..k_dim]`.
    pub q: &'a [f32],
    pub stride: usize,
    /// Positions of the queries: one sequence, increasing.
    pub positions: &'a [usize],
    pub n_heads: usize,
}

/// The online-softmax state of a block's rows (`r = query * n_heads + head`): unnormalised
/// outputs `[rows][v_dim]`, running maxima and running sums.
pub(crate) struct RowState<'a> {
    pub out: &'a mut [f32],
    pub max: &'a mut [f32],
    pub sum: &'a mut [f32],
}

impl<'a> RowState<'a> {
    /// The state of `rows` rows laid out in `floats` (at least [`state_floats`]).
    fn in_floats(floats: &'a mut [f32], rows: usize, v_dim: usize) -> Self {
        let (out, rest) = floats.split_at_mut(rows * v_dim);
        let (max, rest) = rest.split_at_mut(rows);
        RowState { out, max, sum: &mut rest[..rows] }
    }
}

/// The key spans a block of queries sees: `[first, last]` of its rows' visible keys cut at
/// multiples of [`KEY_SPAN`], in position order. Empty for a block without queries.
pub(crate) fn spans(positions: &[usize], keys_seen: KeyWindow) -> impl Iterator<Item = Range<usize>> {
    let end = positions.iter().max().map_or(0, |&p| p + 1);
    let first = positions.iter().map(|&p| keys_seen.first(p)).min().unwrap_or(0);
    (first / KEY_SPAN..end.div_ceil(KEY_SPAN)).map(move |k| (k * KEY_SPAN).max(first)..((k + 1) * KEY_SPAN).min(end))
}

/// Folds `part`, the state after a later span, into `acc`: `m = max(m_a, m_p)`, then
/// `o = o_a e^(m_a - m) + o_p e^(m_p - m)` and the sums alike. A row that saw no key of
/// the span (`m_p = -inf`: causal or window edge) keeps its state.
pub(crate) fn merge(acc: &mut RowState<'_>, part: &RowState<'_>, v_dim: usize) {
    for r in 0..acc.max.len() {
        let (ma, mp) = (acc.max[r], part.max[r]);
        if mp == f32::NEG_INFINITY {
            continue;
        }
        let o = &mut acc.out[r * v_dim..(r + 1) * v_dim];
        let p = &part.out[r * v_dim..(r + 1) * v_dim];
        if ma == f32::NEG_INFINITY {
            o.copy_from_slice(p);
            acc.max[r] = mp;
            acc.sum[r] = part.sum[r];
        } else if mp <= ma {
            let c = exp_poly(mp - ma);
            o.iter_mut().zip(p).for_each(|(o, &p)| *o = madd(p, c, *o));
            acc.sum[r] = madd(part.sum[r], c, acc.sum[r]);
        } else {
            let c = exp_poly(ma - mp);
            o.iter_mut().zip(p).for_each(|(o, &p)| *o = madd(*o, c, p));
            acc.sum[r] = madd(acc.sum[r], c, part.sum[r]);
            acc.max[r] = mp;
        }
    }
}

/// `o / l` per row: the softmax-weighted values.
pub(crate) fn finish(state: &mut RowState<'_>, v_dim: usize) {
    for (o, &l) in state.out.chunks_exact_mut(v_dim).zip(state.sum.iter()) {
        // l >= 1 (the maximum contributes exp(0)) for every query: it sees at least itself.
        let inv = 1.0 / l;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// `out[i][h] = softmax_j(score(q_i,h, k_j)) · v_j` over the keys query `i` may see, for
/// every query `i` of the block and head `h` of the group; `out` is
/// `[positions.len()][n_heads][v_dim]`. `keys`/`values` are all slots of the KV head
/// (`slots * k_dim`, `slots * v_dim`). The keys are taken a [`KEY_SPAN`] at a time, each
/// span's state merged into the running one.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    queries: &Queries<'_>,
    keys: KvRows<'_>,
    values: KvRows<'_>,
    k_dim: usize,
    v_dim: usize,
    keys_seen: KeyWindow,
    params: ScoreParams,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attend_with(Body::Fastest, queries, keys, values, k_dim, v_dim, keys_seen, params, scratch, out)
}

/// Which body computes a span: the fastest the CPU runs, or a named one (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Fastest,
    #[cfg(test)]
    Portable,
    #[cfg(all(test, target_arch = "x86_64"))]
    Avx2,
}

/// [`attend`] with the body chosen.
#[allow(clippy::too_many_arguments)]
fn attend_with(
    body: Body,
    queries: &Queries<'_>,
    keys: KvRows<'_>,
    values: KvRows<'_>,
    k_dim: usize,
    v_dim: usize,
    keys_seen: KeyWindow,
    params: ScoreParams,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let rows = queries.positions.len() * queries.n_heads;
    let (work, rest) = scratch.split_at_mut(work_floats(k_dim, v_dim));
    let (max, rest) = rest.split_at_mut(rows);
    let (sum, rest) = rest.split_at_mut(rows);
    let mut acc = RowState { out: &mut out[..rows * v_dim], max, sum };
    let mut part = RowState::in_floats(rest, rows, v_dim);
    for (i, span) in spans(queries.positions, keys_seen).enumerate() {
        let state = if i == 0 { &mut acc } else { &mut part };
        attend_span_with(body, queries, keys, values, k_dim, v_dim, keys_seen, params, span, work, state);
        if i > 0 {
            merge(&mut acc, &part, v_dim);
        }
    }
    finish(&mut acc, v_dim);
}

/// The softmax state of the block's rows over the keys at positions `span` (the rows' own
/// limits apply within it), written to `state` (initialised here), by `body`. `work` holds
/// [`work_floats`] values.
#[allow(clippy::too_many_arguments)]
fn attend_span_with(
    body: Body,
    queries: &Queries<'_>,
    keys: KvRows<'_>,
    values: KvRows<'_>,
    k_dim: usize,
    v_dim: usize,
    keys_seen: KeyWindow,
    params: ScoreParams,
    span: Range<usize>,
    work: &mut [f32],
    state: &mut RowState<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    let avx2 = match body {
        Body::Fastest => super::float_simd_available(),
        #[cfg(test)]
        Body::Portable => false,
        #[cfg(test)]
        Body::Avx2 => true,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = body;
    macro_rules! run {
        ($k:expr, $v:expr) => {{
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2, FMA and F16C (checked by `float_simd_available`, or by
                // the test that names this body).
                unsafe { avx2::attend(queries, $k, $v, k_dim, v_dim, keys_seen, params, span, work, state) };
                return;
            }
            attend_portable(queries, $k, $v, k_dim, v_dim, keys_seen, params, span, work, state)
        }};
    }
    match (keys, values) {
        (KvRows::F32(k), KvRows::F32(v)) => run!(k, v),
        (KvRows::F16(k), KvRows::F16(v)) => run!(k, v),
        (KvRows::F32(k), KvRows::F16(v)) => run!(k, v),
        (KvRows::F16(k), KvRows::F32(v)) => run!(k, v),
        (KvRows::Q8_0(k), KvRows::Q8_0(v)) => run!(Q8Rows(k), Q8Rows(v)),
        (k, v) => run!(k, v),
    }
}

/// Dot product in 8 independent lanes (no serial dependency chain).
#[inline(always)]
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] = madd(x[i], y[i], lanes[i]);
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    s
}

/// The portable body: one (query, head) row at a time over each key tile (see
/// [`attend_span`]).
#[allow(clippy::too_many_arguments)]
fn attend_portable<K: Rows, V: Rows>(
    queries: &Queries<'_>,
    keys: K,
    values: V,
    k_dim: usize,
    v_dim: usize,
    keys_seen: KeyWindow,
    params: ScoreParams,
    span: Range<usize>,
    work: &mut [f32],
    state: &mut RowState<'_>,
) {
    let (nb, nh) = (queries.positions.len(), queries.n_heads);
    let (k_tile, rest) = work.split_at_mut(KEY_TILE * k_dim);
    let (v_tile, rest) = rest.split_at_mut(KEY_TILE * v_dim);
    let scores = &mut rest[..KEY_TILE];
    let run_max = &mut state.max[..nb * nh];
    let run_sum = &mut state.sum[..nb * nh];
    run_max.fill(f32::NEG_INFINITY);
    run_sum.fill(0.0);
    let out = &mut state.out[..nb * nh * v_dim];
    out.fill(0.0);
    let Some(&last) = queries.positions.iter().max() else { return };
    if span.is_empty() {
        return;
    }
    let last = last.min(span.end - 1);
    let first = queries.positions.iter().map(|&p| keys_seen.first(p)).min().unwrap_or(0).max(span.start);

    let mut pos = first;
    while pos <= last {
        // A tile of consecutive positions that are also consecutive rows of the ring.
        let slot = pos % keys_seen.slots;
        let n = (last + 1 - pos).min(keys_seen.slots - slot).min(KEY_TILE);
        let kt = &mut k_tile[..n * k_dim];
        let vt = &mut v_tile[..n * v_dim];
        keys.load(slot * k_dim, kt);
        values.load(slot * v_dim, vt);

        for (i, &p) in queries.positions.iter().enumerate() {
            // The part of this tile query i may see.
            let (a, b) = (keys_seen.first(p).max(pos), p.min(pos + n - 1));
            if a > b {
                continue;
            }
            let (j0, j1) = (a - pos, b + 1 - pos);
            for h in 0..nh {
                let qh = &queries.q[i * queries.stride + h * k_dim..][..k_dim];
                let sc = &mut scores[j0..j1];
                let mut tile_max = f32::NEG_INFINITY;
                for (s, k) in sc.iter_mut().zip(kt[j0 * k_dim..j1 * k_dim].chunks_exact(k_dim)) {
                    let mut x = dot_portable(qh, k) * params.scale;
                    if let Some(cap) = params.softcap {
                        x = cap * (x / cap).tanh();
                    }
                    *s = x;
                    tile_max = tile_max.max(x);
                }
                let at = i * nh + h;
                let o = &mut out[at * v_dim..(at + 1) * v_dim];
                let new_max = run_max[at].max(tile_max);
                if run_max[at] != f32::NEG_INFINITY && new_max > run_max[at] {
                    let c = exp_poly(run_max[at] - new_max);
                    run_sum[at] *= c;
                    o.iter_mut().for_each(|x| *x *= c);
                }
                run_max[at] = new_max;
                for s in sc.iter_mut() {
                    *s = exp_poly(*s - new_max);
                }
                run_sum[at] += sc.iter().sum::<f32>();
                for (&w, v) in sc.iter().zip(vt[j0 * v_dim..j1 * v_dim].chunks_exact(v_dim)) {
                    for (o, v) in o.iter_mut().zip(v) {
                        *o = madd(w, *v, *o);
                    }
                }
            }
        }
        pos += n;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Plain two-pass softmax attention in f64 over `rows` (ring rows); `q` has `dk` values.
    fn reference(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        dk: usize,
        dv: usize,
        rows: &[usize],
        p: ScoreParams,
    ) -> Vec<f64> {
        let scores: Vec<f64> = rows
            .iter()
            .map(|&j| {
                let s: f64 = (0..dk).map(|i| q[i] as f64 * keys[j * dk + i] as f64).sum::<f64>() * p.scale as f64;
                match p.softcap {
                    Some(c) => c as f64 * (s / c as f64).tanh(),
                    None => s,
                }
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let z: f64 = w.iter().sum();
        (0..dv).map(|i| rows.iter().zip(&w).map(|(&j, w)| w * values[j * dv + i] as f64).sum::<f64>() / z).collect()
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0).collect()
    }

    /// Which body runs a case.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Path {
        Dispatched,
        Portable,
        #[cfg(target_arch = "x86_64")]
        Avx2,
    }

    /// The cached rows of a case: typed (what [`attend`] takes) and as f32 (what the bodies
    /// take), with their widths.
    struct Rows2<'a> {
        typed: (KvRows<'a>, KvRows<'a>),
        floats: (&'a [f32], &'a [f32]),
        dk: usize,
        dv: usize,
    }

    /// Runs one body over the rows.
    fn attend_on(
        path: Path,
        queries: &Queries<'_>,
        rows: Rows2<'_>,
        seen: KeyWindow,
        params: ScoreParams,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let ((kr, vr), (kf, vf), dk, dv) = (rows.typed, rows.floats, rows.dk, rows.dv);
        let (kf, vf) = (KvRows::F32(kf), KvRows::F32(vf));
        match path {
            Path::Dispatched => attend(queries, kr, vr, dk, dv, seen, params, scratch, out),
            Path::Portable => attend_with(Body::Portable, queries, kf, vf, dk, dv, seen, params, scratch, out),
            // Listed only when the CPU has AVX2, FMA and F16C.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => attend_with(Body::Avx2, queries, kf, vf, dk, dv, seen, params, scratch, out),
        }
    }

    fn paths() -> Vec<Path> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut p = vec![Path::Dispatched, Path::Portable];
        #[cfg(target_arch = "x86_64")]
        if super::super::float_simd_available() {
            p.push(Path::Avx2);
        }
        p
    }

    /// Every body against the f64 two-pass softmax: single decode steps, blocks crossing tile
    /// and ring boundaries, windowed blocks (rows of one group seeing different key ranges,
    /// some none of a tile), softcap; head sizes with and without 8-wide tails, k_dim != v_dim
    /// (MLA), groups of 1 to 7 heads; F32 and F16 rows. Scratch starts as NaN, so a stale
    /// value that leaked into a result would show. Tolerance 1e-5 absolute on outputs of
    /// magnitude ~1 (f32 accumulation over <= 100 keys of <= 256 dims; measured worst is
    /// printed).
    #[test]
    fn blocks_equal_two_pass_softmax_across_tiles_windows_and_ring_wrap() {
        let slots = 77;
        let mut worst = [0.0f64; 3];
        for (dk, dv, nh) in [(8, 8, 2), (20, 12, 3), (64, 64, 7), (256, 256, 4), (24, 16, 1), (128, 128, 5)] {
            let keys = data(slots * dk, 1);
            let values = data(slots * dv, 2);
            let keys16: Vec<f16> = keys.iter().map(|&x| f16::from_f32(x)).collect();
            let values16: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
            let keys_r: Vec<f32> = keys16.iter().map(|x| x.to_f32()).collect();
            let values_r: Vec<f32> = values16.iter().map(|x| x.to_f32()).collect();
            // Scaled so that scores spread over several units (a peaked softmax).
            let q: Vec<f32> = data(QUERY_BLOCK * nh * dk, 3).iter().map(|x| x * 4.0 / (dk as f32).sqrt()).collect();
            for (p0, nq, window) in [
                (0, 1, None),
                (76, 1, None),
                (100, 1, Some(60)),
                (10, 16, None),
                (60, 16, None),
                (90, 7, Some(40)),
                (5, 3, Some(4)),
                (33, 16, Some(9)),
            ] {
                for params in
                    [ScoreParams { scale: 0.35, softcap: None }, ScoreParams { scale: 0.35, softcap: Some(1.5) }]
                {
                    let positions: Vec<usize> = (p0..p0 + nq).collect();
                    let last = p0 + nq - 1;
                    if window.is_none() && last >= slots {
                        continue; // a full-attention cache holds every position
                    }
                    let mut out = vec![0.0; nq * nh * dv];
                    let queries = Queries { q: &q, stride: nh * dk, positions: &positions, n_heads: nh };
                    let seen = KeyWindow { slots, window };
                    for path in paths() {
                        for f16_rows in [false, true] {
                            let mut scratch = vec![f32::NAN; scratch_floats(nh, dk, dv)];
                            let (kr, vr) = if f16_rows {
                                (KvRows::F16(&keys16), KvRows::F16(&values16))
                            } else {
                                (KvRows::F32(&keys), KvRows::F32(&values))
                            };
                            let (kf, vf): (&[f32], &[f32]) =
                                if f16_rows { (&keys_r, &values_r) } else { (&keys, &values) };
                            let rows = Rows2 { typed: (kr, vr), floats: (kf, vf), dk, dv };
                            attend_on(path, &queries, rows, seen, params, &mut scratch, &mut out);
                            for (i, &p) in positions.iter().enumerate() {
                                let rows: Vec<usize> = (seen.first(p)..=p).map(|j| j % slots).collect();
                                for h in 0..nh {
                                    let want = reference(&q[i * nh * dk + h * dk..], kf, vf, dk, dv, &rows, params);
                                    for k in 0..dv {
                                        let err = (out[(i * nh + h) * dv + k] as f64 - want[k]).abs();
                                        worst[path as usize] = worst[path as usize].max(err);
                                        assert!(
                                            err < 1e-5,
                                            "dims {dk}/{dv} x {nh} heads, p0 {p0} nq {nq} window {window:?} \
                                             {params:?} {path:?} f16 {f16_rows}: query {i} head {h} dim {k}: err {err:e}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        println!(
            "worst |attend - f64 reference|: dispatched {:.2e}, portable {:.2e}, avx2 {:.2e}",
            worst[0], worst[1], worst[2]
        );
    }

    /// At depth: a decode query and a 16-query prompt block attending over 1, 17, 512 and
    /// 4097 cached keys (the last crossing a tile boundary by one key), F32 and F16 rows,
    /// every body, against the f64 two-pass softmax. The streaming (online-softmax) tiles
    /// must not drift with length: 1e-5 absolute on outputs of magnitude ~1 up to 100 keys,
    /// growing as the square root of the keys beyond (f32 sums of `len` weighted values:
    /// 6.4e-5 at 4097; measured worst printed). A wrong rescale is off by 1e-2 or more.
    #[test]
    fn long_contexts_equal_the_two_pass_softmax() {
        let (dk, dv, nh) = (64, 64, 3);
        for len in [1usize, 17, 512, 4097] {
            let tol = 1e-5 * (len as f64 / 100.0).sqrt().max(1.0);
            let mut worst = 0f64;
            let slots = len + QUERY_BLOCK;
            let keys = data(slots * dk, 11);
            let values = data(slots * dv, 12);
            let keys16: Vec<f16> = keys.iter().map(|&x| f16::from_f32(x)).collect();
            let values16: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
            let keys_r: Vec<f32> = keys16.iter().map(|x| x.to_f32()).collect();
            let values_r: Vec<f32> = values16.iter().map(|x| x.to_f32()).collect();
            let q: Vec<f32> = data(QUERY_BLOCK * nh * dk, 13).iter().map(|x| x * 2.0 / (dk as f32).sqrt()).collect();
            let params = ScoreParams { scale: 0.5, softcap: None };
            let seen = KeyWindow { slots, window: None };
            // One decode query at position len - 1 (sees `len` keys); a block of 16 ending there.
            for nq in [1, QUERY_BLOCK.min(len)] {
                let positions: Vec<usize> = (len - nq..len).collect();
                let queries = Queries { q: &q, stride: nh * dk, positions: &positions, n_heads: nh };
                for path in paths() {
                    for f16_rows in [false, true] {
                        let mut scratch = vec![f32::NAN; scratch_floats(nh, dk, dv)];
                        let mut out = vec![0.0; nq * nh * dv];
                        let (kf, vf): (&[f32], &[f32]) = if f16_rows { (&keys_r, &values_r) } else { (&keys, &values) };
                        let (kr, vr) = if f16_rows {
                            (KvRows::F16(&keys16), KvRows::F16(&values16))
                        } else {
                            (KvRows::F32(&keys), KvRows::F32(&values))
                        };
                        let rows = Rows2 { typed: (kr, vr), floats: (kf, vf), dk, dv };
                        attend_on(path, &queries, rows, seen, params, &mut scratch, &mut out);
                        for (i, &p) in positions.iter().enumerate() {
                            let rows: Vec<usize> = (0..=p).collect();
                            for h in 0..nh {
                                let want = reference(&q[i * nh * dk + h * dk..], kf, vf, dk, dv, &rows, params);
                                for (k, w) in want.iter().enumerate() {
                                    let err = (out[(i * nh + h) * dv + k] as f64 - w).abs();
                                    worst = worst.max(err);
                                    assert!(
                                        err < tol,
                                        "len {len} nq {nq} {path:?} f16 {f16_rows}: ({i}, {h}, {k}) err {err:e}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
            println!("{len} keys: worst |attend - f64 reference| {worst:.2e} (tolerance {tol:.1e})");
        }
    }

    /// Q8_0 rows (and a mixed pair, through the per-tile dispatch) give the bits of F32 rows
    /// holding the same dequantized values: the cache type changes what is stored, never
    /// how attention computes.
    #[test]
    fn q8_0_rows_attend_as_their_dequantized_values() {
        use crate::quant::{dequantize_row, quantize_row};
        use crate::BlockFormat;
        let (slots, dk, dv, nh) = (50, 64, 32, 3);
        let quantized = |x: &[f32]| {
            let mut bytes = vec![0u8; x.len() / 32 * 34];
            quantize_row(BlockFormat::Q8_0, x, &mut bytes).unwrap();
            let mut back = vec![0f32; x.len()];
            dequantize_row(BlockFormat::Q8_0, &bytes, &mut back).unwrap();
            (bytes, back)
        };
        let (kq, kf) = quantized(&data(slots * dk, 1));
        let (vq, vf) = quantized(&data(slots * dv, 2));
        let q: Vec<f32> = data(QUERY_BLOCK * nh * dk, 3).iter().map(|x| x * 0.5).collect();
        for (p0, nq, window) in [(0, 1, None), (49, 1, None), (20, 16, None), (60, 5, Some(30))] {
            let positions: Vec<usize> = (p0..p0 + nq).collect();
            let queries = Queries { q: &q, stride: nh * dk, positions: &positions, n_heads: nh };
            let seen = KeyWindow { slots, window };
            let params = ScoreParams { scale: 0.125, softcap: None };
            let run = |k: KvRows<'_>, v: KvRows<'_>| {
                let mut scratch = vec![f32::NAN; scratch_floats(nh, dk, dv)];
                let mut out = vec![0.0; nq * nh * dv];
                attend(&queries, k, v, dk, dv, seen, params, &mut scratch, &mut out);
                out
            };
            let want = run(KvRows::F32(&kf), KvRows::F32(&vf));
            assert_eq!(run(KvRows::Q8_0(&kq), KvRows::Q8_0(&vq)), want, "p0 {p0} nq {nq}");
            assert_eq!(run(KvRows::Q8_0(&kq), KvRows::F32(&vf)), want, "mixed, p0 {p0} nq {nq}");
        }
    }
}
