//! Prefill register tiles for the 32-element block formats on AVX-512 VNNI: the int8 panels
//! of `ops::prefill_int8` (unpacked by the same code), two blocks per integer step, and the
//! AVX2 tile's bits.
//!
//! One 512-bit register holds a row's two consecutive panel blocks (64 codes); one
//! `vpdpbusd` multiplies them with a token's two activation blocks and sums each group of
//! four products into 16 i32 lanes — lane `k < 8` the elements `4k..4k+4` of block `b`,
//! lane `k + 8` those of block `b + 1`: exactly the AVX2 tile's `madd(maddubs(..), 1)` lane
//! sums of each block, one instruction for 64 products instead of two for 32. The signed
//! formats (Q8_0, IQ4_NL) go in as `q ⊕ 0x80 = q + 128` (`vpdpbusd` takes one unsigned
//! operand and AVX-512 has no `vpsignb`), and `128·Σa` per lane — one more `vpdpbusd` per
//! token, shared by every row — is subtracted again: the same exact integers.
//!
//! From the integers on, each block's two 8-lane halves join the float accumulators with
//! the AVX2 tile's own operations, in its order (see `prefill_int8`): the results are the
//! AVX2 tile's bits (tested), so a model's outputs do not depend on whether the host has
//! AVX-512. Two tokens share each 16-lane float operation (block `b` of tokens `t` and
//! `t + 1` side by side after one `vshufi64x2`), each lane doing exactly its AVX2 work.
//! Tiles: 3 rows × 4 tokens, 2 × 4 for the formats with a min (their `m_w` broadcasts take
//! more registers). An odd last block is loaded masked and only its lower half is used.
//!
//! Measured (SmolLM2 Q4_1 pp512, 2 threads, Sapphire Rapids class): +4 % over the AVX2
//! tiles. The per-lane order that the bits require keeps each accumulator a chain of
//! dependent FMAs per block, and 512-bit float work runs on two ports where 256-bit runs on
//! three; a version free to reorder (one FMA chain per two blocks, 16 lanes per token) gave
//! +23 % but changed the last bits of every prefill logit, and with them sampled and even
//! some greedy continuations, from host to host. 8-token tiles spill (−4 %).
//!
//! Chosen at run time: the CPU must have AVX-512 F, BW, VL and VNNI (Ice Lake, Zen 4 and
//! later); `OWL_AVX512=0` (read once) keeps the AVX2 tiles, for A/B measurements.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::prefill_int8::{Panel, FOLD, MIN, SIGNED};

/// Elements per block.
const QK: usize = 32;

/// Whether this CPU runs the AVX-512 VNNI tiles (and `OWL_AVX512` does not turn them off).
pub(crate) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| available() && super::avx512_allowed())
}

/// Whether the CPU has what the tiles need (AVX2, FMA and F16C as well: the panels are
/// unpacked by the AVX2 code).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
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

/// `[lo ×8 | hi ×8]`.
#[inline(always)]
unsafe fn halves(lo: f32, hi: f32) -> __m512 {
    // SAFETY: register operations only (the caller's target features).
    unsafe { _mm512_insertf32x8::<1>(_mm512_castps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi)) }
}

/// The AVX2 tile's per-block update of an accumulator, lane for lane (8 lanes of one token
/// and block, or two such sets side by side).
macro_rules! update {
    ($kind:expr, $acc:expr, $p:expr, $dat:expr, $ct:expr, $dw:expr, $mw:expr, $fmadd:ident, $mul:ident) => {{
        let inner = if $kind == FOLD { $fmadd($dat, $p, $ct) } else { $mul($dat, $p) };
        $acc = $fmadd($dw, inner, $acc);
        if $kind == MIN {
            $acc = $fmadd($mw, $ct, $acc);
        }
    }};
}

/// Blocks `b, b + 1` (or `b` alone) of `RM` panel rows against `RN` tokens. Tokens go in
/// pairs: one register holds block `b` of tokens `t` and `t + 1` (8 lanes each), so one
/// 16-lane operation does what two of the AVX2 tile's 8-lane ones do, to each lane the
/// same. An odd last token takes the 8-lane operations (`last`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<const RM: usize, const RN: usize, const KIND: u8>(
    pairs: &mut [[__m512; RN]; RM],
    last: &mut [__m256; RM],
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
        let flip = _mm512_set1_epi8(0x80u8 as i8);
        let mut w = [_mm512_setzero_si512(); RM];
        let (mut dw0, mut dw1) = ([0f32; RM], [0f32; RM]);
        let (mut mw0, mut mw1) = ([0f32; RM], [0f32; RM]);
        for r in 0..RM {
            let q = _mm512_maskz_loadu_epi8(qmask, wq.add((r * nb + b) * QK).cast());
            w[r] = if KIND == SIGNED { _mm512_xor_si512(q, flip) } else { q };
            dw0[r] = *wd.add(r * nb + b);
            mw0[r] = *wm.add(r * nb + b);
            if two {
                dw1[r] = *wd.add(r * nb + b + 1);
                mw1[r] = *wm.add(r * nb + b + 1);
            }
        }
        // Each lane's integer sum over its four products, as the AVX2 tile's `madd` lanes:
        // the signed formats' +128 taken out again (128·Σa per lane).
        let sums = |r: usize, y: __m512i, bias: __m512i| {
            let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[r], y);
            if KIND == SIGNED {
                _mm512_sub_epi32(p, bias)
            } else {
                p
            }
        };
        let scales = |t: usize, blk: usize| {
            let d = *da[t].add(blk);
            (d, if KIND == SIGNED { d } else { *c[t].add(blk) })
        };
        let mut t = 0;
        while t + 2 <= RN {
            let (y0, y1) = (
                pair_act(act[t].add(b * act_block), act_block, two),
                pair_act(act[t + 1].add(b * act_block), act_block, two),
            );
            let bias =
                |y: __m512i| if KIND == SIGNED { _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, y) } else { y };
            let (bias0, bias1) = (bias(y0), bias(y1));
            let ((d0, c0), (d1, c1)) = (scales(t, b), scales(t + 1, b));
            let (dat_a, ct_a) = (halves(d0, d1), halves(c0, c1));
            let (dat_b, ct_b) = if two {
                let ((d0, c0), (d1, c1)) = (scales(t, b + 1), scales(t + 1, b + 1));
                (halves(d0, d1), halves(c0, c1))
            } else {
                (dat_a, ct_a)
            };
            for r in 0..RM {
                let (p0, p1) = (sums(r, y0, bias0), sums(r, y1, bias1));
                let acc = &mut pairs[r][t / 2];
                // Block b of both tokens, then block b + 1 of both.
                let pa = _mm512_cvtepi32_ps(_mm512_shuffle_i64x2::<0x44>(p0, p1));
                let (dw, mw) = (_mm512_set1_ps(dw0[r]), _mm512_set1_ps(mw0[r]));
                update!(KIND, *acc, pa, dat_a, ct_a, dw, mw, _mm512_fmadd_ps, _mm512_mul_ps);
                if two {
                    let pb = _mm512_cvtepi32_ps(_mm512_shuffle_i64x2::<0xee>(p0, p1));
                    let (dw, mw) = (_mm512_set1_ps(dw1[r]), _mm512_set1_ps(mw1[r]));
                    update!(KIND, *acc, pb, dat_b, ct_b, dw, mw, _mm512_fmadd_ps, _mm512_mul_ps);
                }
            }
            t += 2;
        }
        if t < RN {
            let y = pair_act(act[t].add(b * act_block), act_block, two);
            let bias = if KIND == SIGNED { _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, y) } else { y };
            let (d0, c0) = scales(t, b);
            let (d1, c1) = if two { scales(t, b + 1) } else { (d0, c0) };
            for r in 0..RM {
                let p = _mm512_cvtepi32_ps(sums(r, y, bias));
                let acc = &mut last[r];
                let (dat, ct, dw, mw) =
                    (_mm256_set1_ps(d0), _mm256_set1_ps(c0), _mm256_set1_ps(dw0[r]), _mm256_set1_ps(mw0[r]));
                update!(KIND, *acc, _mm512_castps512_ps256(p), dat, ct, dw, mw, _mm256_fmadd_ps, _mm256_mul_ps);
                if two {
                    let (dat, ct, dw, mw) =
                        (_mm256_set1_ps(d1), _mm256_set1_ps(c1), _mm256_set1_ps(dw1[r]), _mm256_set1_ps(mw1[r]));
                    update!(
                        KIND,
                        *acc,
                        _mm512_extractf32x8_ps::<1>(p),
                        dat,
                        ct,
                        dw,
                        mw,
                        _mm256_fmadd_ps,
                        _mm256_mul_ps
                    );
                }
            }
        }
    }
}

/// `Σ_b d_w·d_a·Σ q·a_q (+ offset or min terms)` for `RM` panel rows from `first_row` and
/// `RN` tokens: [`super::prefill_int8::tile`]'s contract and bits, on AVX-512 VNNI.
///
/// # Safety
/// The CPU must have what [`available`] checks; the bounds of the AVX2 tile hold.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
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
        let mut pairs = [[_mm512_setzero_ps(); RN]; RM];
        let mut last = [_mm256_setzero_ps(); RM];
        let mut b = 0;
        while b + 2 <= nb {
            step::<RM, RN, KIND>(&mut pairs, &mut last, wq, wd, wm, nb, b, true, &act, act_block, &da, &c);
            b += 2;
        }
        if b < nb {
            step::<RM, RN, KIND>(&mut pairs, &mut last, wq, wd, wm, nb, b, false, &act, act_block, &da, &c);
        }
        // Back to one 8-lane accumulator per (row, token), summed as the AVX2 tile sums them.
        let mut acc = [[_mm256_setzero_ps(); RN]; RM];
        for r in 0..RM {
            for t in 0..RN {
                acc[r][t] = if t + 1 == RN && RN % 2 == 1 {
                    last[r]
                } else if t % 2 == 0 {
                    _mm512_castps512_ps256(pairs[r][t / 2])
                } else {
                    _mm512_extractf32x8_ps::<1>(pairs[r][t / 2])
                };
            }
        }
        super::prefill_int8::hsums(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::prefill_int8::{
        panel_bytes, panel_kind, prepare_act, tile_kind, unpack_rows, ActScales, Int8Tiles, TileSource,
    };
    use crate::quant::{self, BlockFormat};

    /// Every panel format, an even and an odd number of blocks, every tile shape the sweep
    /// uses and its edges: the AVX-512 tiles give the AVX2 tile's bits, and both stay within
    /// 2e-6 of Σ|w·a| of the scalar one-row kernel.
    #[test]
    fn tiles_give_the_avx2_tiles_bits() {
        if !available() {
            println!("skipped: this CPU lacks AVX-512 F/BW/VL/DQ/VNNI (the AVX-512 prefill tiles need them)");
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
                prepare_act(kind, &act, stride, n_tokens, nb, ActScales { da: &mut da, c: &mut c });
                let act_block = act_format.block_bytes();
                macro_rules! all {
                    ($k:expr) => {{
                        let wide = Int8Tiles::<{ $k }, true>::new(
                            &panel, rows, nb, &act, stride, act_block, n_tokens, &da, &c,
                        );
                        let narrow = Int8Tiles::<{ $k }, false>::new(
                            &panel, rows, nb, &act, stride, act_block, n_tokens, &da, &c,
                        );
                        // SAFETY: the features are checked above; every tile is in bounds.
                        let one = |tiles: &dyn Fn(usize, usize) -> f32| -> Vec<Vec<f32>> {
                            (0..rows).map(|r| (0..n_tokens).map(|t| tiles(r, t)).collect()).collect()
                        };
                        let wide_one = one(&|r, t| unsafe { wide.tile::<1, 1>(r, t) }[0][0]);
                        let narrow_one = one(&|r, t| unsafe { narrow.tile::<1, 1>(r, t) }[0][0]);
                        // SAFETY: as above (rows 0..3 / 4..6, tokens 0..4 / 2..6).
                        let big3 = unsafe { wide.tile::<3, 4>(0, 0) };
                        let big2 = unsafe { wide.tile::<2, 4>(4, 2) };
                        (wide_one, narrow_one, big3, big2)
                    }};
                }
                let (one, avx2, big3, big2) = match tile_kind(kind) {
                    FOLD => all!(FOLD),
                    MIN => all!(MIN),
                    _ => all!(SIGNED),
                };
                let rb = w.len() / rows;
                for r in 0..rows {
                    for t in 0..n_tokens {
                        assert_eq!(one[r][t].to_bits(), avx2[r][t].to_bits(), "{format:?} nb {nb} ({r}, {t})");
                        let mag: f64 = (0..cols)
                            .map(|i| (f64::from(wdeq[r * cols + i]) * f64::from(adeq[t * cols + i])).abs())
                            .sum();
                        assert!(mag > 0.1, "{format:?}: a test whose products are all ~0 checks nothing");
                        let want =
                            quant::vec_dot_scalar(format, &w[r * rb..(r + 1) * rb], &act[t * stride..(t + 1) * stride]);
                        let got = one[r][t];
                        assert!(
                            (got - want).abs() <= 2e-6 * mag as f32 + 1e-6,
                            "{format:?} nb {nb} ({r}, {t}): {got} vs {want}"
                        );
                    }
                }
                for (i, row) in big3.iter().enumerate() {
                    for (k, v) in row.iter().enumerate() {
                        assert_eq!(v.to_bits(), avx2[i][k].to_bits(), "{format:?} 3x4 ({i},{k})");
                    }
                }
                for (i, row) in big2.iter().enumerate() {
                    for (k, v) in row.iter().enumerate() {
                        assert_eq!(v.to_bits(), avx2[4 + i][2 + k].to_bits(), "{format:?} 2x4 ({i},{k})");
                    }
                }
            }
        }
    }
}
