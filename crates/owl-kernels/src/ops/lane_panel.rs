//! Prefill (many tokens) for the block formats with an int8 panel: a chunk of 16 weight rows
//! is unpacked once into a *lane panel* whose SIMD lanes are the rows, then register tiles
//! of all 16 rows × a few tokens sweep it (`lane_panel_avx2`, `lane_panel_avx512`).
//!
//! Layout: every 4 consecutive codes of a row (a "step") are one 32-bit lane, and the 16
//! rows' lanes of a step are one 64-byte line, `q[((block·steps + step)·16 + row)·4 + k]`.
//! A tile loads a line, broadcasts a token's 4 activation bytes of the same step and does one
//! `vpdpbusd` (AVX-512 VNNI) or `maddubs` + `madd` (AVX2): each lane then holds its row's
//! exact integer dot product, and a block ends with one conversion and one FMA per 16 rows
//! (8 on AVX2) — no horizontal sums, and the per-block float work shared by the 16 rows
//! instead of repeated for each (row, token) pair as in row-major panels.
//!
//! Numerics, the same on every path (the scalar [`reference`] defines them; the AVX2 and
//! AVX-512 tiles give its bits, tested): per (row, token) `acc = 0`, and for each block
//! `b` in order, with `isum` the block's exact integer sum,
//! - Q4_0, Q5_0 (`w = d(q − 8|16)`, codes unsigned): `isum = Σ q·a − (8|16)·Σa`;
//!   `acc = fma(isum, d_w·d_a, acc)`;
//! - Q8_0, IQ4_NL (int8 weights): `isum = Σ w·a`; `acc = fma(isum, d_w·d_a, acc)`;
//! - Q4_1, Q5_1 (`w = d·q + m`, Q8_1 activations with `s = d_a·Σa`): `isum = Σ q·a`;
//!   `acc = fma(isum, d_w·d_a, acc)`, then `acc = fma(m_w, s_a, acc)`;
//! - Q4_K, Q5_K (super-blocks of 256, `w = d·sc_j·q − dmin·m_j`, Q8_K activations):
//!   `isum = Σ_j sc_j·Σ_{sub-block j} q·a`, `off = Σ_j m_j·Σ_{sub-block j} a` (from the
//!   Q8_K `bsums`); `acc = fma(isum, d·d_a, acc)`, then `acc = fma(off, −dmin·d_a, acc)`;
//! - Q6_K (`w = d·sc_k·(q − 32)`, scales per 16): `isum − off` with `off = Σ_k 32·sc_k·bsum_k`;
//!   `acc = fma(isum − off, d·d_a, acc)`.
//!
//! The integer sums are exact (no `maddubs` saturation: |pair| ≤ 2·63·127 for the unsigned
//! codes, ≤ 2·128·127 with the signed formats' `sign` trick; a K super-block's sum < 2^29),
//! so the order in which a SIMD path forms them does not matter, and the float operations
//! are one chain per (row, token) in block order: outputs do not depend on the host's
//! vector width. The conversion of `isum` is exact below 2^24 (every 32-element block; a
//! K super-block's sum can exceed it only for weights at the extremes of every scale).
//!
//! Signed codes: AVX2 multiplies `|w|` by `sign(a, w)` (`maddubs` takes one unsigned
//! operand); AVX-512 has no `vpsignb`, so its panel stores `w ⊕ 0x80 = w + 128` and the
//! token's `−128·Σa` starts the integer sum ([`prepare_act`], `wide`). The unpacked panels
//! differ; the integers do not, as long as no activation is −128 (`sign` cannot negate it;
//! the Q8_0 quantizer gives −127..=127, checked in debug builds). A weight code of −128 is
//! exact on both paths.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::quant::iq4_nl::{BlockIQ4NL, KVALUES_IQ4NL};
use crate::quant::q4_0::BlockQ4_0;
use crate::quant::q4_1::BlockQ4_1;
use crate::quant::q4_k::{get_scale_min_k4, BlockQ4K};
use crate::quant::q5_0::BlockQ5_0;
use crate::quant::q5_1::BlockQ5_1;
use crate::quant::q5_k::BlockQ5K;
use crate::quant::q6_k::BlockQ6K;
use crate::quant::q8_0::BlockQ8_0;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::simd_x86::{five_bit_codes_32, nibbles_32};
use crate::quant::{f16_to_f32, BlockFormat, QK_K};

/// Rows of a panel: the lanes of a 512-bit register of i32 (two 256-bit halves on AVX2).
pub(crate) const LANES: usize = 16;

/// Bytes of a Q8_K activation block, and where its fields start.
pub(crate) const ACT_K_BLOCK: usize = std::mem::size_of::<BlockQ8K>();
pub(crate) const ACT_K_QS: usize = 4;
pub(crate) const ACT_K_BSUMS: usize = 4 + QK_K;

/// How a block's integer sum joins the accumulator (the tiles' `KIND`); see the module docs.
pub(crate) const FOLD: u8 = 0;
pub(crate) const MIN: u8 = 1;
pub(crate) const SIGNED: u8 = 2;
pub(crate) const KMIN: u8 = 3;
pub(crate) const K32: u8 = 4;

/// The tile kind of a weight format, if it has a lane panel.
pub(crate) const fn kind(format: BlockFormat) -> Option<u8> {
    match format {
        BlockFormat::Q4_0 | BlockFormat::Q5_0 => Some(FOLD),
        BlockFormat::Q4_1 | BlockFormat::Q5_1 => Some(MIN),
        BlockFormat::Q8_0 | BlockFormat::IQ4_NL => Some(SIGNED),
        BlockFormat::Q4_K | BlockFormat::Q5_K => Some(KMIN),
        BlockFormat::Q6_K => Some(K32),
        _ => None,
    }
}

/// Whether a kind's blocks are K super-blocks (Q8_K activations).
pub(crate) const fn is_k(kind: u8) -> bool {
    kind == KMIN || kind == K32
}

/// 4-element steps per block.
pub(crate) const fn steps(kind: u8) -> usize {
    if is_k(kind) {
        QK_K / 4
    } else {
        8
    }
}

/// Scale groups per K super-block (sub-blocks of 32 for Q4_K/Q5_K, of 16 for Q6_K).
pub(crate) const fn scale_groups(kind: u8) -> usize {
    match kind {
        KMIN => 8,
        K32 => 16,
        _ => 0,
    }
}

/// Pairs of offset coefficients per K super-block (one per two Q8_K `bsums`).
pub(crate) const COEF_PAIRS: usize = 8;

/// Byte sizes of a panel's regions for `nb` blocks, each a multiple of 64.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub kind: u8,
    pub nb: usize,
}

impl Geometry {
    fn q(&self) -> usize {
        self.nb * steps(self.kind) * 64
    }
    fn sc(&self) -> usize {
        self.nb * scale_groups(self.kind) * 64
    }
    fn coef(&self) -> usize {
        if is_k(self.kind) {
            self.nb * COEF_PAIRS * 64
        } else {
            0
        }
    }
    /// Bytes of the whole panel.
    pub(crate) fn bytes(&self) -> usize {
        self.q() + self.sc() + self.coef() + 2 * self.nb * 64
    }
}

/// A lane panel of `nb` blocks: `q` the codes (layout in the module docs), and per block
/// 16 lanes each of `sc` (per scale group: AVX2 `sc` in both i16 halves, AVX-512 `sc` as
/// i32), `coef` (per pair `p` of `bsums`: `coef_{2p}` and `coef_{2p+1}` as i16 halves),
/// `d` (the quants' scale) and `m` (Q4_1/Q5_1: the min; Q4_K/Q5_K: `−dmin`).
pub(crate) struct LanePanel<'a> {
    pub geo: Geometry,
    /// The AVX-512 form (signed codes stored `⊕ 0x80`, K scales as i32).
    pub wide: bool,
    pub q: &'a mut [u8],
    pub sc: &'a mut [i32],
    pub coef: &'a mut [i32],
    pub d: &'a mut [f32],
    pub m: &'a mut [f32],
}

impl<'a> LanePanel<'a> {
    /// Splits a panel-sized byte buffer (64-byte aligned).
    pub(crate) fn from_bytes(buf: &'a mut [u8], geo: Geometry, wide: bool) -> Self {
        let (q, rest) = buf.split_at_mut(geo.q());
        let (sc, rest) = rest.split_at_mut(geo.sc());
        let (coef, rest) = rest.split_at_mut(geo.coef());
        let (d, rest) = rest.split_at_mut(geo.nb * 64);
        let m = &mut rest[..geo.nb * 64];
        LanePanel {
            geo,
            wide,
            q,
            sc: bytemuck::cast_slice_mut(sc),
            coef: bytemuck::cast_slice_mut(coef),
            d: bytemuck::cast_slice_mut(d),
            m: bytemuck::cast_slice_mut(m),
        }
    }

    /// The panel as the tiles read it.
    pub(crate) fn view(&self) -> PanelView<'_> {
        PanelView { geo: self.geo, wide: self.wide, q: self.q, sc: self.sc, coef: self.coef, d: self.d, m: self.m }
    }
}

/// A lane panel read-only: what the tiles and [`reference`] take, from a panel just
/// unpacked ([`LanePanel::view`]) or one kept unpacked (`panel_matrix::PanelMatrix`).
pub(crate) struct PanelView<'a> {
    pub geo: Geometry,
    pub wide: bool,
    pub q: &'a [u8],
    pub sc: &'a [i32],
    pub coef: &'a [i32],
    pub d: &'a [f32],
    pub m: &'a [f32],
}

impl<'a> PanelView<'a> {
    /// Splits a panel-sized byte buffer (64-byte aligned) as [`LanePanel::from_bytes`] does.
    pub(crate) fn from_bytes(buf: &'a [u8], geo: Geometry, wide: bool) -> Self {
        let (q, rest) = buf.split_at(geo.q());
        let (sc, rest) = rest.split_at(geo.sc());
        let (coef, rest) = rest.split_at(geo.coef());
        let (d, rest) = rest.split_at(geo.nb * 64);
        let m = &rest[..geo.nb * 64];
        PanelView {
            geo,
            wide,
            q,
            sc: bytemuck::cast_slice(sc),
            coef: bytemuck::cast_slice(coef),
            d: bytemuck::cast_slice(d),
            m: bytemuck::cast_slice(m),
        }
    }
}

/// Unpacks `rows ≤ 16` weight rows of `format` (`nb` blocks each, row-major from `w`) into
/// `panel`; lanes past `rows` are zero. Block by block, 8 rows at a time: each row's codes
/// are decoded into registers (32 codes each) and 8 rows' registers are transposed as 8×8
/// matrices of 4-code lanes into the panel's lines.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn unpack_rows(format: BlockFormat, w: &[u8], rows: usize, panel: &mut LanePanel<'_>) {
    assert!(rows <= LANES && kind(format) == Some(panel.geo.kind));
    let nb = panel.geo.nb;
    if rows < LANES {
        panel.q.fill(0);
        panel.sc.fill(0);
        panel.coef.fill(0);
        panel.d.fill(0.0);
        panel.m.fill(0.0);
    }
    let steps = steps(panel.geo.kind);
    let wide = panel.wide;
    let halves = rows.div_ceil(8);
    let block_bytes = format.block_bytes();
    let q = &mut *panel.q;
    let (d, m) = (&mut *panel.d, &mut *panel.m);
    // The 32-element formats: `$codes` the 32 codes of block `$blk` (in register), `$side`
    // its scales (row `$r`, block `$b`).
    macro_rules! int8 {
        ($B:ty, |$blk:ident, $r:ident, $b:ident| $codes:expr, $side:block) => {{
            let blocks: &[$B] = bytemuck::cast_slice(&w[..rows * nb * block_bytes]);
            for $b in 0..nb {
                for half in 0..halves {
                    let mut v = [_mm256_setzero_si256(); 8];
                    for (i, vi) in v.iter_mut().enumerate() {
                        let $r = 8 * half + i;
                        if $r < rows {
                            let $blk = &blocks[$r * nb + $b];
                            *vi = $codes;
                            $side
                        }
                    }
                    store_lines(q, (($b * steps) * LANES + 8 * half) * 4, v);
                }
            }
        }};
    }
    // SAFETY (every arm): AVX2 guaranteed by the caller; loads and stores through fixed-size
    // arrays or bounds-checked slices.
    unsafe {
        match format {
            BlockFormat::Q4_0 => int8!(BlockQ4_0, |blk, r, b| nibbles_32(&blk.qs), {
                d[b * LANES + r] = f16_to_f32(blk.d);
            }),
            BlockFormat::Q5_0 => int8!(BlockQ5_0, |blk, r, b| five_bit_codes_32(&blk.qs, blk.qh), {
                d[b * LANES + r] = f16_to_f32(blk.d);
            }),
            BlockFormat::Q4_1 => int8!(BlockQ4_1, |blk, r, b| nibbles_32(&blk.qs), {
                d[b * LANES + r] = f16_to_f32(blk.d);
                m[b * LANES + r] = f16_to_f32(blk.m);
            }),
            BlockFormat::Q5_1 => int8!(BlockQ5_1, |blk, r, b| five_bit_codes_32(&blk.qs, blk.qh), {
                d[b * LANES + r] = f16_to_f32(blk.d);
                m[b * LANES + r] = f16_to_f32(blk.m);
            }),
            BlockFormat::Q8_0 => {
                int8!(BlockQ8_0, |blk, r, b| signed_form(_mm256_loadu_si256(blk.qs.as_ptr().cast()), wide), {
                    d[b * LANES + r] = f16_to_f32(blk.d);
                })
            }
            BlockFormat::IQ4_NL => {
                let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
                int8!(BlockIQ4NL, |blk, r, b| signed_form(_mm256_shuffle_epi8(table, nibbles_32(&blk.qs)), wide), {
                    d[b * LANES + r] = f16_to_f32(blk.d);
                })
            }
            BlockFormat::Q4_K | BlockFormat::Q5_K | BlockFormat::Q6_K => {
                let (sc, coef) = (&mut *panel.sc, &mut *panel.coef);
                let nsg = scale_groups(panel.geo.kind);
                // Scales per group and offset coefficients per `bsums` entry into their lanes.
                let mut put = |r: usize, b: usize, scales: &[i16], coefs: &[i16; 16], dd: f32, mm: f32| {
                    for (g, &s) in scales.iter().enumerate() {
                        sc[(b * nsg + g) * LANES + r] = if wide { s as i32 } else { pair(s, s) };
                    }
                    for p in 0..COEF_PAIRS {
                        coef[(b * COEF_PAIRS + p) * LANES + r] = pair(coefs[2 * p], coefs[2 * p + 1]);
                    }
                    d[b * LANES + r] = dd;
                    m[b * LANES + r] = mm;
                };
                for b in 0..nb {
                    for half in 0..halves {
                        // v[i][j]: codes 32j..32j + 32 of row 8·half + i.
                        let mut v = [[_mm256_setzero_si256(); 8]; 8];
                        for (i, vi) in v.iter_mut().enumerate() {
                            let r = 8 * half + i;
                            if r >= rows {
                                continue;
                            }
                            let at = (r * nb + b) * block_bytes;
                            let raw = &w[at..at + block_bytes];
                            match format {
                                BlockFormat::Q6_K => {
                                    let blk: &BlockQ6K = bytemuck::from_bytes(raw);
                                    *vi = q6k_codes(blk);
                                    let scales: [i16; 16] = std::array::from_fn(|k| blk.scales[k] as i16);
                                    put(r, b, &scales, &scales.map(|s| 32 * s), blk.d(), 0.0);
                                }
                                BlockFormat::Q5_K => {
                                    let blk: &BlockQ5K = bytemuck::from_bytes(raw);
                                    *vi = q45k_codes(&blk.qs, Some(&blk.qh));
                                    let (scales, coefs) = q45k_scales(&blk.scales);
                                    put(r, b, &scales, &coefs, blk.d(), -blk.dmin());
                                }
                                _ => {
                                    let blk: &BlockQ4K = bytemuck::from_bytes(raw);
                                    *vi = q45k_codes(&blk.qs, None);
                                    let (scales, coefs) = q45k_scales(&blk.scales);
                                    put(r, b, &scales, &coefs, blk.d(), -blk.dmin());
                                }
                            }
                        }
                        for j in 0..8 {
                            store_lines(q, ((b * steps + 8 * j) * LANES + 8 * half) * 4, v.map(|vi| vi[j]));
                        }
                    }
                }
            }
            // `kind` admits no other format (asserted above).
            _ => unreachable!("no lane panel for {format:?}"),
        }
    }
}

/// Stores 8 rows' registers of 8 four-code lanes (`v[i]`: row `i`, steps 0..8) as 8 panel
/// half-lines: step `s`'s 8 lanes at `q[at + s·64..]` (an 8×8 transpose of 32-bit lanes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store_lines(q: &mut [u8], at: usize, v: [__m256i; 8]) {
    // Pairs of rows, then quads, then the two 128-bit halves.
    let t: [__m256i; 8] = std::array::from_fn(|k| {
        let (a, b) = (v[k / 2 * 2], v[k / 2 * 2 + 1]);
        if k % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // u[k]: rows 0..4 (k < 4) or 4..8, steps k % 4 and k % 4 + 4.
    let u: [__m256i; 8] = std::array::from_fn(|k| {
        let base = if k < 4 { 0 } else { 4 };
        let (a, b) = (t[base + (k % 4) / 2], t[base + 2 + (k % 4) / 2]);
        if k % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    for s in 0..8 {
        let (a, b) = (u[s % 4], u[4 + s % 4]);
        let line =
            if s < 4 { _mm256_permute2x128_si256::<0x20>(a, b) } else { _mm256_permute2x128_si256::<0x31>(a, b) };
        let dst = &mut q[at + s * LANES * 4..at + s * LANES * 4 + 32];
        // SAFETY: `dst` is 32 bytes.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), line) };
    }
}

/// Two i16 in one i32 lane (`lo` first in memory).
fn pair(lo: i16, hi: i16) -> i32 {
    (lo as u16 as u32 | ((hi as u16 as u32) << 16)) as i32
}

/// Signed codes as the panel stores them: as they are (AVX2) or `⊕ 0x80` (AVX-512).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn signed_form(v: __m256i, wide: bool) -> __m256i {
    if wide {
        _mm256_xor_si256(v, _mm256_set1_epi8(0x80u8 as i8))
    } else {
        v
    }
}

/// Q4_K / Q5_K scales of the 8 sub-blocks, and the min of each `bsums` entry (two per
/// sub-block).
fn q45k_scales(scales: &[u8; 12]) -> ([i16; 8], [i16; 16]) {
    let mut sc = [0i16; 8];
    let mut coefs = [0i16; 16];
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, scales);
        sc[j] = s as i16;
        coefs[2 * j] = m as i16;
        coefs[2 * j + 1] = m as i16;
    }
    (sc, coefs)
}

/// One Q4_K (`qh = None`) or Q5_K super-block's codes in element order, 32 a register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q45k_codes(qs: &[u8; QK_K / 2], qh: Option<&[u8; 32]>) -> [__m256i; 8] {
    let qs: &[[u8; 32]; 4] = bytemuck::cast_ref(qs);
    let mut q = [_mm256_setzero_si256(); 8];
    // SAFETY: AVX2 guaranteed by the caller; loads through 32-byte arrays.
    unsafe {
        let low4 = _mm256_set1_epi8(0x0F);
        let qh = qh.map(|h| _mm256_loadu_si256(h.as_ptr().cast()));
        for j in 0..4 {
            // Element 64j + 32h + l is nibble h of qs[32j + l]; Q5_K's fifth bit is bit
            // 2j + h of qh[l].
            let v = _mm256_loadu_si256(qs[j].as_ptr().cast());
            let mut lo = _mm256_and_si256(v, low4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
            if let Some(qh) = qh {
                lo = _mm256_or_si256(lo, fifth_bit(qh, 2 * j));
                hi = _mm256_or_si256(hi, fifth_bit(qh, 2 * j + 1));
            }
            q[2 * j] = lo;
            q[2 * j + 1] = hi;
        }
    }
    q
}

/// One Q6_K super-block's codes (0..64) in element order, 32 a register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_codes(b: &BlockQ6K) -> [__m256i; 8] {
    let ql: &[[u8; 32]; 4] = bytemuck::cast_ref(&b.ql);
    let qh: &[[u8; 32]; 2] = bytemuck::cast_ref(&b.qh);
    let mut q = [_mm256_setzero_si256(); 8];
    // SAFETY: AVX2 guaranteed by the caller; loads through 32-byte arrays.
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
                q[4 * n + k] = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(hi));
            }
        }
    }
    q
}

/// 16 in each byte whose bit `bit` of `qh` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fifth_bit(qh: __m256i, bit: usize) -> __m256i {
    let mask = _mm256_set1_epi8((1u8 << bit) as i8);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, mask), mask);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// `v` shifted right by `2k` bits in 16-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn shift_right_2k(v: __m256i, k: usize) -> __m256i {
    match k {
        0 => v,
        1 => _mm256_srli_epi16::<2>(v),
        2 => _mm256_srli_epi16::<4>(v),
        _ => _mm256_srli_epi16::<6>(v),
    }
}

/// A 32-element kind's per-token block terms: `da[t·nb + b]` the activation block's scale,
/// `c[t·nb + b]` the integer sum's start (Q4_0/Q5_0: `−(8|16)·Σa`; Q8_0/IQ4_NL: `−128·Σa`
/// when `wide`, else 0; as i32 bits) or, for Q4_1/Q5_1, the Q8_1 block's `s` (f32 bits).
/// Activations are Q8_0 or Q8_1 rows `stride` bytes apart, in blocks of `block` bytes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare_act(
    format: BlockFormat,
    wide: bool,
    act: &[u8],
    stride: usize,
    block: usize,
    n_tokens: usize,
    nb: usize,
    da: &mut [f32],
    c: &mut [u32],
) {
    let kind = kind(format).expect("a 32-element lane panel format");
    assert_eq!(block, if kind == MIN { 36 } else { 34 }, "Q8_1 blocks for Q4_1/Q5_1, Q8_0 blocks otherwise");
    let offset = match format {
        BlockFormat::Q4_0 => 8,
        BlockFormat::Q5_0 => 16,
        _ if wide => 128,
        _ => 0,
    };
    for t in 0..n_tokens {
        let row = &act[t * stride..t * stride + nb * block];
        for (b, blk) in row.chunks_exact(block).enumerate() {
            da[t * nb + b] = f16_to_f32([blk[0], blk[1]]);
            c[t * nb + b] = if kind == MIN {
                f16_to_f32([blk[2], blk[3]]).to_bits()
            } else {
                // The AVX2 `sign` trick needs activations in −127..=127 (the Q8_0 quantizer's).
                debug_assert!(kind != SIGNED || blk[2..].iter().all(|&q| q != 0x80), "activation −128");
                let sum: i32 = blk[2..].iter().map(|&q| q as i8 as i32).sum();
                (-offset * sum) as u32
            };
        }
    }
}

/// The 16 lanes of one token, by the definition in the module docs (scalar; the tiles give
/// its bits). `act` is the token's activation row: Q8_K blocks for the K kinds, else the
/// 32 quants of each block `act_block` bytes apart from `act[0]`, with `da`, `c` its
/// [`prepare_act`] terms.
#[cfg(test)]
pub(crate) fn reference(panel: &PanelView<'_>, act: &[u8], act_block: usize, da: &[f32], c: &[u32]) -> [f32; LANES] {
    let kind = panel.geo.kind;
    let steps = steps(kind);
    let signed_codes = kind == SIGNED && !panel.wide;
    let code = |b: usize, e: usize, r: usize| {
        let v = panel.q[((b * steps + e / 4) * LANES + r) * 4 + e % 4];
        if signed_codes {
            v as i8 as i32
        } else {
            v as i32
        }
    };
    let half = |v: i32, hi: bool| if hi { (v >> 16) as i16 as i32 } else { v as i16 as i32 };
    let mut out = [0f32; LANES];
    for (r, acc) in out.iter_mut().enumerate() {
        for b in 0..panel.geo.nb {
            let (d, m) = (panel.d[b * LANES + r], panel.m[b * LANES + r]);
            if is_k(kind) {
                let blk = &act[b * ACT_K_BLOCK..(b + 1) * ACT_K_BLOCK];
                let d_a = f32::from_le_bytes(blk[..4].try_into().expect("4 bytes"));
                let a = |e: usize| blk[ACT_K_QS + e] as i8 as i32;
                let bsum =
                    |k: usize| i16::from_le_bytes([blk[ACT_K_BSUMS + 2 * k], blk[ACT_K_BSUMS + 2 * k + 1]]) as i32;
                let nsg = scale_groups(kind);
                let mut isum = 0i32;
                for g in 0..nsg {
                    let s = panel.sc[(b * nsg + g) * LANES + r];
                    let s = if panel.wide { s } else { half(s, false) };
                    let per = QK_K / nsg;
                    isum += s * (g * per..(g + 1) * per).map(|e| code(b, e, r) * a(e)).sum::<i32>();
                }
                let off: i32 =
                    (0..16).map(|k| half(panel.coef[(b * COEF_PAIRS + k / 2) * LANES + r], k % 2 == 1) * bsum(k)).sum();
                if kind == K32 {
                    *acc = ((isum - off) as f32).mul_add(d * d_a, *acc);
                } else {
                    *acc = (isum as f32).mul_add(d * d_a, *acc);
                    *acc = (off as f32).mul_add(m * d_a, *acc);
                }
            } else {
                let a = |e: usize| act[b * act_block + e] as i8 as i32;
                let start = if kind == MIN { 0 } else { c[b] as i32 };
                let isum = start + (0..32).map(|e| code(b, e, r) * a(e)).sum::<i32>();
                *acc = (isum as f32).mul_add(d * da[b], *acc);
                if kind == MIN {
                    *acc = m.mul_add(f32::from_bits(c[b]), *acc);
                }
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

    /// The unpacked panel times a token's activations is the dequantized weights' dot product
    /// with the dequantized activations (to float rounding), for every format, both panel
    /// forms, and a partial panel (zero lanes past the rows).
    #[test]
    fn reference_matches_dequantized_dot_products() {
        if !Isa::Avx2.is_available() {
            return;
        }
        for format in BlockFormat::ALL {
            let Some(kind) = kind(format) else { continue };
            let block = if is_k(kind) { QK_K } else { 32 };
            let (rows, cols) = (11, 2 * QK_K);
            let nb = cols / block;
            let src = quant::test_values(rows * cols, 0x51ab_77c3_0912_4e01, 0.4, 0.3);
            let (w, deq) = quant::test_rows(format, &src, rows, cols);
            let act_format = match kind {
                MIN => BlockFormat::Q8_1,
                KMIN | K32 => BlockFormat::Q8_K,
                _ => BlockFormat::Q8_0,
            };
            let x = quant::test_values(cols, 0x0f0f_1234_5678_9abd, 0.5, 2.0);
            let stride = act_format.row_bytes(cols).expect("whole blocks");
            let mut words = vec![0u32; stride.div_ceil(4)];
            let act = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..stride];
            quant::quantize_row(act_format, &x, act).expect("quantize");
            let mut xq = vec![0f32; cols];
            quant::dequantize_row(act_format, act, &mut xq).expect("dequantize");
            for wide in [false, true] {
                let geo = Geometry { kind, nb };
                let mut buf = vec![0u8; geo.bytes() + 64];
                let start = buf.as_ptr().align_offset(64);
                let mut panel = LanePanel::from_bytes(&mut buf[start..], geo, wide);
                // SAFETY: AVX2 checked above.
                unsafe { unpack_rows(format, &w, rows, &mut panel) };
                let panel = panel.view();
                let mut da = vec![0f32; nb];
                let mut c = vec![0u32; nb];
                let (quants, act_block) = if is_k(kind) {
                    (&act[..], ACT_K_BLOCK)
                } else {
                    prepare_act(format, wide, act, stride, act_format.block_bytes(), 1, nb, &mut da, &mut c);
                    let ab = act_format.block_bytes();
                    (&act[ab - 32..], ab)
                };
                let got = reference(&panel, quants, act_block, &da, &c);
                for r in 0..LANES {
                    let want: f64 =
                        if r < rows { (0..cols).map(|e| deq[r * cols + e] as f64 * xq[e] as f64).sum() } else { 0.0 };
                    let scale: f64 = (0..cols).map(|e| (deq[(r % rows) * cols + e] * xq[e]).abs() as f64).sum();
                    // Q8_1 stores `s = d·Σa` as f16: the min term is off by its rounding.
                    let s_rounding: f64 = if kind == MIN {
                        (0..nb).map(|b| (panel.m[b * LANES + r] * f32::from_bits(c[b])).abs() as f64 * 1e-3).sum()
                    } else {
                        0.0
                    };
                    assert!(
                        (got[r] as f64 - want).abs() <= 1e-5 * scale + s_rounding + 1e-6,
                        "{format:?} wide {wide} row {r}: {} vs {want}",
                        got[r]
                    );
                }
            }
        }
    }

    /// Every format, both panel forms, full and partial panels, one and three blocks: the AVX2
    /// tiles (8 lanes × 4 tokens and × 1) and, where the CPU has AVX-512 VNNI, the 16-lane
    /// tiles give the scalar reference's bits.
    #[test]
    fn tiles_give_the_reference_bits() {
        use super::super::{lane_panel_avx2 as avx2, lane_panel_avx512 as avx512};
        if !Isa::Avx2.is_available() {
            return;
        }
        let wide_ok = avx512::available();
        if !wide_ok {
            println!("skipped the AVX-512 tiles: this CPU lacks AVX-512 F/BW/VL/VNNI");
        }
        const N_TOKENS: usize = 9;
        for format in BlockFormat::ALL {
            let Some(kind) = kind(format) else { continue };
            let block = if is_k(kind) { QK_K } else { 32 };
            for (rows, nb) in [(16, 1), (16, 3), (5, 3), (9, 2)] {
                let cols = nb * block;
                let src = quant::test_values(rows * cols, 0x7e57_0001 + (rows * nb) as u64, 0.4, 0.3);
                let (w, _) = quant::test_rows(format, &src, rows, cols);
                let act_format = match kind {
                    MIN => BlockFormat::Q8_1,
                    KMIN | K32 => BlockFormat::Q8_K,
                    _ => BlockFormat::Q8_0,
                };
                let stride = act_format.row_bytes(cols).expect("whole blocks").next_multiple_of(4);
                let x = quant::test_values(N_TOKENS * cols, 0x7e57_0002, 0.5, 2.0);
                let mut words = vec![0u32; N_TOKENS * stride / 4];
                let act = bytemuck::cast_slice_mut::<u32, u8>(&mut words);
                for t in 0..N_TOKENS {
                    let row = &mut act[t * stride..t * stride + act_format.row_bytes(cols).expect("whole blocks")];
                    quant::quantize_row(act_format, &x[t * cols..(t + 1) * cols], row).expect("quantize");
                }
                let act: &[u8] = act;
                for wide in [false, true] {
                    if wide && !wide_ok {
                        continue;
                    }
                    let geo = Geometry { kind, nb };
                    let mut buf = vec![0u8; geo.bytes() + 64];
                    let start = buf.as_ptr().align_offset(64);
                    let mut panel = LanePanel::from_bytes(&mut buf[start..], geo, wide);
                    // SAFETY: AVX2 checked above.
                    unsafe { unpack_rows(format, &w, rows, &mut panel) };
                    let panel = panel.view();
                    let mut da = vec![0f32; N_TOKENS * nb];
                    let mut c = vec![0u32; N_TOKENS * nb];
                    let act_block = act_format.block_bytes();
                    let quants = if is_k(kind) {
                        act
                    } else {
                        prepare_act(format, wide, act, stride, act_block, N_TOKENS, nb, &mut da, &mut c);
                        &act[act_block - 32..]
                    };
                    let want: Vec<[f32; LANES]> = (0..N_TOKENS)
                        .map(|t| reference(&panel, &quants[t * stride..], act_block, &da[t * nb..], &c[t * nb..]))
                        .collect();
                    for (t, lanes) in want.iter().enumerate() {
                        assert!(
                            lanes[..rows].iter().filter(|v| **v == 0.0).count() <= 1,
                            "{format:?} rows {rows} nb {nb} wide {wide} t {t}: a zero output tests nothing: {lanes:?}"
                        );
                    }
                    let got = |t: usize, first: usize, lanes: &[f32]| {
                        for (i, v) in lanes.iter().enumerate() {
                            assert_eq!(
                                v.to_bits(),
                                want[t][first + i].to_bits(),
                                "{format:?} wide {wide} rows {rows} nb {nb} token {t} lane {}",
                                first + i
                            );
                        }
                    };
                    macro_rules! run {
                        ($n:expr, $t0:expr) => {{
                            const N: usize = $n;
                            let t0 = $t0;
                            let a: [*const u8; N] = std::array::from_fn(|k| quants[(t0 + k) * stride..].as_ptr());
                            let d: [*const f32; N] = std::array::from_fn(|k| da[(t0 + k) * nb..].as_ptr());
                            let cc: [*const u32; N] = std::array::from_fn(|k| c[(t0 + k) * nb..].as_ptr());
                            // SAFETY: features checked above; every pointer covers `nb` blocks.
                            unsafe {
                                if wide {
                                    let v = match kind {
                                        FOLD => avx512::tile_int8::<FOLD, N>(&panel, a, act_block, d, cc),
                                        MIN => avx512::tile_int8::<MIN, N>(&panel, a, act_block, d, cc),
                                        SIGNED => avx512::tile_int8::<SIGNED, N>(&panel, a, act_block, d, cc),
                                        KMIN => avx512::tile_k::<KMIN, N>(&panel, a),
                                        _ => avx512::tile_k::<K32, N>(&panel, a),
                                    };
                                    for (k, lanes) in v.iter().enumerate() {
                                        got(t0 + k, 0, lanes);
                                    }
                                } else {
                                    for half in 0..2 {
                                        let v = match kind {
                                            FOLD => avx2::tile_int8::<FOLD, N>(&panel, half, a, act_block, d, cc),
                                            MIN => avx2::tile_int8::<MIN, N>(&panel, half, a, act_block, d, cc),
                                            SIGNED => avx2::tile_int8::<SIGNED, N>(&panel, half, a, act_block, d, cc),
                                            KMIN => avx2::tile_k::<KMIN, N>(&panel, half, a),
                                            _ => avx2::tile_k::<K32, N>(&panel, half, a),
                                        };
                                        for (k, lanes) in v.iter().enumerate() {
                                            got(t0 + k, 8 * half, lanes);
                                        }
                                    }
                                }
                            }
                        }};
                    }
                    run!(4, 0);
                    run!(4, 4);
                    run!(1, 8);
                    run!(6, 2);
                    run!(8, 1);
                }
            }
        }
    }

    /// Cost of unpacking a chunk (a measurement: `cargo test --release -p owl-kernels --lib
    /// lane_panel_unpack_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn lane_panel_unpack_cost() {
        if !Isa::Avx2.is_available() {
            return;
        }
        let cols = 4096;
        for format in [
            BlockFormat::Q4_0,
            BlockFormat::Q4_1,
            BlockFormat::Q5_0,
            BlockFormat::Q8_0,
            BlockFormat::Q4_K,
            BlockFormat::Q6_K,
        ] {
            let kind = kind(format).expect("a lane panel format");
            let nb = cols / if is_k(kind) { QK_K } else { 32 };
            let src = quant::test_values(LANES * cols, 0x1234_5678_9abc_def1, 0.5, 0.2);
            let (w, _) = quant::test_rows(format, &src, LANES, cols);
            let geo = Geometry { kind, nb };
            let mut buf = vec![0u8; geo.bytes() + 64];
            let start = buf.as_ptr().align_offset(64);
            let mut panel = LanePanel::from_bytes(&mut buf[start..], geo, true);
            let reps = 3000;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                // SAFETY: AVX2 checked above.
                unsafe { unpack_rows(format, std::hint::black_box(&w), LANES, &mut panel) };
            }
            let ns = t.elapsed().as_secs_f64() * 1e9 / (reps * LANES * cols / 32) as f64;
            println!("{format:?}: unpack {ns:.2} ns per row and 32 columns");
        }
    }
}
