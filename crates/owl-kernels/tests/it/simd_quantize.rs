//! AVX2 activation quantizers (Q8_0, Q8_1, Q8_K) against the scalar references: the output
//! blocks must be byte-identical for every input, so results never depend on the ISA —
//! gaussian rows of many magnitudes, exact rounding ties, zeros, ±0, subnormals, huge values,
//! ±inf and NaN.

use owl_kernels::quant::{q8_0, q8_1, q8_k, QK_K};

use crate::quant_common::Rng;
use crate::simd_common::{as_bytes, avx2_available};

/// Rows exercising every path of a quantizer with `block` elements per block.
fn test_rows(block: usize) -> Vec<(String, Vec<f32>)> {
    let mut rng = Rng::new(0x0A4C);
    let mut rows = Vec::new();
    for (i, sigma) in [1e-30f64, 1e-6, 1e-3, 0.05, 1.0, 30.0, 1e4, 1e30].into_iter().enumerate() {
        rows.push((format!("gaussian sigma {sigma:e}"), rng.gaussian_row(block * (3 + i), sigma)));
    }
    // Exact ties: with the block maximum 127 (Q8_0/Q8_1: d = 1) or −127 (Q8_K: iscale = 1)
    // every x·(1/d) lands exactly on k + 0.5.
    for max in [127.0f32, -127.0] {
        let mut x: Vec<f32> = (0..block).map(|i| (i % 100) as f32 - 50.0 + 0.5).collect();
        x[block / 3] = max;
        rows.push((format!("ties, max {max}"), x));
    }
    let special = [0.0f32, -0.0, 1e-40, -1e-42, 3.0e38, -3.0e38, f32::MIN_POSITIVE, 0.5, -0.5, 1.5, -2.5];
    let mut x: Vec<f32> =
        (0..block * 4).map(|i| special[i % special.len()] * (1.0 + (i / special.len()) as f32)).collect();
    x[..block].fill(0.0); // an all-zero block
    x[block..2 * block].iter_mut().for_each(|v| *v = -0.0);
    rows.push(("specials".into(), x));
    // +amax and −amax in one block: the signed maximum is the first of them.
    let mut x = rng.gaussian_row(block * 2, 1.0);
    x[5] = -9.0;
    x[9] = 9.0;
    x[block + 2] = 9.0;
    x[block + 7] = -9.0;
    rows.push(("equal magnitudes, both signs".into(), x));
    // Subnormal-only blocks (1/d overflows to inf in the Q8_0 scale).
    rows.push(("subnormals".into(), (0..block * 2).map(|i| (i as f32 - 7.0) * 1e-44).collect()));
    // Non-finite values.
    for (name, v) in [("inf", f32::INFINITY), ("-inf", f32::NEG_INFINITY), ("nan", f32::NAN)] {
        let mut x = rng.gaussian_row(block * 3, 1.0);
        x[3] = v;
        x[block + 1] = v;
        x[block + 2] = -v;
        x[2 * block..].fill(v);
        rows.push((format!("with {name}"), x));
    }
    rows
}

/// Runs the scalar and AVX2 quantizer on every test row and compares the bytes.
fn check<B: bytemuck::Pod + std::fmt::Debug>(
    name: &str,
    block: usize,
    scalar: fn(&[f32], &mut [B]),
    avx2: unsafe fn(&[f32], &mut [B]),
) {
    if !avx2_available() {
        return;
    }
    let mut blocks = 0;
    for (what, x) in test_rows(block) {
        let nb = x.len() / block;
        let mut want = vec![B::zeroed(); nb];
        let mut got = vec![B::zeroed(); nb];
        scalar(&x[..nb * block], &mut want);
        // SAFETY: avx2_available() checked above.
        unsafe { avx2(&x[..nb * block], &mut got) };
        for (b, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                as_bytes(std::slice::from_ref(g)),
                as_bytes(std::slice::from_ref(w)),
                "{name} {what}: block {b}: avx2 {g:?} vs scalar {w:?}"
            );
        }
        blocks += nb;
    }
    println!("{name}: {blocks} blocks byte-identical");
}

#[test]
fn q8_0_avx2_quantize_is_bit_identical() {
    check("Q8_0", 32, q8_0::quantize, q8_0::avx2::quantize);
}

#[test]
fn q8_1_avx2_quantize_is_bit_identical() {
    check("Q8_1", 32, q8_1::quantize, q8_1::avx2::quantize);
}

#[test]
fn q8_k_avx2_quantize_is_bit_identical() {
    check("Q8_K", QK_K, q8_k::quantize, q8_k::avx2::quantize);
}
