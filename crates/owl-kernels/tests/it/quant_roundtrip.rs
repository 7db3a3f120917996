//! Reference quantizers without gguf-py bytes (K-quants, IQ4, Q8_K, Q8_1) and all others:
//! round-trip error of dequantize(quantize(x)) on gaussian rows, determinism, edge rows.

use owl_kernels::quant::{dequantize_row, quantize_row, BlockFormat};

use crate::quant_common::Rng;

/// Bounds on RMSE(dequantize(quantize(x)) − x) / RMS(x), per format: (gaussian row σ 0.05,
/// the same row with every 37th value ×8). About 1.2× what these quantizers measure here
/// (printed by the test; measured: F16 2.0e-4, BF16 1.6e-3, Q8_0 5.3e-3, Q8_K 6.9e-3,
/// Q6_K 1.8e-2, Q5_K 3.6e-2, Q5_1 3.8e-2, Q5_0 4.3e-2, Q4_K 7.1e-2, IQ4_NL 7.6e-2,
/// IQ4_XS 7.6e-2, Q4_1 7.8e-2, Q4_0 8.6e-2, Q3_K 0.150, Q2_K 0.296), which are the
/// step sizes of uniform quantizers of those widths on gaussian blocks (e.g. Q8_0:
/// amax/127/√12 ≈ 2.1σ/440 ≈ 4.8e-3·σ). A quantizer that picks wrong scales or packs quants
/// in the wrong place misses these by far.
fn rel_rmse_bounds(f: BlockFormat) -> (f64, f64) {
    match f {
        BlockFormat::F32 => (0.0, 0.0),
        BlockFormat::F16 => (2.5e-4, 2.5e-4),
        BlockFormat::BF16 => (2.0e-3, 2.0e-3),
        BlockFormat::Q8_0 | BlockFormat::Q8_1 => (6.4e-3, 1.25e-2),
        BlockFormat::Q8_K => (8.3e-3, 2.3e-2),
        BlockFormat::Q6_K => (2.1e-2, 3.5e-2),
        BlockFormat::Q5_K => (4.3e-2, 5.9e-2),
        BlockFormat::Q5_1 => (4.6e-2, 6.1e-2),
        BlockFormat::Q5_0 => (5.1e-2, 9.6e-2),
        BlockFormat::Q4_K => (8.6e-2, 0.117),
        BlockFormat::IQ4_NL => (9.1e-2, 0.144),
        BlockFormat::IQ4_XS => (9.2e-2, 0.145),
        BlockFormat::Q4_1 => (9.4e-2, 0.126),
        BlockFormat::Q4_0 => (0.103, 0.192),
        BlockFormat::Q3_K => (0.18, 0.255),
        BlockFormat::Q2_K => (0.355, 0.42),
    }
}

fn round_trip(f: BlockFormat, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![0u8; f.row_bytes(x.len()).expect("whole blocks")];
    quantize_row(f, x, &mut q).expect("quantize");
    let mut y = vec![0f32; x.len()];
    dequantize_row(f, &q, &mut y).expect("dequantize");
    (q, y)
}

fn rel_rmse(x: &[f32], y: &[f32]) -> f64 {
    let err: f64 = x.iter().zip(y).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
    let pow: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
    (err / pow).sqrt()
}

#[test]
fn round_trip_error_is_within_the_stated_bound_for_every_format() {
    let n = 256 * 64;
    let mut failures = Vec::new();
    for f in BlockFormat::ALL {
        let mut rng = Rng::new(0x5EED_0001);
        let x = rng.gaussian_row(n, 0.05);
        let (q, y) = round_trip(f, &x);
        let e = rel_rmse(&x, &y);
        // Heavier tails: every 37th value ×8, as outlier weights in real tensors.
        let xt: Vec<f32> = x.iter().enumerate().map(|(i, &v)| if i % 37 == 0 { v * 8.0 } else { v }).collect();
        let (_, yt) = round_trip(f, &xt);
        let et = rel_rmse(&xt, &yt);
        let (bound, bound_outliers) = rel_rmse_bounds(f);
        println!(
            "{:<7} rel RMSE gaussian {e:.3e} (bound {bound:.2e}), with outliers {et:.3e} (bound {bound_outliers:.2e})",
            f.name()
        );
        if e > bound || et > bound_outliers {
            failures.push(format!("{f:?}: rel RMSE {e:e} / with outliers {et:e}"));
        }
        // Deterministic: same bytes and values again.
        let (q2, y2) = round_trip(f, &x);
        assert_eq!(q, q2, "{f:?}: quantize not deterministic");
        assert!(y.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()), "{f:?}");
    }
    assert!(failures.is_empty(), "round-trip error above bound: {failures:#?}");
}

#[test]
fn zero_tiny_and_constant_rows_round_trip_without_nan() {
    for f in BlockFormat::ALL {
        let n = 512;
        // All zero: exact zeros back.
        let (_, y) = round_trip(f, &vec![0.0; n]);
        assert!(y.iter().all(|&v| v == 0.0), "{f:?}: zero row gives {:?}", &y[..4]);
        // Constant row and a row of tiny values: finite output, constant row close.
        let (_, y) = round_trip(f, &vec![0.25; n]);
        assert!(y.iter().all(|v| v.is_finite()), "{f:?}: constant row not finite");
        let e = rel_rmse(&vec![0.25; n], &y);
        assert!(e < 0.1, "{f:?}: constant row rel RMSE {e}");
        let tiny: Vec<f32> = (0..n).map(|i| (i as f32 - 256.0) * 1e-9).collect();
        let (_, y) = round_trip(f, &tiny);
        assert!(y.iter().all(|v| v.is_finite()), "{f:?}: tiny row not finite");
    }
}

#[test]
fn non_finite_input_does_not_panic() {
    for f in BlockFormat::ALL {
        let mut x = vec![0.01f32; 512];
        x[3] = f32::NAN;
        x[300] = f32::INFINITY;
        x[301] = f32::NEG_INFINITY;
        let mut q = vec![0u8; f.row_bytes(x.len()).expect("blocks")];
        quantize_row(f, &x, &mut q).expect("quantize");
        let mut y = vec![0f32; x.len()];
        dequantize_row(f, &q, &mut y).expect("dequantize");
    }
}

#[test]
fn extreme_values_keep_their_sign_and_magnitude() {
    // The largest-magnitude element of each block must come back close (every format's
    // scale is anchored on it).
    let mut rng = Rng::new(7);
    for f in BlockFormat::ALL {
        let x = rng.gaussian_row(1024, 1.0);
        let (_, y) = round_trip(f, &x);
        let be = f.block_elems().max(32);
        for (xb, yb) in x.chunks(be).zip(y.chunks(be)) {
            let (i, _) =
                xb.iter().enumerate().fold((0, 0.0f32), |m, (i, v)| if v.abs() > m.1 { (i, v.abs()) } else { m });
            let tol = 0.25 * xb[i].abs();
            assert!((xb[i] - yb[i]).abs() <= tol, "{f:?}: extreme {} came back as {}", xb[i], yb[i]);
        }
    }
}
