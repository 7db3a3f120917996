//! Prefill register tiles for the 32-element block formats on AVX-512 VNNI: the int8 panels
//! of `ops::prefill_int8` (unpacked by the same code), swept two blocks at a time.
//!
//! One 512-bit register holds a row's two consecutive panel blocks (64 codes); `vpdpbusd`
//! multiplies them with a token's two activation blocks and sums each group of four
//! products into 16 i32 lanes, lanes 0–7 block `b` and 8–15 block `b + 1`. The scales are
//! broadcast per half (`[d_b ×8, d_{b+1} ×8]`), so each lane's sum joins the float
//! accumulator as in the AVX2 tile, now for 64 products per `vpdpbusd`/convert/FMA pair
//! instead of 32 per `maddubs`/`madd`/convert/FMA chain:
//! - Q4_0, Q5_0: `acc += d_w·(d_a·p + c)`, `c = −(8|16)·d_a·Σa_q/8` (`FOLD`);
//! - Q4_1, Q5_1: `acc += d_w·(d_a·p) + m_w·c`, `c = s/8` (`MIN`);
//! - Q8_0, IQ4_NL: `vpdpbusd` takes one unsigned operand and AVX-512 has no `vpsignb`, so
//!   the signed codes are made unsigned (`q ⊕ 0x80 = q + 128`) and the offset folded as
//!   for Q4_0: `acc += d_w·(d_a·p + c)`, `c = −128·d_a·Σa_q/8` ([`act_kind`]).
//!
//! With 32 vector registers the tile is 4 rows × 4 tokens (16 accumulators), 3 × 4 for the
//! formats with a min (their `m_w` broadcasts take 3 more registers). An odd last block is
//! loaded masked (upper half zero, its scales zero).
//!
//! Numerics: the integer sums per block are exact as in the AVX2 tile; the float
//! accumulation order differs (two blocks per accumulator, 16 lanes), so results agree with
//! the AVX2 tile to ~1e-6 relative, not bit for bit. A token's result does not depend on
//! the tile it was computed in (each accumulator is reduced alone, in one order).
//!
//! Chosen at run time: the CPU must have AVX-512 F, BW, VL and VNNI (Ice Lake, Zen 4 and
//! later); `OWL_AVX512=0` (read once) keeps the AVX2 tiles, for A/B measurements.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::prefill_int8::{Panel, PanelKind, TileSource, MIN, SIGNED};

/// Elements per block.
const QK: usize = 32;

/// Whether this CPU runs the AVX-512 VNNI tiles (and `OWL_AVX512` does not turn them off).
pub(crate) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| available() && std::env::var("OWL_AVX512").map_or(true, |v| v != "0"))
}

/// Whether the CPU has what the tiles need (AVX2, FMA and F16C as well: the panels are
/// unpacked by the AVX2 code).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The activation terms these tiles read for a panel kind: the signed formats' codes are
/// offset by 128 here, so their `c` is that of an offset-128 format.
pub(crate) const fn act_kind(kind: PanelKind) -> PanelKind {
    match kind {
        PanelKind::Signed => PanelKind::Unsigned { offset: Some(128) },
        other => other,
    }
}

/// `[v[0] ×8, v[1] ×8]`, or `[v[0] ×8, 0 ×8]` for a lone last block.
#[inline(always)]
unsafe fn pair_ps(v: *const f32, two: bool) -> __m512 {
    // SAFETY: `v` is valid for 2 floats when `two`, else for 1 (the caller's promise).
    unsafe {
        if two {
            let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd(v.cast()))))
        } else {
            _mm512_maskz_mov_ps(0x00ff, _mm512_set1_ps(*v))
        }
    }
}

/// A token's two activation blocks' quants (`stride` bytes apart), or one and zeros.
#[inline(always)]
unsafe fn pair_act(a: *const u8, stride: usize, two: bool) -> __m512i {
    // SAFETY: `a` is valid for 32 bytes, and `a + stride` too when `two`.
    unsafe {
        let lo = _mm512_castsi256_si512(_mm256_loadu_si256(a.cast()));
        if two {
            _mm512_inserti64x4::<1>(lo, _mm256_loadu_si256(a.add(stride).cast()))
        } else {
            _mm512_zextsi256_si512(_mm256_loadu_si256(a.cast()))
        }
    }
}

/// Blocks `b, b + 1` (or `b` alone) of `RM` panel rows against `RN` tokens, into `acc`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<const RM: usize, const RN: usize, const KIND: u8>(
    acc: &mut [[__m512; RN]; RM],
    wq: *const u8,
    wd: *const f32,
    wm: *const f32,
    nb: usize,
    b: usize,
    two: bool,
    act: &[*const u8; RN],
    act_block: usize,
    da: &[*const f32; RN],
    c: &[*const f32; RN],
) {
    // SAFETY: the caller keeps `b` (and `b + 1` when `two`) below `nb` for every pointer.
    unsafe {
        let qmask: __mmask64 = if two { !0 } else { 0xffff_ffff };
        let mut w = [_mm512_setzero_si512(); RM];
        let mut dw = [_mm512_setzero_ps(); RM];
        let mut mw = [_mm512_setzero_ps(); RM];
        for r in 0..RM {
            let q = _mm512_maskz_loadu_epi8(qmask, wq.add((r * nb + b) * QK).cast());
            // A lone block's upper half becomes 0x80 codes against zero activations: 0.
            w[r] = if KIND == SIGNED { _mm512_xor_si512(q, _mm512_set1_epi8(0x80u8 as i8)) } else { q };
            dw[r] = pair_ps(wd.add(r * nb + b), two);
            if KIND == MIN {
                mw[r] = pair_ps(wm.add(r * nb + b), two);
            }
        }
        for t in 0..RN {
            let y = pair_act(act[t].add(b * act_block), act_block, two);
            let dat = pair_ps(da[t].add(b), two);
            let ct = pair_ps(c[t].add(b), two);
            for r in 0..RM {
                let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w[r], y));
                if KIND == MIN {
                    acc[r][t] = _mm512_fmadd_ps(dw[r], _mm512_mul_ps(dat, p), acc[r][t]);
                    acc[r][t] = _mm512_fmadd_ps(mw[r], ct, acc[r][t]);
                } else {
                    acc[r][t] = _mm512_fmadd_ps(dw[r], _mm512_fmadd_ps(dat, p, ct), acc[r][t]);
                }
            }
        }
    }
}

/// `Σ_b d_w·d_a·Σ q·a_q (+ offset or min terms)` for `RM` panel rows from `first_row` and
/// `RN` tokens: [`super::prefill_int8::tile`]'s contract, on AVX-512 VNNI.
///
/// # Safety
/// The CPU must have what [`available`] checks; the bounds of the AVX2 tile hold.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
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
        let mut acc = [[_mm512_setzero_ps(); RN]; RM];
        let mut b = 0;
        while b + 2 <= nb {
            step::<RM, RN, KIND>(&mut acc, wq, wd, wm, nb, b, true, &act, act_block, &da, &c);
            b += 2;
        }
        if b < nb {
            step::<RM, RN, KIND>(&mut acc, wq, wd, wm, nb, b, false, &act, act_block, &da, &c);
        }
        let mut out = [[0f32; RN]; RM];
        for (o, a) in out.iter_mut().zip(&acc) {
            for (v, &x) in o.iter_mut().zip(a) {
                *v = _mm512_reduce_add_ps(x);
            }
        }
        out
    }
}

/// An int8 panel and its activations, swept by the AVX-512 tiles; the activation terms from
/// `prepare_act` with [`act_kind`].
pub(crate) struct Int8Tiles512<'a, const KIND: u8> {
    panel: &'a Panel<'a>,
    rows: usize,
    nb: usize,
    act: *const u8,
    stride: usize,
    act_block: usize,
    n_tokens: usize,
    da: &'a [f32],
    c: &'a [f32],
}

impl<'a, const KIND: u8> Int8Tiles512<'a, KIND> {
    /// As `Int8Tiles::new` (the same checks; panics on a caller bug).
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
        Int8Tiles512 { panel, rows, nb, act: act[act_block - QK..].as_ptr(), stride, act_block, n_tokens, da, c }
    }
}

impl<const KIND: u8> TileSource for Int8Tiles512<'_, KIND> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn tokens(&self) -> usize {
        self.n_tokens
    }

    const TILE_ROWS: usize = if KIND == MIN { 3 } else { 4 };
    const TILE_TOKENS: usize = 4;

    #[inline(always)]
    unsafe fn tile<const RM: usize, const RN: usize>(&self, r: usize, t: usize) -> [[f32; RN]; RM] {
        let nb = self.nb;
        // SAFETY: in bounds by the caller's promise and the checks in `new`; the sweep only
        // builds this source where `enabled()` said the CPU has the features.
        unsafe {
            let act = std::array::from_fn(|k| self.act.add((t + k) * self.stride));
            let da = std::array::from_fn(|k| self.da.as_ptr().add((t + k) * nb));
            let c = std::array::from_fn(|k| self.c.as_ptr().add((t + k) * nb));
            tile::<RM, RN, KIND>(self.panel, r, nb, act, self.act_block, da, c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::prefill_int8::{panel_bytes, panel_kind, prepare_act, tile_kind, unpack_rows, ActScales};
    use crate::quant::{self, BlockFormat};

    /// Every panel format, an even and an odd number of blocks, every tile shape the sweep
    /// uses and its edges: the AVX-512 tiles equal the scalar one-row kernel (to 2e-6 of
    /// Σ|w·a|), and a token's result is the same bits in every tile shape.
    #[test]
    fn tiles_match_the_dequantized_sum_in_every_shape() {
        if !available() {
            println!("skipped: this CPU lacks AVX-512 F/BW/VL/VNNI (the AVX-512 prefill tiles need them)");
            return;
        }
        for format in BlockFormat::ALL {
            let Some(kind) = panel_kind(format) else { continue };
            for nb in [8, 7, 1] {
                let (rows, cols, n_tokens) = (8, nb * QK, 6);
                let src = quant::test_values(rows * cols, 0x5eed_0001 + nb as u64, 0.5, 0.2);
                let (w, wdeq) = quant::test_rows(format, &src, rows, cols);
                let act_format = format.vec_dot_format();
                let stride = act_format.row_bytes(cols).expect("whole blocks");
                let x = quant::test_values(n_tokens * cols, 0x5eed_0002, 0.5, 2.0);
                let mut act = vec![0u8; n_tokens * stride];
                let mut adeq = vec![0f32; n_tokens * cols];
                for t in 0..n_tokens {
                    let a = &mut act[t * stride..(t + 1) * stride];
                    quant::quantize_row(act_format, &x[t * cols..(t + 1) * cols], a).expect("quantize");
                    quant::dequantize_row(act_format, a, &mut adeq[t * cols..(t + 1) * cols]).expect("dequantize");
                }
                let mut buf = vec![0u8; panel_bytes(rows, nb)];
                let mut panel = Panel::from_bytes(&mut buf, rows, nb);
                // SAFETY: `available` checked AVX2, FMA and F16C.
                unsafe { unpack_rows(format, &w, rows, nb, &mut panel) };
                let (mut da, mut c) = (vec![0f32; n_tokens * nb], vec![0f32; n_tokens * nb]);
                prepare_act(act_kind(kind), &act, stride, n_tokens, nb, ActScales { da: &mut da, c: &mut c });
                let act_block = act_format.block_bytes();
                macro_rules! all {
                    ($k:expr) => {{
                        let tiles =
                            Int8Tiles512::<{ $k }>::new(&panel, rows, nb, &act, stride, act_block, n_tokens, &da, &c);
                        // SAFETY: the features are checked above; every tile is in bounds.
                        let one: Vec<Vec<f32>> = (0..rows)
                            .map(|r| (0..n_tokens).map(|t| unsafe { tiles.tile::<1, 1>(r, t) }[0][0]).collect())
                            .collect();
                        // SAFETY: as above (rows 0..4 or 0..3, tokens 0..4).
                        let big4 = unsafe { tiles.tile::<4, 4>(0, 0) };
                        let big3 = unsafe { tiles.tile::<3, 4>(4, 2) };
                        (one, big4, big3)
                    }};
                }
                let (one, big4, big3) = match tile_kind(kind) {
                    FOLD_KIND => all!(FOLD_KIND),
                    MIN => all!(MIN),
                    _ => all!(SIGNED),
                };
                let rb = w.len() / rows;
                for r in 0..rows {
                    for t in 0..n_tokens {
                        let (mut sum, mut mag) = (0f64, 0f64);
                        for i in 0..cols {
                            let p = f64::from(wdeq[r * cols + i]) * f64::from(adeq[t * cols + i]);
                            sum += p;
                            mag += p.abs();
                        }
                        // The one-row reference kernel: Q8_1's block sums are stored in f16,
                        // which the min term of Q4_1/Q5_1 uses as the format defines.
                        let want =
                            quant::vec_dot_scalar(format, &w[r * rb..(r + 1) * rb], &act[t * stride..(t + 1) * stride]);
                        let got = one[r][t];
                        assert!(mag > 0.1, "{format:?}: a test whose products are all ~0 checks nothing");
                        assert!(
                            (got - want).abs() <= 2e-6 * mag as f32 + 1e-6,
                            "{format:?} nb {nb} row {r} token {t}: {got} vs {want} (float64 over the dequantized: {sum})"
                        );
                    }
                }
                for r in 0..4 {
                    for t in 0..4 {
                        assert_eq!(big4[r][t].to_bits(), one[r][t].to_bits(), "{format:?} 4x4 ({r},{t})");
                    }
                }
                for r in 0..3 {
                    for t in 0..4 {
                        assert_eq!(big3[r][t].to_bits(), one[4 + r][2 + t].to_bits(), "{format:?} 3x4 ({r},{t})");
                    }
                }
            }
        }
    }

    const FOLD_KIND: u8 = crate::ops::prefill_int8::FOLD;
}
