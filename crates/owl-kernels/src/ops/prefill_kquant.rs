//! Prefill (many tokens) for Q4_K, Q5_K and Q6_K on AVX2: a chunk of weight rows is unpacked
//! once into a *K panel* (unsigned codes, per-sub-block i16 scale vectors, the min/offset
//! coefficients and the super-block scales), then register tiles of 1 row × 4 tokens sweep
//! it against the Q8_K activations as they are (the same companion format as ggml, so the
//! numerics track llama.cpp).
//!
//! Per 32-element sub-block `j` and (row, token) pair the tile does `maddubs(q, a)` then
//! `madd(·, s_j)` with the row's i16 scale vector `s_j` (a per-block scale in place of the
//! `ones` of the 32-element panels), so the sub-block scales are applied in exact integer
//! arithmetic, as ggml's one-row kernels do, and adds it to an i32 sum of the super-block:
//! three integer ops per pair and sub-block, against five for the int8 panels. Per
//! super-block that sum is converted once and scaled by `d_w·d_a`, and the offset term is
//! one more `madd` of the row's 16 i16 coefficients with the token's Q8_K `bsums`:
//! - Q4_K / Q5_K: `w = d·sc·q − dmin·m` (sub-blocks of 32): `s_j = sc_j` in all lanes,
//!   coefficients `m_j` twice (the two 16-sums of sub-block `j`), scaled by `−dmin·d_a`;
//! - Q6_K: `w = d·sc·(q − 32)` (scales per 16): `s_j` holds `sc_{2j}` in lanes 0..8 and
//!   `sc_{2j+1}` in lanes 8..16 (maddubs lane `k` holds elements `2k, 2k+1`), coefficients
//!   `32·sc_k`, subtracted from the integer sum before conversion.
//!
//! Integer sums are exact (bounds at [`unpack_rows`]); only the float accumulation order
//! differs from the one-row kernels (~1e-7 relative).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::prefill_int8::TileSource;
use crate::quant::q4_k::{get_scale_min_k4, BlockQ4K};
use crate::quant::q5_k::BlockQ5K;
use crate::quant::q6_k::BlockQ6K;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::{BlockFormat, QK_K};

/// 32-element sub-blocks per super-block.
const SUBS: usize = QK_K / 32;

/// Bytes of one super-block in a panel: codes, 8 scale vectors, 16 coefficients, 2 floats.
const SB_BYTES: usize = QK_K + SUBS * 32 + 32 + 8;

/// Bytes of a Q8_K activation block, and where its fields start.
const ACT_BLOCK: usize = std::mem::size_of::<BlockQ8K>();
const ACT_QS: usize = 4;
const ACT_BSUMS: usize = 4 + QK_K;

/// How the offset term of a K format joins the sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KPanelKind {
    /// Q4_K, Q5_K: a min with its own scale (`−dmin·d_a`).
    Min,
    /// Q6_K: the `−32` code offset, same scale as the quants (subtracted in integers).
    Offset32,
}

/// The K panel kind of a weight format, if it has one.
pub(crate) const fn kpanel_kind(format: BlockFormat) -> Option<KPanelKind> {
    match format {
        BlockFormat::Q4_K | BlockFormat::Q5_K => Some(KPanelKind::Min),
        BlockFormat::Q6_K => Some(KPanelKind::Offset32),
        _ => None,
    }
}

/// Bytes of one K panel for `rows` rows of `nsb` super-blocks.
pub(crate) const fn kpanel_bytes(rows: usize, nsb: usize) -> usize {
    (rows * nsb * SB_BYTES).next_multiple_of(64)
}

/// A K panel of `rows·nsb` super-blocks: `q` the codes (256 each, element order), `sc` the
/// scale vectors (8 × 16 i16 each), `mins` the offset coefficients (16 i16 each, one per
/// Q8_K `bsums` entry), `d` and `dmin` the float scales of the quants and of the offsets.
pub(crate) struct KPanel<'a> {
    pub q: &'a mut [u8],
    pub sc: &'a mut [i16],
    pub mins: &'a mut [i16],
    pub d: &'a mut [f32],
    pub dmin: &'a mut [f32],
}

impl<'a> KPanel<'a> {
    /// Splits a panel-sized byte buffer (64-byte aligned) for `rows` rows of `nsb` super-blocks.
    pub(crate) fn from_bytes(buf: &'a mut [u8], rows: usize, nsb: usize) -> Self {
        let n = rows * nsb;
        let (q, rest) = buf.split_at_mut(n * QK_K);
        let (sc, rest) = rest.split_at_mut(n * SUBS * 32);
        let (mins, rest) = rest.split_at_mut(n * 32);
        let (d, rest) = rest.split_at_mut(n * 4);
        let dmin = &mut rest[..n * 4];
        KPanel {
            q,
            sc: bytemuck::cast_slice_mut(sc),
            mins: bytemuck::cast_slice_mut(mins),
            d: bytemuck::cast_slice_mut(d),
            dmin: bytemuck::cast_slice_mut(dmin),
        }
    }
}

/// Unpacks `rows` weight rows of `nsb` super-blocks (starting at `w`) into `panel`.
///
/// Integer bounds (per i32 lane and super-block, |a| ≤ 127 and |bsum| ≤ 2032): Q4_K/Q5_K
/// `8 · 2·63·(2·31·127)` < 2^23 and `16 · 63·2032` < 2^21; Q6_K `8 · 2·128·(2·63·127)` < 2^25
/// and `16 · 32·128·2032` < 2^27 — far from i32 overflow, and `maddubs` never saturates
/// (`2·63·127` < 2^15).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn unpack_rows(format: BlockFormat, w: &[u8], rows: usize, nsb: usize, panel: &mut KPanel<'_>) {
    let n = rows * nsb;
    let q_out = bytemuck::cast_slice_mut::<u8, [u8; QK_K]>(&mut panel.q[..n * QK_K]);
    let sc_out = bytemuck::cast_slice_mut::<i16, [i16; SUBS * 16]>(&mut panel.sc[..n * SUBS * 16]);
    let mins_out = bytemuck::cast_slice_mut::<i16, [i16; 16]>(&mut panel.mins[..n * 16]);
    let outs = q_out.iter_mut().zip(sc_out).zip(mins_out).zip(panel.d.iter_mut().zip(panel.dmin.iter_mut()));
    // SAFETY (all three arms): AVX2 guaranteed by the caller.
    unsafe {
        match format {
            BlockFormat::Q4_K => {
                let blocks: &[BlockQ4K] = bytemuck::cast_slice(&w[..n * std::mem::size_of::<BlockQ4K>()]);
                for (b, (((q, sc), mins), (d, dmin))) in blocks.iter().zip(outs) {
                    unpack_q45k(&b.scales, &b.qs, None, q, sc, mins);
                    (*d, *dmin) = (b.d(), -b.dmin());
                }
            }
            BlockFormat::Q5_K => {
                let blocks: &[BlockQ5K] = bytemuck::cast_slice(&w[..n * std::mem::size_of::<BlockQ5K>()]);
                for (b, (((q, sc), mins), (d, dmin))) in blocks.iter().zip(outs) {
                    unpack_q45k(&b.scales, &b.qs, Some(&b.qh), q, sc, mins);
                    (*d, *dmin) = (b.d(), -b.dmin());
                }
            }
            BlockFormat::Q6_K => {
                let blocks: &[BlockQ6K] = bytemuck::cast_slice(&w[..n * std::mem::size_of::<BlockQ6K>()]);
                for (b, (((q, sc), mins), (d, dmin))) in blocks.iter().zip(outs) {
                    unpack_q6k(b, q, sc, mins);
                    (*d, *dmin) = (b.d(), 0.0);
                }
            }
            // `kpanel_kind` admits no other format.
            _ => unreachable!("no K panel for {format:?}"),
        }
    }
}

/// One Q4_K (`qh = None`) or Q5_K super-block: codes, scale vectors (`sc_j` in all lanes)
/// and coefficients (`m_j` for both 16-sums of sub-block `j`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q45k(
    scales: &[u8; 12],
    qs: &[u8; QK_K / 2],
    qh: Option<&[u8; 32]>,
    q: &mut [u8; QK_K],
    sc: &mut [i16; SUBS * 16],
    mins: &mut [i16; 16],
) {
    let qs: &[[u8; 32]; 4] = bytemuck::cast_ref(qs);
    let q: &mut [[u8; 32]; SUBS] = bytemuck::cast_mut(q);
    // SAFETY: AVX2 guaranteed by the caller; loads and stores through 32-byte arrays.
    unsafe {
        let low4 = _mm256_set1_epi8(0x0F);
        let qh = qh.map(|h| _mm256_loadu_si256(h.as_ptr().cast()));
        for j in 0..SUBS / 2 {
            // Element 64j + 32h + l is nibble h of qs[32j + l]; Q5_K's fifth bit is bit
            // 2j + h of qh[l].
            let v = _mm256_loadu_si256(qs[j].as_ptr().cast());
            let mut lo = _mm256_and_si256(v, low4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
            if let Some(qh) = qh {
                lo = _mm256_or_si256(lo, fifth_bit(qh, 2 * j));
                hi = _mm256_or_si256(hi, fifth_bit(qh, 2 * j + 1));
            }
            _mm256_storeu_si256(q[2 * j].as_mut_ptr().cast(), lo);
            _mm256_storeu_si256(q[2 * j + 1].as_mut_ptr().cast(), hi);
        }
    }
    for j in 0..SUBS {
        let (s, m) = get_scale_min_k4(j, scales);
        sc[16 * j..16 * j + 16].fill(s as i16);
        mins[2 * j] = m as i16;
        mins[2 * j + 1] = m as i16;
    }
}

/// One Q6_K super-block: codes `q` (0..64), scale vectors (`sc_{2j}`, `sc_{2j+1}` in the
/// two halves) and coefficients `32·sc_k`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q6k(b: &BlockQ6K, q: &mut [u8; QK_K], sc: &mut [i16; SUBS * 16], mins: &mut [i16; 16]) {
    let ql: &[[u8; 32]; 4] = bytemuck::cast_ref(&b.ql);
    let qh: &[[u8; 32]; 2] = bytemuck::cast_ref(&b.qh);
    let q: &mut [[u8; 32]; SUBS] = bytemuck::cast_mut(q);
    // SAFETY: AVX2 guaranteed by the caller; loads and stores through 32-byte arrays.
    unsafe {
        let (low4, low2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
        for n in 0..2 {
            // Element 128n + 32k + l: nibble k/2 of ql[64n + 32(k%2) + l], top bits
            // 2k..2k+2 of qh[32n + l]. 16-bit shifts move bits across bytes only above
            // the bits kept by the masks.
            let h = _mm256_loadu_si256(qh[n].as_ptr().cast());
            for k in 0..4 {
                let l = _mm256_loadu_si256(ql[2 * n + k % 2].as_ptr().cast());
                let lo = _mm256_and_si256(if k < 2 { l } else { _mm256_srli_epi16::<4>(l) }, low4);
                let hi = _mm256_and_si256(shift_right_2k(h, k), low2);
                let v = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(hi));
                _mm256_storeu_si256(q[4 * n + k].as_mut_ptr().cast(), v);
            }
        }
    }
    for j in 0..SUBS {
        sc[16 * j..16 * j + 8].fill(b.scales[2 * j] as i16);
        sc[16 * j + 8..16 * j + 16].fill(b.scales[2 * j + 1] as i16);
    }
    for (m, &s) in mins.iter_mut().zip(&b.scales) {
        *m = 32 * s as i16;
    }
}

/// 16 in each byte whose bit `bit` of `qh` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bit(qh: __m256i, bit: usize) -> __m256i {
    let mask = _mm256_set1_epi8((1u8 << bit) as i8);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, mask), mask);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// `v` shifted right by `2k` bits in 16-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn shift_right_2k(v: __m256i, k: usize) -> __m256i {
    match k {
        0 => v,
        1 => _mm256_srli_epi16::<2>(v),
        2 => _mm256_srli_epi16::<4>(v),
        _ => _mm256_srli_epi16::<6>(v),
    }
}

/// `Σ_sb d_w·d_a·(Σ_j madd(maddubs(q_j, a_j), s_j) [− madd(mins, bsums)]) [+ dmin_w·d_a·madd(mins, bsums)]`
/// for `RM` panel rows from `first_row` and `RN` tokens. The integer sums of a super-block
/// stay in `RM·RN` i32 registers beside the `RM·RN` float accumulators (1×4 measured best:
/// 2×2 and 1×6 spill).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Rows `first_row..first_row + RM` of `panel`
/// must hold `nsb` super-blocks each, and every `act[t]` must point at `nsb` Q8_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile<const RM: usize, const RN: usize, const OFFSET32: bool>(
    panel: &KPanel<'_>,
    first_row: usize,
    nsb: usize,
    act: [*const u8; RN],
) -> [[f32; RN]; RM] {
    // SAFETY: offsets stay within `nsb` super-blocks of the rows and activation rows, as the
    // caller promises.
    unsafe {
        let base = first_row * nsb;
        let q = panel.q.as_ptr().add(base * QK_K);
        let sc = panel.sc.as_ptr().add(base * SUBS * 16);
        let mins = panel.mins.as_ptr().add(base * 16);
        let d = panel.d.as_ptr().add(base);
        let dmin = panel.dmin.as_ptr().add(base);
        let mut acc = [[_mm256_setzero_ps(); RN]; RM];
        for sb in 0..nsb {
            let a_blk: [*const u8; RN] = std::array::from_fn(|t| act[t].add(sb * ACT_BLOCK));
            let mut isum = [[_mm256_setzero_si256(); RN]; RM];
            for j in 0..SUBS {
                let mut w = [_mm256_setzero_si256(); RM];
                for (r, wr) in w.iter_mut().enumerate() {
                    *wr = _mm256_loadu_si256(q.add((r * nsb + sb) * QK_K + 32 * j).cast());
                }
                for t in 0..RN {
                    let a = _mm256_loadu_si256(a_blk[t].add(ACT_QS + 32 * j).cast());
                    for r in 0..RM {
                        let s = _mm256_loadu_si256(sc.add((r * nsb + sb) * SUBS * 16 + 16 * j).cast());
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w[r], a), s);
                        isum[r][t] = _mm256_add_epi32(isum[r][t], p);
                    }
                }
            }
            for t in 0..RN {
                let da = _mm256_broadcast_ss(&*a_blk[t].cast::<f32>());
                let bsums = _mm256_loadu_si256(a_blk[t].add(ACT_BSUMS).cast());
                for r in 0..RM {
                    let m = _mm256_loadu_si256(mins.add((r * nsb + sb) * 16).cast());
                    let off = _mm256_madd_epi16(m, bsums);
                    let dwa = _mm256_mul_ps(_mm256_broadcast_ss(&*d.add(r * nsb + sb)), da);
                    if OFFSET32 {
                        let p = _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[r][t], off));
                        acc[r][t] = _mm256_fmadd_ps(p, dwa, acc[r][t]);
                    } else {
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r][t]), dwa, acc[r][t]);
                        let dma = _mm256_mul_ps(_mm256_broadcast_ss(&*dmin.add(r * nsb + sb)), da);
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(off), dma, acc[r][t]);
                    }
                }
            }
        }
        super::prefill_int8::hsums(acc)
    }
}

/// A K panel with the Q8_K activation rows (`stride` bytes apart) its tiles read: the AVX2
/// tiles or, `WIDE`, the AVX-512 VNNI ones (`prefill_kquant_avx512`: the same bits; build
/// that only where `prefill_int8_avx512::enabled`).
pub(crate) struct KTiles<'a, const OFFSET32: bool, const WIDE: bool> {
    panel: &'a KPanel<'a>,
    rows: usize,
    nsb: usize,
    act: *const u8,
    stride: usize,
    n_tokens: usize,
}

impl<'a, const OFFSET32: bool, const WIDE: bool> KTiles<'a, OFFSET32, WIDE> {
    /// Checks once that the panel holds `rows·nsb` super-blocks and the activations
    /// `n_tokens` rows of `nsb` Q8_K blocks (panics otherwise: a caller bug, not input).
    pub(crate) fn new(
        panel: &'a KPanel<'a>,
        rows: usize,
        nsb: usize,
        act: &'a [u8],
        stride: usize,
        n_tokens: usize,
    ) -> Self {
        let n = rows * nsb;
        assert!(panel.q.len() >= n * QK_K && panel.sc.len() >= n * SUBS * 16 && panel.mins.len() >= n * 16);
        assert!(panel.d.len() >= n && panel.dmin.len() >= n);
        assert!(n_tokens > 0 && act.len() >= (n_tokens - 1) * stride + nsb * ACT_BLOCK);
        KTiles { panel, rows, nsb, act: act.as_ptr(), stride, n_tokens }
    }
}

impl<const OFFSET32: bool, const WIDE: bool> TileSource for KTiles<'_, OFFSET32, WIDE> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn tokens(&self) -> usize {
        self.n_tokens
    }

    // AVX-512: 2 × 4 (twice the registers).
    const TILE_ROWS: usize = if WIDE { 2 } else { 1 };
    const TILE_TOKENS: usize = 4;

    #[inline(always)]
    unsafe fn tile<const RM: usize, const RN: usize>(&self, r: usize, t: usize) -> [[f32; RN]; RM] {
        // SAFETY: in bounds by the caller's promise and the checks in `new`.
        unsafe {
            let act = std::array::from_fn(|k| self.act.add((t + k) * self.stride));
            if WIDE {
                super::prefill_kquant_avx512::tile::<RM, RN, OFFSET32>(self.panel, r, self.nsb, act)
            } else {
                tile::<RM, RN, OFFSET32>(self.panel, r, self.nsb, act)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Isa;
    use crate::quant;

    /// The panel reproduces the weights: `d·s·q + dmin·m` (Q4_K/Q5_K) or `d·s·q − d·m/… `
    /// (Q6_K: `d·sc·(q − 32)`) equals dequantize.
    #[test]
    fn kpanel_unpack_matches_dequantize() {
        if !Isa::Avx2.is_available() {
            return;
        }
        for format in BlockFormat::ALL {
            let Some(kind) = kpanel_kind(format) else { continue };
            let (rows, cols) = (3, 512);
            let nsb = cols / QK_K;
            let src = quant::test_values(rows * cols, 0x2545_f491_4f6c_dd1d, 0.4, 0.2);
            let (w, deq) = quant::test_rows(format, &src, rows, cols);
            let mut buf = vec![0u8; kpanel_bytes(rows, nsb)];
            let mut panel = KPanel::from_bytes(&mut buf, rows, nsb);
            // SAFETY: AVX2 checked above.
            unsafe { unpack_rows(format, &w, rows, nsb, &mut panel) };
            for i in 0..rows * nsb {
                for e in 0..QK_K {
                    let q = panel.q[i * QK_K + e] as f32;
                    // Scale of element e: lane (e % 32) / 2 of sub-block e / 32's vector.
                    let s = panel.sc[i * SUBS * 16 + (e / 32) * 16 + (e % 32) / 2] as f32;
                    let m = panel.mins[i * 16 + e / 16] as f32;
                    let v = match kind {
                        KPanelKind::Min => panel.d[i] * s * q + panel.dmin[i] * m,
                        KPanelKind::Offset32 => panel.d[i] * (s * q - m),
                    };
                    let want = deq[i * QK_K + e];
                    assert!(
                        (v - want).abs() <= 1e-6 * want.abs().max(1e-3),
                        "{format:?} sb {i} elem {e}: {v} vs {want}"
                    );
                }
            }
        }
    }
}
