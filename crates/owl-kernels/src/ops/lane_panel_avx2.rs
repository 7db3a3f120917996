//! AVX2 register tiles over a lane panel (`ops::lane_panel`): 8 rows (one 256-bit half of
//! the panel's 16 lanes) × `T` tokens. Per step and token: a 4-byte broadcast of the
//! activations, `maddubs` (pairs of products, i16) and `madd` (with ones, or with the K
//! formats' sub-block scales: exact i32), added to the lane's integer sum. The scalar
//! reference's bits (tested).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::lane_panel::{
    scale_groups, PanelView, ACT_K_BLOCK, ACT_K_BSUMS, ACT_K_QS, COEF_PAIRS, FOLD, K32, LANES, MIN, SIGNED,
};

/// Tokens per tile: 4 tokens' integer and float sums (and the K formats' offset sums) with
/// the weights, the broadcast and the constants fit the 16 registers.
pub(crate) const TOKENS: usize = 4;

/// Lanes `8·half..8·half + 8` of a 32-element kind's panel against `T` tokens: `act[t]` the
/// token's first quant (blocks `act_block` bytes apart), `da[t]`/`c[t]` its
/// `lane_panel::prepare_act` terms.
///
/// # Safety
/// AVX2, FMA and F16C; every pointer valid for the panel's `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_int8<const KIND: u8, const T: usize>(
    panel: &PanelView<'_>,
    half: usize,
    act: [*const u8; T],
    act_block: usize,
    da: [*const f32; T],
    c: [*const u32; T],
) -> [[f32; 8]; T] {
    debug_assert!(!panel.wide, "a panel unpacked for the other tile set");
    // SAFETY: offsets stay within the panel's blocks and the tokens' rows, as promised.
    unsafe {
        let q = panel.q.as_ptr().add(half * 32);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        for b in 0..panel.geo.nb {
            let mut isum = [_mm256_setzero_si256(); T];
            if KIND == FOLD {
                for t in 0..T {
                    isum[t] = _mm256_set1_epi32(*c[t].add(b) as i32);
                }
            }
            for s in 0..8 {
                let w = _mm256_loadu_si256(q.add((b * 8 + s) * LANES * 4).cast());
                let uw = if KIND == SIGNED { _mm256_sign_epi8(w, w) } else { w };
                for t in 0..T {
                    let a = _mm256_set1_epi32(act[t].add(b * act_block + 4 * s).cast::<i32>().read_unaligned());
                    let a = if KIND == SIGNED { _mm256_sign_epi8(a, w) } else { a };
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(uw, a), ones));
                }
            }
            let dw = _mm256_loadu_ps(panel.d.as_ptr().add(b * LANES + 8 * half));
            let mw = if KIND == MIN { _mm256_loadu_ps(panel.m.as_ptr().add(b * LANES + 8 * half)) } else { dw };
            for t in 0..T {
                let dwa = _mm256_mul_ps(dw, _mm256_set1_ps(*da[t].add(b)));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), dwa, acc[t]);
                if KIND == MIN {
                    acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(f32::from_bits(*c[t].add(b))), acc[t]);
                }
            }
        }
        acc.map(|v| std::mem::transmute::<__m256, [f32; 8]>(v))
    }
}

/// Lanes `8·half..8·half + 8` of a K panel against `T` tokens' Q8_K rows (`act[t]`).
///
/// # Safety
/// AVX2, FMA and F16C; every pointer valid for the panel's `nb` super-blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_k<const KIND: u8, const T: usize>(
    panel: &PanelView<'_>,
    half: usize,
    act: [*const u8; T],
) -> [[f32; 8]; T] {
    debug_assert!(!panel.wide, "a panel unpacked for the other tile set");
    // SAFETY: offsets stay within the panel's super-blocks and the tokens' rows.
    unsafe {
        let nsg = scale_groups(KIND);
        let per_group = 64 / nsg;
        let q = panel.q.as_ptr().add(half * 32);
        let mut acc = [_mm256_setzero_ps(); T];
        for b in 0..panel.geo.nb {
            let blk: [*const u8; T] = std::array::from_fn(|t| act[t].add(b * ACT_K_BLOCK));
            let mut isum = [_mm256_setzero_si256(); T];
            for g in 0..nsg {
                let sc = _mm256_loadu_si256(panel.sc.as_ptr().add((b * nsg + g) * LANES + 8 * half).cast());
                for s in g * per_group..(g + 1) * per_group {
                    let w = _mm256_loadu_si256(q.add((b * 64 + s) * LANES * 4).cast());
                    for t in 0..T {
                        let a = _mm256_set1_epi32(blk[t].add(ACT_K_QS + 4 * s).cast::<i32>().read_unaligned());
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), sc));
                    }
                }
            }
            let mut off = [_mm256_setzero_si256(); T];
            for p in 0..COEF_PAIRS {
                let cf = _mm256_loadu_si256(panel.coef.as_ptr().add((b * COEF_PAIRS + p) * LANES + 8 * half).cast());
                for t in 0..T {
                    let bs = _mm256_set1_epi32(blk[t].add(ACT_K_BSUMS + 4 * p).cast::<i32>().read_unaligned());
                    off[t] = _mm256_add_epi32(off[t], _mm256_madd_epi16(cf, bs));
                }
            }
            let dw = _mm256_loadu_ps(panel.d.as_ptr().add(b * LANES + 8 * half));
            let mw = _mm256_loadu_ps(panel.m.as_ptr().add(b * LANES + 8 * half));
            for t in 0..T {
                let d_a = _mm256_set1_ps(blk[t].cast::<f32>().read_unaligned());
                let dwa = _mm256_mul_ps(dw, d_a);
                if KIND == K32 {
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum[t], off[t])), dwa, acc[t]);
                } else {
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), dwa, acc[t]);
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(off[t]), _mm256_mul_ps(mw, d_a), acc[t]);
                }
            }
        }
        acc.map(|v| std::mem::transmute::<__m256, [f32; 8]>(v))
    }
}
