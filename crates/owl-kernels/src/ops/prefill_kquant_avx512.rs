//! Prefill register tiles for Q4_K, Q5_K and Q6_K on AVX-512 VNNI: the K panels of
//! `ops::prefill_kquant` (unpacked by the same code), two 32-element sub-blocks per step.
//!
//! A panel stores a super-block's codes, and the i16 scale vectors of its sub-blocks, in
//! element order, so sub-blocks `j` and `j + 1` are one 64-byte load of codes, one of Q8_K
//! activations and one of scales (32 i16). Per (row, token) and sub-block pair:
//! `vpmaddubsw` (pairs of products, i16) then `vpdpwssd` (times the scales, summed into the
//! i32 accumulator): two instructions per 64 products, against three per 32 in the AVX2
//! tile (`maddubs`, `madd` with the scales, `add`).
//!
//! Lane `k < 8` of the 16 i32 lanes sums elements `4k..4k+4` of the even sub-blocks, lane
//! `k + 8` those of the odd ones; adding the two halves gives, lane for lane, the AVX2 tile's
//! i32 sums (elements `4k..4k+4` of every sub-block). The integer sums are exact, and from
//! there the super-block's float work is the AVX2 tile's, so results are the AVX2 tile's
//! bits (tested). With twice the register file the tile is 2 rows × 4 tokens (the AVX2
//! tile's 1 × 4 spills beyond that).
//!
//! Chosen at run time with the 32-element formats' AVX-512 tiles
//! (`ops::prefill_int8_avx512::enabled`: AVX-512 F/BW/VL/VNNI, `OWL_AVX512` not `0`).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::prefill_kquant::KPanel;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::QK_K;

/// 32-element sub-blocks per super-block.
const SUBS: usize = QK_K / 32;

/// Bytes of a Q8_K activation block, and where its fields start.
const ACT_BLOCK: usize = std::mem::size_of::<BlockQ8K>();
const ACT_QS: usize = 4;
const ACT_BSUMS: usize = 4 + QK_K;

/// [`super::prefill_kquant::tile`]'s sums, on AVX-512 VNNI.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; the bounds of the AVX2 tile
/// hold.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
            let mut wide = [[_mm512_setzero_si512(); RN]; RM];
            for j in (0..SUBS).step_by(2) {
                let mut w = [_mm512_setzero_si512(); RM];
                let mut s = [_mm512_setzero_si512(); RM];
                for r in 0..RM {
                    w[r] = _mm512_loadu_si512(q.add((r * nsb + sb) * QK_K + 32 * j).cast());
                    s[r] = _mm512_loadu_si512(sc.add((r * nsb + sb) * SUBS * 16 + 16 * j).cast());
                }
                for t in 0..RN {
                    let a = _mm512_loadu_si512(a_blk[t].add(ACT_QS + 32 * j).cast());
                    for r in 0..RM {
                        wide[r][t] = _mm512_dpwssd_epi32(wide[r][t], _mm512_maddubs_epi16(w[r], a), s[r]);
                    }
                }
            }
            for t in 0..RN {
                let da = _mm256_broadcast_ss(&*a_blk[t].cast::<f32>());
                let bsums = _mm256_loadu_si256(a_blk[t].add(ACT_BSUMS).cast());
                for r in 0..RM {
                    let x = wide[r][t];
                    let isum = _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64::<1>(x));
                    let m = _mm256_loadu_si256(mins.add((r * nsb + sb) * 16).cast());
                    let off = _mm256_madd_epi16(m, bsums);
                    let dwa = _mm256_mul_ps(_mm256_broadcast_ss(&*d.add(r * nsb + sb)), da);
                    if OFFSET32 {
                        let p = _mm256_cvtepi32_ps(_mm256_sub_epi32(isum, off));
                        acc[r][t] = _mm256_fmadd_ps(p, dwa, acc[r][t]);
                    } else {
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dwa, acc[r][t]);
                        let dma = _mm256_mul_ps(_mm256_broadcast_ss(&*dmin.add(r * nsb + sb)), da);
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(off), dma, acc[r][t]);
                    }
                }
            }
        }
        super::prefill_int8::hsums(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::prefill_int8::TileSource;
    use crate::ops::prefill_kquant::{kpanel_bytes, kpanel_kind, unpack_rows, KPanelKind, KTiles};
    use crate::quant::{self, BlockFormat};

    /// Every K format, one and three super-blocks, every tile shape the sweep uses: the
    /// AVX-512 tiles give the AVX2 tile's bits.
    #[test]
    fn tiles_give_the_avx2_tiles_bits() {
        if !super::super::prefill_int8_avx512::available() {
            println!("skipped: this CPU lacks AVX-512 F/BW/VL/VNNI (the AVX-512 K-quant tiles need them)");
            return;
        }
        for format in BlockFormat::ALL {
            let Some(kind) = kpanel_kind(format) else { continue };
            for nsb in [1, 3] {
                let (rows, cols, n_tokens) = (5, nsb * QK_K, 6);
                let src = quant::test_values(rows * cols, 0x6b71_0001 + nsb as u64, 0.4, 0.2);
                let (w, _) = quant::test_rows(format, &src, rows, cols);
                let stride = BlockFormat::Q8_K.row_bytes(cols).expect("whole blocks");
                let x = quant::test_values(n_tokens * cols, 0x6b71_0002, 0.5, 2.0);
                // Q8_K blocks hold an f32: a 4-byte aligned buffer.
                let mut words = vec![0u32; (n_tokens * stride).div_ceil(4)];
                let act = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..n_tokens * stride];
                for t in 0..n_tokens {
                    let out = &mut act[t * stride..(t + 1) * stride];
                    quant::quantize_row(BlockFormat::Q8_K, &x[t * cols..(t + 1) * cols], out).expect("quantize");
                }
                let act: &[u8] = act;
                let mut buf = vec![0u8; kpanel_bytes(rows, nsb)];
                let mut panel = KPanel::from_bytes(&mut buf, rows, nsb);
                // SAFETY: `available` checked AVX2, FMA and F16C.
                unsafe { unpack_rows(format, &w, rows, nsb, &mut panel) };
                macro_rules! compare {
                    ($off:expr) => {{
                        let narrow = KTiles::<{ $off }, false>::new(&panel, rows, nsb, act, stride, n_tokens);
                        let wide = KTiles::<{ $off }, true>::new(&panel, rows, nsb, act, stride, n_tokens);
                        for r in 0..rows {
                            for t in 0..n_tokens {
                                // SAFETY: features checked above; (r, t) in bounds.
                                let (a, b) = unsafe { (narrow.tile::<1, 1>(r, t), wide.tile::<1, 1>(r, t)) };
                                assert_eq!(a[0][0].to_bits(), b[0][0].to_bits(), "{format:?} nsb {nsb} ({r}, {t})");
                                assert!(a[0][0] != 0.0);
                            }
                        }
                        // SAFETY: as above; rows 2..4 and tokens 1..5 are in bounds.
                        let (a, b) = unsafe { (narrow.tile::<2, 4>(2, 1), wide.tile::<2, 4>(2, 1)) };
                        for (ra, rb) in a.iter().zip(&b) {
                            for (x, y) in ra.iter().zip(rb) {
                                assert_eq!(x.to_bits(), y.to_bits(), "{format:?} nsb {nsb} 2x4");
                            }
                        }
                    }};
                }
                match kind {
                    KPanelKind::Min => compare!(false),
                    KPanelKind::Offset32 => compare!(true),
                }
            }
        }
    }
}
