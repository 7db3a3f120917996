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
//! The body is compiled twice: generic, and with AVX2+FMA enabled (chosen at run time), so
//! that the dot products, the exp and the value accumulation vectorise 8 wide.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::kv_cache::KvRows;

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

/// f32 working memory one thread needs for [`attend`] with up to `QUERY_BLOCK` queries.
pub fn scratch_floats(n_heads: usize, k_dim: usize, v_dim: usize) -> usize {
    KEY_TILE * (k_dim + v_dim) + KEY_TILE + 2 * QUERY_BLOCK * n_heads
}

/// Converts cache rows to f32.
trait Rows: Copy {
    fn load(self, start: usize, dst: &mut [f32]);
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

/// `out[i][h] = softmax_j(score(q_i,h, k_j)) · v_j` over the keys query `i` may see, for
/// every query `i` of the block and head `h` of the group; `out` is
/// `[positions.len()][n_heads][v_dim]`. `keys`/`values` are all slots of the KV head
/// (`slots * k_dim`, `slots * v_dim`).
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
    macro_rules! run {
        ($k:expr, $v:expr) => {{
            #[cfg(target_arch = "x86_64")]
            if simd_available() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe { attend_avx2(queries, $k, $v, k_dim, v_dim, keys_seen, params, scratch, out) };
                return;
            }
            attend_impl::<_, _, Portable>(queries, $k, $v, k_dim, v_dim, keys_seen, params, scratch, out)
        }};
    }
    match (keys, values) {
        (KvRows::F32(k), KvRows::F32(v)) => run!(k, v),
        (KvRows::F16(k), KvRows::F16(v)) => run!(k, v),
        (KvRows::F32(k), KvRows::F16(v)) => run!(k, v),
        (KvRows::F16(k), KvRows::F32(v)) => run!(k, v),
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn simd_available() -> bool {
    // std caches the CPUID result; this is two relaxed loads.
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2<K: Rows, V: Rows>(
    queries: &Queries<'_>,
    keys: K,
    values: V,
    k_dim: usize,
    v_dim: usize,
    keys_seen: KeyWindow,
    params: ScoreParams,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attend_impl::<K, V, Avx2>(queries, keys, values, k_dim, v_dim, keys_seen, params, scratch, out)
}

/// The arithmetic the attention body is written in, per instruction set.
trait Math {
    /// `a * b + c` (fused where the target has FMA).
    fn madd(a: f32, b: f32, c: f32) -> f32;
    fn dot(a: &[f32], b: &[f32]) -> f32;
}

/// Baseline targets: plain Rust the compiler vectorises as it can.
struct Portable;

impl Math for Portable {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        // `mul_add` is one instruction on aarch64 and with FMA enabled; elsewhere a libm call.
        if cfg!(any(target_arch = "aarch64", target_feature = "fma")) {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }

    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot_portable(a, b)
    }
}

/// x86-64 with AVX2 and FMA. Only instantiated inside [`attend_avx2`], which runs after the
/// CPU was checked for both.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Math for Avx2 {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: `Avx2` is only used by `attend_avx2`, called after detecting AVX2 and FMA.
        unsafe { dot_avx2(a, b) }
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
            lanes[i] = Portable::madd(x[i], y[i], lanes[i]);
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    s
}

/// Dot product with two 8-wide FMA accumulators.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: every load reads 8 floats at i + 8 <= n (or i + 16 <= n) of both slices.
    unsafe {
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), acc1);
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let mut s = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
        for j in i..n {
            s += a[j] * b[j];
        }
        s
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_impl<K: Rows, V: Rows, M: Math>(
    queries: &Queries<'_>,
    keys: K,
    values: V,
    k_dim: usize,
    v_dim: usize,
    keys_seen: KeyWindow,
    params: ScoreParams,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let (nb, nh) = (queries.positions.len(), queries.n_heads);
    let (k_tile, rest) = scratch.split_at_mut(KEY_TILE * k_dim);
    let (v_tile, rest) = rest.split_at_mut(KEY_TILE * v_dim);
    let (scores, rest) = rest.split_at_mut(KEY_TILE);
    let (run_max, rest) = rest.split_at_mut(nb * nh);
    let run_sum = &mut rest[..nb * nh];
    run_max.fill(f32::NEG_INFINITY);
    run_sum.fill(0.0);
    let out = &mut out[..nb * nh * v_dim];
    out.fill(0.0);
    let Some(&last) = queries.positions.iter().max() else { return };
    let first = queries.positions.iter().map(|&p| keys_seen.first(p)).min().unwrap_or(0);

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
                    let mut x = M::dot(qh, k) * params.scale;
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
                    let c = exp::<M>(run_max[at] - new_max);
                    run_sum[at] *= c;
                    o.iter_mut().for_each(|x| *x *= c);
                }
                run_max[at] = new_max;
                for s in sc.iter_mut() {
                    *s = exp::<M>(*s - new_max);
                }
                run_sum[at] += sc.iter().sum::<f32>();
                for (&w, v) in sc.iter().zip(vt[j0 * v_dim..j1 * v_dim].chunks_exact(v_dim)) {
                    for (o, v) in o.iter_mut().zip(v) {
                        *o = M::madd(w, *v, *o);
                    }
                }
            }
        }
        pos += n;
    }
    for (o, &l) in out.chunks_exact_mut(v_dim).zip(run_sum.iter()) {
        // l >= 1 (the maximum contributes exp(0)) for every query: it sees at least itself.
        let inv = 1.0 / l;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// e^x for the softmax (x <= 0 in practice), branch-free and without float-to-int
/// conversions so that loops over it vectorise: x = n ln2 + r with |r| <= ln2/2 (n rounded
/// by the 1.5·2^23 trick, which leaves it in the low mantissa bits), e^r by Cephes' `expf`
/// polynomial, times 2^n built from those bits. Relative error ~2e-7; inputs are clamped to
/// [-87, 88], so results below ~1.6e-38 come out as ~1.6e-38 (negligible next to the softmax
/// maximum's exp(0) = 1).
#[inline(always)]
fn exp<M: Math>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    let t = M::madd(x, LOG2E, ROUND);
    let n = t - ROUND;
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    let r = M::madd(n, -LN2_LO, M::madd(n, -LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = M::madd(p, r, 1.398_199_9e-3);
    p = M::madd(p, r, 8.333_452e-3);
    p = M::madd(p, r, 4.166_579_6e-2);
    p = M::madd(p, r, 1.666_666_5e-1);
    p = M::madd(p, r, 0.5); // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    let e = M::madd(p * r, r, r) + 1.0;
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Plain two-pass softmax attention in f64 over `positions` (ring rows).
    fn reference(q: &[f32], keys: &[f32], values: &[f32], d: usize, rows: &[usize], p: ScoreParams) -> Vec<f64> {
        let scores: Vec<f64> = rows
            .iter()
            .map(|&j| {
                let s: f64 = (0..d).map(|i| q[i] as f64 * keys[j * d + i] as f64).sum::<f64>() * p.scale as f64;
                match p.softcap {
                    Some(c) => c as f64 * (s / c as f64).tanh(),
                    None => s,
                }
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let z: f64 = w.iter().sum();
        (0..d).map(|i| rows.iter().zip(&w).map(|(&j, w)| w * values[j * d + i] as f64).sum::<f64>() / z).collect()
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0).collect()
    }

    #[test]
    fn blocks_equal_two_pass_softmax_across_tiles_windows_and_ring_wrap() {
        let (d, nh, slots) = (8, 2, 77);
        let keys = data(slots * d, 1);
        let values = data(slots * d, 2);
        let q = data(QUERY_BLOCK * nh * d, 3);
        // (first query position, queries, window): single decode steps, blocks crossing tile
        // and ring boundaries, windowed blocks.
        for (p0, nq, window) in [
            (0, 1, None),
            (76, 1, None),
            (100, 1, Some(60)),
            (10, 16, None),
            (60, 16, None),
            (90, 7, Some(40)),
            (5, 3, Some(4)),
        ] {
            for params in [ScoreParams { scale: 0.35, softcap: None }, ScoreParams { scale: 0.35, softcap: Some(1.0) }]
            {
                let positions: Vec<usize> = (p0..p0 + nq).collect();
                let last = p0 + nq - 1;
                if window.is_none() && last >= slots {
                    continue; // a full-attention cache holds every position
                }
                let mut scratch = vec![0.0; scratch_floats(nh, d, d)];
                let mut out = vec![0.0; nq * nh * d];
                let queries = Queries { q: &q, stride: nh * d, positions: &positions, n_heads: nh };
                let seen = KeyWindow { slots, window };
                // The dispatched path (AVX2 here when the CPU has it) and the portable one.
                for portable in [false, true] {
                    if portable {
                        attend_impl::<&[f32], &[f32], Portable>(
                            &queries,
                            &keys,
                            &values,
                            d,
                            d,
                            seen,
                            params,
                            &mut scratch,
                            &mut out,
                        );
                    } else {
                        attend(
                            &queries,
                            KvRows::F32(&keys),
                            KvRows::F32(&values),
                            d,
                            d,
                            seen,
                            params,
                            &mut scratch,
                            &mut out,
                        );
                    }
                    for (i, &p) in positions.iter().enumerate() {
                        let rows: Vec<usize> = (seen.first(p)..=p).map(|j| j % slots).collect();
                        for h in 0..nh {
                            let want = reference(&q[i * nh * d + h * d..], &keys, &values, d, &rows, params);
                            for k in 0..d {
                                let got = out[(i * nh + h) * d + k] as f64;
                                assert!(
                                    (got - want[k]).abs() < 1e-5,
                                    "p0 {p0} nq {nq} window {window:?} portable {portable}: query {i} head {h}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        for fused in [false, true] {
            #[cfg(target_arch = "x86_64")]
            let e = |x: f32| if fused && simd_available() { exp::<Avx2>(x) } else { exp::<Portable>(x) };
            #[cfg(not(target_arch = "x86_64"))]
            let e = |x: f32| exp::<Portable>(x);
            let mut worst = 0.0f64;
            for i in 0..=200_000 {
                let x = -87.0 + i as f32 * (90.0 / 200_000.0);
                let rel = ((e(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
                worst = worst.max(rel);
            }
            assert!(worst < 5e-7, "relative error {worst} (fused {fused})");
            assert_eq!(e(0.0), 1.0);
            assert_eq!(e(-1000.0), e(-87.0));
            assert!(e(-87.0) > 0.0 && e(-87.0) < 2e-38);
        }
    }
}
