//! AVX-512 VNNI register tiles over a lane panel (`ops::lane_panel`): all 16 rows × `T`
//! tokens. Per step and token one `vpdpbusd` (64 products into the 16 rows' exact sums)
//! against a 4-byte broadcast of the activations; the K formats sum each scale group the
//! same way and multiply it by the group's scales (`vpmulld`) into the super-block's sum,
//! and their offset term is 8 `vpdpwssd` of the coefficient pairs with the `bsums` pairs.
//! The scalar reference's bits (tested), so outputs do not depend on the host having
//! AVX-512.
//!
//! Chosen at run time: the CPU must have AVX-512 F, BW, VL and VNNI (Ice Lake, Zen 4 and
//! later); `OWL_AVX512=0` (read once) keeps the AVX2 tiles, for A/B measurements.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::lane_panel::{scale_groups, PanelView, ACT_K_BLOCK, ACT_K_BSUMS, ACT_K_QS, COEF_PAIRS, K32, LANES, MIN};

/// Tokens per tile of the 32-element kinds (an integer and a float sum each) and of the K
/// kinds (a scale group's sum as well).
pub(crate) const TOKENS_INT8: usize = 8;
pub(crate) const TOKENS_K: usize = 6;

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

/// All 16 lanes of a 32-element kind's panel (its `wide` form) against `T` tokens: `act[t]`
/// the token's first quant (blocks `act_block` bytes apart), `da[t]`/`c[t]` its
/// `lane_panel::prepare_act(.., wide = true, ..)` terms.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C; every pointer valid for the panel's `nb` blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn tile_int8<const KIND: u8, const T: usize>(
    panel: &PanelView<'_>,
    act: [*const u8; T],
    act_block: usize,
    da: [*const f32; T],
    c: [*const u32; T],
) -> [[f32; LANES]; T] {
    debug_assert!(panel.wide, "a panel unpacked for the other tile set");
    // SAFETY: offsets stay within the panel's blocks and the tokens' rows, as promised.
    unsafe {
        let q = panel.q.as_ptr();
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..panel.geo.nb {
            let mut isum = [_mm512_setzero_si512(); T];
            if KIND != MIN {
                for t in 0..T {
                    isum[t] = _mm512_set1_epi32(*c[t].add(b) as i32);
                }
            }
            for s in 0..8 {
                let w = _mm512_loadu_si512(q.add((b * 8 + s) * LANES * 4).cast());
                for t in 0..T {
                    let a = _mm512_set1_epi32(act[t].add(b * act_block + 4 * s).cast::<i32>().read_unaligned());
                    isum[t] = _mm512_dpbusd_epi32(isum[t], w, a);
                }
            }
            let dw = _mm512_loadu_ps(panel.d.as_ptr().add(b * LANES));
            let mw = if KIND == MIN { _mm512_loadu_ps(panel.m.as_ptr().add(b * LANES)) } else { dw };
            for t in 0..T {
                let dwa = _mm512_mul_ps(dw, _mm512_set1_ps(*da[t].add(b)));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), dwa, acc[t]);
                if KIND == MIN {
                    acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(f32::from_bits(*c[t].add(b))), acc[t]);
                }
            }
        }
        acc.map(|v| std::mem::transmute::<__m512, [f32; LANES]>(v))
    }
}

/// All 16 lanes of a K panel (its `wide` form) against `T` tokens' Q8_K rows (`act[t]`).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C; every pointer valid for the panel's `nb`
/// super-blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn tile_k<const KIND: u8, const T: usize>(
    panel: &PanelView<'_>,
    act: [*const u8; T],
) -> [[f32; LANES]; T] {
    debug_assert!(panel.wide, "a panel unpacked for the other tile set");
    // SAFETY: offsets stay within the panel's super-blocks and the tokens' rows.
    unsafe {
        let nsg = scale_groups(KIND);
        let per_group = 64 / nsg;
        let q = panel.q.as_ptr();
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..panel.geo.nb {
            let blk: [*const u8; T] = std::array::from_fn(|t| act[t].add(b * ACT_K_BLOCK));
            let mut isum = [_mm512_setzero_si512(); T];
            for g in 0..nsg {
                let mut part = [_mm512_setzero_si512(); T];
                for s in g * per_group..(g + 1) * per_group {
                    let w = _mm512_loadu_si512(q.add((b * 64 + s) * LANES * 4).cast());
                    for t in 0..T {
                        let a = _mm512_set1_epi32(blk[t].add(ACT_K_QS + 4 * s).cast::<i32>().read_unaligned());
                        part[t] = _mm512_dpbusd_epi32(part[t], w, a);
                    }
                }
                let sc = _mm512_loadu_si512(panel.sc.as_ptr().add((b * nsg + g) * LANES).cast());
                for t in 0..T {
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(part[t], sc));
                }
            }
            let mut off = [_mm512_setzero_si512(); T];
            for p in 0..COEF_PAIRS {
                let cf = _mm512_loadu_si512(panel.coef.as_ptr().add((b * COEF_PAIRS + p) * LANES).cast());
                for t in 0..T {
                    let bs = _mm512_set1_epi32(blk[t].add(ACT_K_BSUMS + 4 * p).cast::<i32>().read_unaligned());
                    off[t] = _mm512_dpwssd_epi32(off[t], cf, bs);
                }
            }
            let dw = _mm512_loadu_ps(panel.d.as_ptr().add(b * LANES));
            let mw = _mm512_loadu_ps(panel.m.as_ptr().add(b * LANES));
            for t in 0..T {
                let d_a = _mm512_set1_ps(blk[t].cast::<f32>().read_unaligned());
                let dwa = _mm512_mul_ps(dw, d_a);
                if KIND == K32 {
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(isum[t], off[t])), dwa, acc[t]);
                } else {
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), dwa, acc[t]);
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(off[t]), _mm512_mul_ps(mw, d_a), acc[t]);
                }
            }
        }
        acc.map(|v| std::mem::transmute::<__m512, [f32; LANES]>(v))
    }
}
