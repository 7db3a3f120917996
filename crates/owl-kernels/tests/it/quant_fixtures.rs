//! Every block format against gguf-py's reference data (`fixtures/quants/`): dequantization
//! of real, random and quantized blocks, and bit-exact quantization where gguf-py has a
//! quantizer.

use owl_kernels::quant::{dequantize_row, quantize_row, BlockFormat};

use crate::quant_common::fixture_cases;

/// Max relative error allowed against gguf-py's f32 dequantization (both compute in f32
/// with the same operation order, so the measured error is 0: every value is bit-exact).
const DEQUANT_REL_TOL: f64 = 1e-6;

#[test]
fn dequantize_matches_gguf_py_for_every_case() {
    let cases = fixture_cases();
    let mut formats_seen = std::collections::HashSet::new();
    for case in &cases {
        let f = case.format;
        formats_seen.insert(f);
        let mut got = vec![f32::NAN; case.dequantized.len()];
        dequantize_row(f, &case.raw, &mut got).unwrap_or_else(|e| panic!("{f:?} {}: {e}", case.kind));
        let (mut max_rel, mut max_abs, mut inexact) = (0.0f64, 0.0f64, 0usize);
        for (i, (&g, &w)) in got.iter().zip(&case.dequantized).enumerate() {
            if g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()) {
                continue;
            }
            inexact += 1;
            let abs = (g as f64 - w as f64).abs();
            let rel = abs / (w as f64).abs().max(f64::MIN_POSITIVE);
            assert!(rel <= DEQUANT_REL_TOL, "{f:?} {}: element {i}: got {g:e}, gguf-py {w:e}", case.kind);
            max_rel = max_rel.max(rel);
            max_abs = max_abs.max(abs);
        }
        println!(
            "{:<7} {:<13} {:>6} values: {} not bit-exact, max abs {max_abs:e}, max rel {max_rel:e}",
            f.name(),
            case.kind,
            got.len(),
            inexact
        );
    }
    // Every fixture format (all of ours but F32 and the activation-only Q8_1 / Q8_K).
    for f in BlockFormat::ALL {
        if !matches!(f, BlockFormat::F32 | BlockFormat::Q8_1 | BlockFormat::Q8_K) {
            assert!(formats_seen.contains(&f), "no fixture case for {f:?}");
        }
    }
}

#[test]
fn quantize_matches_gguf_py_bytes_exactly() {
    let mut checked = 0;
    for case in fixture_cases().iter().filter(|c| c.kind == "quantize") {
        let f = case.format;
        let input = case.input.as_ref().expect("quantize case has an input");
        let mut bytes = vec![0u8; case.raw.len()];
        quantize_row(f, input, &mut bytes).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        let bb = f.block_bytes();
        let bad: Vec<usize> =
            (0..bytes.len() / bb).filter(|&b| bytes[b * bb..(b + 1) * bb] != case.raw[b * bb..(b + 1) * bb]).collect();
        assert!(
            bad.is_empty(),
            "{f:?}: {} of {} blocks differ from gguf-py, first {}: ours {:02x?}, gguf-py {:02x?} (input {:?})",
            bad.len(),
            bytes.len() / bb,
            bad[0],
            &bytes[bad[0] * bb..(bad[0] + 1) * bb],
            &case.raw[bad[0] * bb..(bad[0] + 1) * bb],
            &input[bad[0] * f.block_elems()..(bad[0] + 1) * f.block_elems()]
        );
        // And the reference dequantization of those bytes.
        let mut deq = vec![0f32; input.len()];
        dequantize_row(f, &bytes, &mut deq).expect("dequantize");
        assert!(deq.iter().zip(&case.dequantized).all(|(a, b)| a.to_bits() == b.to_bits()), "{f:?} dequantized");
        println!("{:<5} quantize: {} blocks bit-identical to gguf-py", f.name(), bytes.len() / bb);
        checked += 1;
    }
    // gguf-py quantizes F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
    assert_eq!(checked, 7, "expected 7 quantize fixtures");
}
