//! Prefill (many tokens) for the 32-element block formats on AVX2: a chunk of weight rows is
//! unpacked once into an int8 *panel* (32 quants, a scale and an offset coefficient per
//! block), then register tiles of 2 rows × 4 tokens sweep it.
//!
//! Why: the one-row kernels re-unpack every weight block for every token group and convert
//! both f16 scales per block pair. In the panel the unpacking is done once per chunk and
//! shared by all tokens; the tile loads each activation block once for 2 rows and each weight
//! block once for 4 tokens, and keeps 8 accumulators in registers (no horizontal sum per
//! block). Per block pair that leaves `maddubs, madd, cvt, mul, fma` (+ `sign` for the signed
//! formats) — ggml's / llamafile's tinyBLAS recipe.
//!
//! Two panel kinds:
//! - unsigned (Q4_0, Q5_0, Q4_1, Q5_1): quants kept as their unsigned codes `q` (0..=31), so
//!   `maddubs(q, a)` needs no sign trick; the offset moves to a per-block term
//!   `m_w · c_a` summed at the end: Q4_0/Q5_0 have `w = d(q − 8|16)`, so `m_w = d_w` and
//!   `c_a = −(8|16)·d_a·Σa_q`; Q4_1/Q5_1 have `w = d·q + m`, so `m_w = m` and `c_a = s`
//!   (the Q8_1 block sum, as the one-row kernel uses it).
//! - signed (Q8_0, IQ4_NL): int8 values, products through the `sign` trick.
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
    Unsigned { offset: Option<i32> },
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

/// Rows a thread unpacks at a time: 16 rows of 4096 columns are a 72 KiB panel.
pub(crate) const PANEL_ROWS: usize = 16;

/// Bytes of one panel (quants, scales, offsets) for `rows` rows of `nb` blocks.
pub(crate) const fn panel_bytes(rows: usize, nb: usize) -> usize {
    (rows * nb * (QK + 8)).next_multiple_of(64)
}

/// Per-token activation scales the tiles read: `da[t·nb + b]` (the block scale) and
/// `c[t·nb + b]` (the offset term's coefficient, see the module docs).
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
                    -(off as f32) * d * sum as f32
                }
                PanelKind::Unsigned { offset: None } => f16_to_f32([blk[2], blk[3]]),
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

/// Activation rows of one tile: quants at `qs[t] + b·block`, scales `da[t][b]`.
#[derive(Clone, Copy)]
pub(crate) struct ActRows<'a, const RN: usize> {
    /// Start of each token's quantized row (Q8_0 or Q8_1 blocks).
    pub rows: [&'a [u8]; RN],
    pub da: [&'a [f32]; RN],
    pub c: [&'a [f32]; RN],
}

/// `out[r][t] = Σ_b d_w·d_a·Σ q·a_q (+ Σ_b m_w·c_a)` for `RM` panel rows and `RN` tokens.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Every slice must hold `nb` blocks (asserted).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile<const RM: usize, const RN: usize, const SIGNED: bool>(
    panel: &Panel<'_>,
    first_row: usize,
    nb: usize,
    act: ActRows<'_, RN>,
    act_block: usize,
    with_offsets: bool,
) -> [[f32; RN]; RM] {
    let qs_at = act_block - QK; // Q8_0: 2, Q8_1: 4
    let wq: [&[u8]; RM] = std::array::from_fn(|r| &panel.q[(first_row + r) * nb * QK..(first_row + r + 1) * nb * QK]);
    let wd: [&[f32]; RM] = std::array::from_fn(|r| &panel.d[(first_row + r) * nb..(first_row + r + 1) * nb]);
    for t in 0..RN {
        assert!(act.rows[t].len() >= nb * act_block && act.da[t].len() >= nb && act.c[t].len() >= nb);
    }
    let wq = wq.map(|s| s.as_ptr());
    let wd = wd.map(|s| s.as_ptr());
    let aq = act.rows.map(|s| s.as_ptr());
    let ad = act.da.map(|s| s.as_ptr());
    // SAFETY: every pointer offset stays below `nb` blocks of its (asserted) slice.
    let mut out = unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); RN]; RM];
        for b in 0..nb {
            let mut w = [_mm256_setzero_si256(); RM];
            let mut uw = [_mm256_setzero_si256(); RM];
            let mut dw = [_mm256_setzero_ps(); RM];
            for r in 0..RM {
                w[r] = _mm256_loadu_si256(wq[r].add(b * QK).cast());
                uw[r] = if SIGNED { _mm256_sign_epi8(w[r], w[r]) } else { w[r] };
                dw[r] = _mm256_broadcast_ss(&*wd[r].add(b));
            }
            for t in 0..RN {
                let y = _mm256_loadu_si256(aq[t].add(b * act_block + qs_at).cast());
                let da = _mm256_broadcast_ss(&*ad[t].add(b));
                for r in 0..RM {
                    let sy = if SIGNED { _mm256_sign_epi8(y, w[r]) } else { y };
                    let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(uw[r], sy), ones));
                    acc[r][t] = _mm256_fmadd_ps(p, _mm256_mul_ps(dw[r], da), acc[r][t]);
                }
            }
        }
        acc.map(|row| row.map(|a| crate::ops::float_dot::avx2::hsum(a)))
    };
    if with_offsets {
        for (r, out_r) in out.iter_mut().enumerate() {
            let m: &[u8] = bytemuck::cast_slice(&panel.m[(first_row + r) * nb..(first_row + r + 1) * nb]);
            // SAFETY: features as above; `m` and every `c[t]` hold `nb` floats.
            let offsets = unsafe { crate::ops::float_dot::avx2::dot_f32::<RN>(m, act.c.map(|c| &c[..nb])) };
            for (o, off) in out_r.iter_mut().zip(offsets) {
                *o += off;
            }
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
        let mut state = 0x1234_5678_9abc_def1u64;
        let src: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect();
        let rb = format.row_bytes(cols).expect("row");
        let mut w = vec![0u8; rows * rb];
        let mut deq = vec![0f32; rows * cols];
        for r in 0..rows {
            quant::quantize_row(format, &src[r * cols..(r + 1) * cols], &mut w[r * rb..(r + 1) * rb]).expect("q");
            quant::dequantize_row(format, &w[r * rb..(r + 1) * rb], &mut deq[r * cols..(r + 1) * cols]).expect("dq");
        }
        (w, deq)
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
                    assert!((v - want).abs() <= 1e-6 * want.abs().max(1e-3), "{format:?} block {i} elem {j}: {v} vs {want}");
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
        let (rows, cols) = (PANEL_ROWS, 4096);
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
