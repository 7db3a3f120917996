//! Prefill (many tokens) for the 32-element block formats on AVX2: a chunk of weight rows is
//! unpacked once into an int8 *panel* (32 quants, a scale and a min per block), then
//! register tiles of 2 rows × 3 tokens sweep it. (The K-quants have their own panel,
//! `ops::prefill_kquant`; both are driven by `Work::panel_tiles` through [`TileSource`].)
//!
//! Why: the one-row kernels re-unpack every weight block for every token group and convert
//! both f16 scales per block pair. In the panel the unpacking is done once per chunk and
//! shared by all tokens; the tile loads each activation block once for 2 rows and each weight
//! block once for 3 tokens, and keeps 6 accumulators in registers (no horizontal sum per
//! block) — ggml's / llamafile's tinyBLAS recipe. 2×4 tiles measured slower on Zen 3: with
//! 8 accumulators, the weights, their scales and a token's terms LLVM spills an
//! accumulator, which puts a store/load on the loop-carried chain.
//!
//! Per (row, token, block) the integer sum `p = madd(maddubs(q, a), 1)` (8 i32 lanes)
//! joins the float accumulator as (see [`FOLD`], [`MIN`], [`SIGNED`]):
//! - Q4_0, Q5_0 (`w = d(q − 8|16)`, codes `q` 0..=31 kept unsigned so `maddubs` needs no
//!   sign trick): `acc += d_w·(d_a·p + c)` with the per-token-block `c = −(8|16)·d_a·Σa_q/8`
//!   (one eighth per lane) — the offset term folded in, two FMAs;
//! - Q4_1, Q5_1 (`w = d·q + m`): `acc += d_w·(d_a·p) + m_w·c` with `c = s/8` (`s` the Q8_1
//!   block sum, as the one-row kernel uses it);
//! - Q8_0, IQ4_NL: int8 values, products through the `sign` trick, `acc += d_w·(d_a·p)`.
//!
//! Numerics: the integer sum per block is exact as in the one-row kernels; the float
//! accumulation order differs, so results match those kernels to ~1e-7 relative, not bit
//! for bit.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::quant::iq4_nl::{BlockIQ4NL, KVALUES_IQ4NL};
use crate::quant::q4_0::BlockQ4_0;
use crate::quant::q4_1::BlockQ4_1;
use crate::quant::q5_0::BlockQ5_0;
use crate::quant::q5_1::BlockQ5_1;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::simd_x86::{bits_to_byte_mask, nibbles_32};
use crate::quant::{f16_to_f32, BlockFormat};

/// Elements per block of every panel format.
const QK: usize = 32;

/// How one weight format becomes a panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PanelKind {
    /// Unsigned codes; `offset` is the code bias (8 or 16) with `m_w = d_w`, or `None` for
    /// the formats with a stored min (`m_w = m`, `c_a = s`).
    Unsigned {
        offset: Option<i32>,
    },
    Signed,
}

/// The panel kind of a weight format, if it has one.
pub(crate) const fn panel_kind(format: BlockFormat) -> Option<PanelKind> {
    match format {
        BlockFormat::Q4_0 => Some(PanelKind::Unsigned { offset: Some(8) }),
        BlockFormat::Q5_0 => Some(PanelKind::Unsigned { offset: Some(16) }),
        BlockFormat::Q4_1 | BlockFormat::Q5_1 => Some(PanelKind::Unsigned { offset: None }),
        BlockFormat::Q8_0 | BlockFormat::IQ4_NL => Some(PanelKind::Signed),
        _ => None,
    }
}

/// Bytes of one panel (quants, scales, offsets) for `rows` rows of `nb` blocks.
pub(crate) const fn panel_bytes(rows: usize, nb: usize) -> usize {
    (rows * nb * (QK + 8)).next_multiple_of(64)
}

/// Per-token activation terms the tiles read: `da[t·nb + b]` (the block scale) and
/// `c[t·nb + b]` (the offset term's coefficient over 8, one eighth per i32 lane; see the
/// module docs).
pub(crate) struct ActScales<'a> {
    pub da: &'a mut [f32],
    pub c: &'a mut [f32],
}

/// Fills `da`/`c` from the quantized activation rows (Q8_0 or Q8_1 blocks, `stride` bytes
/// apart).
pub(crate) fn prepare_act(kind: PanelKind, act: &[u8], stride: usize, n_tokens: usize, nb: usize, out: ActScales<'_>) {
    let block = if matches!(kind, PanelKind::Unsigned { offset: None }) { 36 } else { 34 };
    for t in 0..n_tokens {
        let row = &act[t * stride..t * stride + nb * block];
        for (b, blk) in row.chunks_exact(block).enumerate() {
            let d = f16_to_f32([blk[0], blk[1]]);
            out.da[t * nb + b] = d;
            out.c[t * nb + b] = match kind {
                PanelKind::Unsigned { offset: Some(off) } => {
                    let sum: i32 = blk[2..].iter().map(|&q| q as i8 as i32).sum();
                    -(off as f32) * d * sum as f32 / 8.0
                }
                PanelKind::Unsigned { offset: None } => f16_to_f32([blk[2], blk[3]]) / 8.0,
                PanelKind::Signed => 0.0,
            };
        }
    }
}

/// A panel: `q` holds `rows·nb·32` codes, `d` and `m` `rows·nb` floats each.
pub(crate) struct Panel<'a> {
    pub q: &'a mut [u8],
    pub d: &'a mut [f32],
    pub m: &'a mut [f32],
}

impl<'a> Panel<'a> {
    /// Splits a panel-sized byte buffer (64-byte aligned) for `rows` rows of `nb` blocks.
    pub(crate) fn from_bytes(buf: &'a mut [u8], rows: usize, nb: usize) -> Self {
        let (q, rest) = buf.split_at_mut(rows * nb * QK);
        let (d, rest) = rest.split_at_mut(rows * nb * 4);
        let m = &mut rest[..rows * nb * 4];
        Panel { q, d: bytemuck::cast_slice_mut(d), m: bytemuck::cast_slice_mut(m) }
    }
}

/// Unpacks `rows` weight rows (`row_bytes` each, starting at `w`) into `panel`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn unpack_rows(format: BlockFormat, w: &[u8], rows: usize, nb: usize, panel: &mut Panel<'_>) {
    macro_rules! each_block {
        ($B:ty, |$b:ident, $q:ident, $d:ident, $m:ident| $body:block) => {{
            let blocks: &[$B] = bytemuck::cast_slice(&w[..rows * nb * std::mem::size_of::<$B>()]);
            let q_chunks = bytemuck::cast_slice_mut::<u8, [u8; QK]>(&mut panel.q[..rows * nb * QK]);
            for ((($b, $q), $d), $m) in blocks.iter().zip(q_chunks).zip(panel.d.iter_mut()).zip(panel.m.iter_mut()) {
                $body
            }
        }};
    }
    // SAFETY: AVX2/F16C guaranteed by the caller; loads and stores go through fixed-size
    // array references.
    unsafe {
        let low4 = _mm256_set1_epi8(0x10);
        match format {
            BlockFormat::Q4_0 => each_block!(BlockQ4_0, |b, q, d, m| {
                store(q, nibbles_32(&b.qs));
                *d = f16_to_f32(b.d);
                *m = *d;
            }),
            BlockFormat::Q5_0 => each_block!(BlockQ5_0, |b, q, d, m| {
                let hi = _mm256_and_si256(bits_to_byte_mask(u32::from_le_bytes(b.qh)), low4);
                store(q, _mm256_or_si256(nibbles_32(&b.qs), hi));
                *d = f16_to_f32(b.d);
                *m = *d;
            }),
            BlockFormat::Q4_1 => each_block!(BlockQ4_1, |b, q, d, m| {
                store(q, nibbles_32(&b.qs));
                *d = f16_to_f32(b.d);
                *m = f16_to_f32(b.m);
            }),
            BlockFormat::Q5_1 => each_block!(BlockQ5_1, |b, q, d, m| {
                let hi = _mm256_and_si256(bits_to_byte_mask(u32::from_le_bytes(b.qh)), low4);
                store(q, _mm256_or_si256(nibbles_32(&b.qs), hi));
                *d = f16_to_f32(b.d);
                *m = f16_to_f32(b.m);
            }),
            BlockFormat::Q8_0 => each_block!(BlockQ8_0, |b, q, d, m| {
                *q = bytemuck::cast(b.qs);
                *d = f16_to_f32(b.d);
                *m = 0.0;
            }),
            BlockFormat::IQ4_NL => {
                let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
                each_block!(BlockIQ4NL, |b, q, d, m| {
                    store(q, _mm256_shuffle_epi8(table, nibbles_32(&b.qs)));
                    *d = f16_to_f32(b.d);
                    *m = 0.0;
                })
            }
            // `panel_kind` admits no other format.
            _ => unreachable!("no panel for {format:?}"),
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store(q: &mut [u8; 32], v: __m256i) {
    // SAFETY: writes exactly the 32 bytes of `q`.
    unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), v) }
}

/// How a tile combines a block's integer sum `p` (8 i32 lanes) with the scales; see the
/// module docs. `FOLD`: Q4_0/Q5_0, `acc += d_w·(d_a·p + c)`. `MIN`: Q4_1/Q5_1,
/// `acc += d_w·(d_a·p) + m_w·c`. `SIGNED`: Q8_0/IQ4_NL, `acc += d_w·(d_a·p)` with the `sign`
/// trick.
pub(crate) const FOLD: u8 = 0;
pub(crate) const MIN: u8 = 1;
pub(crate) const SIGNED: u8 = 2;

/// The tile kind of a panel kind.
pub(crate) const fn tile_kind(kind: PanelKind) -> u8 {
    match kind {
        PanelKind::Unsigned { offset: Some(_) } => FOLD,
        PanelKind::Unsigned { offset: None } => MIN,
        PanelKind::Signed => SIGNED,
    }
}

/// `Σ_b d_w·d_a·Σ q·a_q (+ Σ_b m_w·c_a)` for `RM` panel rows from `first_row` and `RN`
/// tokens, as 8-lane partial sums. `act[t]` points at token `t`'s first quant, its blocks
/// `act_block` bytes apart; `da[t]`/`c[t]` at its first block's terms.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Rows `first_row..first_row + RM` of `panel`
/// must hold `nb` blocks each, and every `act[t]`, `da[t]`, `c[t]` must be valid for `nb`
/// blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile<const RM: usize, const RN: usize, const KIND: u8>(
    panel: &Panel<'_>,
    first_row: usize,
    nb: usize,
    act: [*const u8; RN],
    act_block: usize,
    da: [*const f32; RN],
    c: [*const f32; RN],
) -> [[f32; RN]; RM] {
    // SAFETY: every offset stays below `nb` blocks of its row, as the caller promises.
    unsafe {
        let wq = panel.q.as_ptr().add(first_row * nb * QK);
        let wd = panel.d.as_ptr().add(first_row * nb);
        let wm = panel.m.as_ptr().add(first_row * nb);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); RN]; RM];
        for b in 0..nb {
            let mut w = [_mm256_setzero_si256(); RM];
            let mut uw = [_mm256_setzero_si256(); RM];
            let mut dw = [_mm256_setzero_ps(); RM];
            let mut mw = [_mm256_setzero_ps(); RM];
            for r in 0..RM {
                w[r] = _mm256_loadu_si256(wq.add((r * nb + b) * QK).cast());
                uw[r] = if KIND == SIGNED { _mm256_sign_epi8(w[r], w[r]) } else { w[r] };
                dw[r] = _mm256_broadcast_ss(&*wd.add(r * nb + b));
                if KIND == MIN {
                    mw[r] = _mm256_broadcast_ss(&*wm.add(r * nb + b));
                }
            }
            for t in 0..RN {
                let y = _mm256_loadu_si256(act[t].add(b * act_block).cast());
                let dat = _mm256_broadcast_ss(&*da[t].add(b));
                let ct = if KIND == SIGNED { dat } else { _mm256_broadcast_ss(&*c[t].add(b)) };
                for r in 0..RM {
                    let sy = if KIND == SIGNED { _mm256_sign_epi8(y, w[r]) } else { y };
                    let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(uw[r], sy), ones));
                    let inner = if KIND == FOLD { _mm256_fmadd_ps(dat, p, ct) } else { _mm256_mul_ps(dat, p) };
                    acc[r][t] = _mm256_fmadd_ps(dw[r], inner, acc[r][t]);
                    if KIND == MIN {
                        acc[r][t] = _mm256_fmadd_ps(mw[r], ct, acc[r][t]);
                    }
                }
            }
        }
        hsums(acc)
    }
}

/// An unpacked panel and the activations its register tiles read (shared by the int8 and
/// the K panels, so `Work::panel_tiles` drives both).
pub(crate) trait TileSource {
    /// Rows of the panel.
    fn rows(&self) -> usize;
    /// Tokens of the activations.
    fn tokens(&self) -> usize;
    /// The register tile the sweep uses (`Work::panel_tiles` instantiates 2×3, 2×4 and 1×4,
    /// and their one-row / one-token edges). Measured on Zen 3 (docs/PERFORMANCE.md): int8
    /// panels 2×3 (2×4 spills an accumulator), K panels 1×4 (their i32 super-block sums
    /// double the live registers; 2×2 and 1×6 spill).
    const TILE_ROWS: usize;
    const TILE_TOKENS: usize;
    /// Sums of rows `r..r + RM` (of the panel) against tokens `t..t + RN`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `r + RM ≤ rows()` and `t + RN ≤ tokens()`.
    unsafe fn tile<const RM: usize, const RN: usize>(&self, r: usize, t: usize) -> [[f32; RN]; RM];
}

/// An int8 panel with the quantized activations (Q8_0 or Q8_1 rows `stride` bytes apart)
/// and their block terms ([`prepare_act`]), swept by the AVX2 tiles or, `WIDE`, by the
/// AVX-512 VNNI ones (`prefill_int8_avx512`: the same bits; build that only where
/// `prefill_int8_avx512::enabled`).
pub(crate) struct Int8Tiles<'a, const KIND: u8, const WIDE: bool> {
    panel: &'a Panel<'a>,
    rows: usize,
    nb: usize,
    /// First quant of token 0.
    act: *const u8,
    stride: usize,
    act_block: usize,
    n_tokens: usize,
    da: &'a [f32],
    c: &'a [f32],
}

impl<'a, const KIND: u8, const WIDE: bool> Int8Tiles<'a, KIND, WIDE> {
    /// Checks once that the panel holds `rows·nb` blocks and the activations `n_tokens` rows
    /// of `nb` blocks with their terms (panics otherwise: a caller bug, not input).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        panel: &'a Panel<'a>,
        rows: usize,
        nb: usize,
        act: &'a [u8],
        stride: usize,
        act_block: usize,
        n_tokens: usize,
        da: &'a [f32],
        c: &'a [f32],
    ) -> Self {
        assert!(panel.q.len() >= rows * nb * QK && panel.d.len() >= rows * nb && panel.m.len() >= rows * nb);
        assert!(n_tokens > 0 && act.len() >= (n_tokens - 1) * stride + nb * act_block);
        assert!(da.len() >= n_tokens * nb && c.len() >= n_tokens * nb);
        // Q8_0 blocks hold their quants after a 2-byte scale, Q8_1 after 4 bytes.
        Int8Tiles { panel, rows, nb, act: act[act_block - QK..].as_ptr(), stride, act_block, n_tokens, da, c }
    }
}

impl<const KIND: u8, const WIDE: bool> TileSource for Int8Tiles<'_, KIND, WIDE> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn tokens(&self) -> usize {
        self.n_tokens
    }

    // AVX-512: 3 × 4, 2 × 4 with a min (`prefill_int8_avx512`).
    const TILE_ROWS: usize = if !WIDE || KIND == MIN { 2 } else { 3 };
    const TILE_TOKENS: usize = if WIDE { 4 } else { 3 };

    #[inline(always)]
    unsafe fn tile<const RM: usize, const RN: usize>(&self, r: usize, t: usize) -> [[f32; RN]; RM] {
        let nb = self.nb;
        // SAFETY: in bounds by the caller's promise and the checks in `new`.
        unsafe {
            let act = std::array::from_fn(|k| self.act.add((t + k) * self.stride));
            let da = std::array::from_fn(|k| self.da.as_ptr().add((t + k) * nb));
            let c = std::array::from_fn(|k| self.c.as_ptr().add((t + k) * nb));
            if WIDE {
                super::prefill_int8_avx512::tile::<RM, RN, KIND>(self.panel, r, nb, act, self.act_block, da, c)
            } else {
                tile::<RM, RN, KIND>(self.panel, r, nb, act, self.act_block, da, c)
            }
        }
    }
}

/// The horizontal sums of a tile's accumulators (four tokens at a time through `hadd`).
///
/// # Safety
/// The CPU must support AVX.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsums<const RM: usize, const RN: usize>(acc: [[__m256; RN]; RM]) -> [[f32; RN]; RM] {
    let mut out = [[0f32; RN]; RM];
    for (o, a) in out.iter_mut().zip(&acc) {
        let mut t = 0;
        while t + 4 <= RN {
            let s01 = _mm256_hadd_ps(a[t], a[t + 1]);
            let s23 = _mm256_hadd_ps(a[t + 2], a[t + 3]);
            let s = _mm256_hadd_ps(s01, s23);
            let v = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            // SAFETY: writes 4 floats at o[t..t + 4].
            unsafe { _mm_storeu_ps(o[t..t + 4].as_mut_ptr(), v) };
            t += 4;
        }
        // The same order of additions as the four-at-a-time sums above, so that a token's
        // result does not depend on whether its tile held four tokens or one.
        for t in t..RN {
            let s = _mm256_hadd_ps(a[t], a[t]);
            let s = _mm256_hadd_ps(s, s);
            o[t] = _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Isa;
    use crate::quant;

    fn random_rows(format: BlockFormat, rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
        quant::test_rows(format, &quant::test_values(rows * cols, 0x1234_5678_9abc_def1, 0.5, 0.2), rows, cols)
    }

    /// The panel reproduces the weights: `d·q − m·offset` (or `d·q + m`) equals dequantize.
    #[test]
    fn panel_unpack_matches_dequantize() {
        if !Isa::Avx2.is_available() {
            return;
        }
        for format in BlockFormat::ALL {
            let Some(kind) = panel_kind(format) else { continue };
            let (rows, cols) = (3, 256);
            let nb = cols / QK;
            let (w, deq) = random_rows(format, rows, cols);
            let mut buf = vec![0u8; panel_bytes(rows, nb)];
            let mut panel = Panel::from_bytes(&mut buf, rows, nb);
            // SAFETY: AVX2 checked above.
            unsafe { unpack_rows(format, &w, rows, nb, &mut panel) };
            for i in 0..rows * nb {
                for j in 0..QK {
                    let q = panel.q[i * QK + j];
                    let (d, m) = (panel.d[i], panel.m[i]);
                    let v = match kind {
                        PanelKind::Signed => d * q as i8 as f32,
                        PanelKind::Unsigned { offset: Some(off) } => d * q as f32 - m * off as f32,
                        PanelKind::Unsigned { offset: None } => d * q as f32 + m,
                    };
                    let want = deq[i * QK + j];
                    assert!(
                        (v - want).abs() <= 1e-6 * want.abs().max(1e-3),
                        "{format:?} block {i} elem {j}: {v} vs {want}"
                    );
                }
            }
        }
    }

    /// Cost of unpacking vs the tiles it feeds (a measurement: `cargo test -p owl-kernels
    /// --lib panel_unpack_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn panel_unpack_cost() {
        if !Isa::Avx2.is_available() {
            return;
        }
        let (rows, cols) = (16, 4096);
        let nb = cols / QK;
        for format in [BlockFormat::Q4_0, BlockFormat::Q5_0, BlockFormat::Q8_0] {
            let (w, _) = random_rows(format, rows, cols);
            let mut buf = vec![0u8; panel_bytes(rows, nb)];
            let mut panel = Panel::from_bytes(&mut buf, rows, nb);
            let reps = 2000;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                // SAFETY: AVX2 checked above.
                unsafe { unpack_rows(format, std::hint::black_box(&w), rows, nb, &mut panel) };
            }
            let ns = t.elapsed().as_secs_f64() * 1e9 / (reps * rows * nb) as f64;
            println!("{format:?}: unpack {ns:.2} ns/block");
        }
    }
}
