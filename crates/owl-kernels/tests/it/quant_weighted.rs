//! Importance-weighted quantization (`quantize_row_weighted`, llama-quantize `--imatrix`)
//! byte for byte against ggml's C (`tests/data/weighted_quant/ggml_weighted.bin`, written
//! by `scripts/ggml_quant_reference/make.sh` from llama.cpp's `ggml-quants.c`), plus the
//! same input through ggml with no importance against our reference `quantize_row`.

use owl_kernels::quant::{dequantize_row, quantize_row, quantize_row_weighted, BlockFormat};

/// The expectations file (layout in `scripts/ggml_quant_reference/weighted_reference.c`).
const DATA: &[u8] = include_bytes!("../data/weighted_quant/ggml_weighted.bin");

/// Rows and columns of the generated input in the committed file.
const ROWS: usize = 8;
const COLS: usize = 512;

/// Formats whose reference quantizer (`quantize_row`) is known to differ from ggml's
/// `quantize_<fmt>(…, NULL)` as built by make.sh. Empty: all agree.
const REFERENCE_EXCLUDED: &[BlockFormat] = &[];

/// The C driver's xorshift32 generator.
struct XorShift32(u32);

impl XorShift32 {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1): the top 24 bits.
    fn uniform(&mut self) -> f32 {
        (self.next() >> 8) as f32 * (1.0 / 16_777_216.0)
    }
}

/// The driver's input (`generate` in weighted_reference.c): `ROWS × COLS` values, sums of
/// four uniforms scaled per row, 1 in 64 an outlier (×12) and 1 in 64 exactly zero; row 5
/// starts with a zero block, row 6 is all ≥ 0, row 7 all ≤ 0 with its first super-block
/// zero. Importance per column: `100·u⁴ + 1e-4`, 1 in 16 zero and columns 96..128 zero.
fn generate() -> (Vec<f32>, Vec<f32>) {
    let mut rng = XorShift32(0x2545_F491);
    let mut x = vec![0f32; ROWS * COLS];
    for r in 0..ROWS {
        let row_scale = 0.01f32 * (1 + 3 * r) as f32;
        for c in 0..COLS {
            let (u0, u1, u2, u3) = (rng.uniform(), rng.uniform(), rng.uniform(), rng.uniform());
            let g = ((u0 + u1) + (u2 + u3)) - 2.0;
            let mut v = g * row_scale;
            match rng.next() & 63 {
                0 => v *= 12.0,
                1 => v = 0.0,
                _ => {}
            }
            x[r * COLS + c] = v;
        }
    }
    x[5 * COLS..5 * COLS + 32].fill(0.0);
    // As the C writes it (not abs(), which would flip the sign of ±0).
    for v in &mut x[6 * COLS..7 * COLS] {
        *v = if *v < 0.0 { -*v } else { *v };
    }
    for (c, v) in x[7 * COLS..8 * COLS].iter_mut().enumerate() {
        *v = if c < 256 {
            0.0
        } else if *v > 0.0 {
            -*v
        } else {
            *v
        };
    }
    let mut imp = vec![0f32; COLS];
    for (c, w) in imp.iter_mut().enumerate() {
        let u = rng.uniform();
        let mut v = 100.0 * (u * u) * (u * u) + 1e-4;
        if rng.next() & 15 == 0 {
            v = 0.0;
        }
        if (96..128).contains(&c) {
            v = 0.0;
        }
        *w = v;
    }
    (x, imp)
}

struct Record {
    format: BlockFormat,
    weighted: bool,
    bytes: Vec<u8>,
}

struct Expectations {
    rows: usize,
    input: Vec<f32>,
    importance: Vec<f32>,
    records: Vec<Record>,
}

/// Reads an expectations file (`data`: the committed one, or an ad-hoc one with more rows).
fn parse(data: &[u8]) -> Expectations {
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = &data[at..at + n];
        at += n;
        s
    };
    assert_eq!(take(8), b"OWLWQ001", "magic");
    let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let rows = u32_at(take(4)) as usize;
    let cols = u32_at(take(4)) as usize;
    assert_eq!(cols, COLS);
    let floats = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>();
    let input = floats(take(4 * rows * cols));
    let importance = floats(take(4 * cols));
    let n = u32_at(take(4)) as usize;
    let mut records = Vec::with_capacity(n);
    for _ in 0..n {
        let name = take(8);
        let name = std::str::from_utf8(&name[..name.iter().position(|&b| b == 0).unwrap_or(8)]).expect("name");
        let format = *BlockFormat::ALL.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("format {name}"));
        let weighted = u32_at(take(4)) != 0;
        let len = u32_at(take(4)) as usize;
        records.push(Record { format, weighted, bytes: take(len).to_vec() });
    }
    assert_eq!(at, data.len(), "trailing bytes");
    Expectations { rows, input, importance, records }
}

/// Our rows for one record: each row through the weighted or reference quantizer.
fn ours(e: &Expectations, format: BlockFormat, weighted: bool) -> Vec<u8> {
    let rb = format.row_bytes(COLS).expect("whole blocks");
    let mut out = vec![0u8; e.rows * rb];
    for (x, dst) in e.input.chunks_exact(COLS).zip(out.chunks_exact_mut(rb)) {
        if weighted {
            quantize_row_weighted(format, x, dst, &e.importance).expect("quantize_row_weighted");
        } else {
            quantize_row(format, x, dst).expect("quantize_row");
        }
    }
    out
}

/// First differing byte: "(row r, block b, byte k): ours vs ggml".
fn first_diff(format: BlockFormat, got: &[u8], want: &[u8]) -> Option<String> {
    let rb = format.row_bytes(COLS).expect("whole blocks");
    let i = got.iter().zip(want).position(|(a, b)| a != b)?;
    let (row, in_row) = (i / rb, i % rb);
    Some(format!(
        "row {row}, block {}, byte {}: ours {:#04x}, ggml {:#04x} ({} bytes differ)",
        in_row / format.block_bytes(),
        in_row % format.block_bytes(),
        got[i],
        want[i],
        got.iter().zip(want).filter(|(a, b)| a != b).count()
    ))
}

#[test]
fn weighted_input_generator_matches_the_c_driver() {
    let e = parse(DATA);
    let (x, imp) = generate();
    for (what, ours, c) in [("input", &x, &e.input), ("importance", &imp, &e.importance)] {
        assert_eq!(ours.len(), c.len(), "{what} length");
        if let Some(i) = ours.iter().zip(c.iter()).position(|(a, b)| a.to_bits() != b.to_bits()) {
            panic!(
                "{what}[{i}]: generated {:e} ({:#010x}), C driver {:e} ({:#010x})",
                ours[i],
                ours[i].to_bits(),
                c[i],
                c[i].to_bits()
            );
        }
    }
}

/// Every weighted record of `e` against `quantize_row_weighted`; the failures.
fn weighted_failures(e: &Expectations) -> Vec<String> {
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for r in e.records.iter().filter(|r| r.weighted) {
        seen.push(r.format);
        let got = ours(e, r.format, true);
        assert_eq!(got.len(), r.bytes.len(), "{:?} length", r.format);
        match first_diff(r.format, &got, &r.bytes) {
            None => println!("{:<7} weighted: byte-exact ({} bytes)", r.format.name(), got.len()),
            Some(d) => failures.push(format!("{:?}: {d}", r.format)),
        }
    }
    use BlockFormat::*;
    for f in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS] {
        assert!(seen.contains(&f), "{f:?} missing from the expectations");
    }
    failures
}

#[test]
fn weighted_quantization_is_byte_exact_with_ggml() {
    let failures = weighted_failures(&parse(DATA));
    assert!(failures.is_empty(), "weighted quantization differs from ggml:\n{}", failures.join("\n"));
}

/// The data exercises the importance: ggml's weighted bytes differ from its reference
/// bytes for every format with a weighted quantizer (Q8_0 has none).
#[test]
fn weighted_expectations_differ_from_reference() {
    let e = parse(DATA);
    for w in e.records.iter().filter(|r| r.weighted) {
        let reference = e.records.iter().find(|r| !r.weighted && r.format == w.format).expect("reference record");
        if w.format == BlockFormat::Q8_0 {
            assert_eq!(w.bytes, reference.bytes, "ggml ignores the importance for Q8_0");
        } else {
            assert_ne!(w.bytes, reference.bytes, "{:?}: importance changed nothing", w.format);
        }
    }
}

/// A wider ad-hoc check against a file from `make.sh LLAMA_CPP_DIR OUT.bin ROWS SEED`:
/// `OWL_GGML_WEIGHTED_FILE=OUT.bin cargo test -p owl-kernels --test it -- --ignored
/// weighted_quantization_matches_external`.
#[test]
#[ignore = "needs OWL_GGML_WEIGHTED_FILE from scripts/ggml_quant_reference/make.sh"]
fn weighted_quantization_matches_external_ggml_file() {
    let path = std::env::var("OWL_GGML_WEIGHTED_FILE").expect("OWL_GGML_WEIGHTED_FILE");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let e = parse(&data);
    let mut failures = weighted_failures(&e);
    for r in e.records.iter().filter(|r| !r.weighted) {
        if let Some(d) = first_diff(r.format, &ours(&e, r.format, false), &r.bytes) {
            failures.push(format!("{:?} (reference): {d}", r.format));
        }
    }
    assert!(failures.is_empty(), "{} rows: differs from ggml:\n{}", e.rows, failures.join("\n"));
}

#[test]
fn reference_quantization_is_byte_exact_with_ggml_null_imatrix() {
    let e = parse(DATA);
    let mut failures = Vec::new();
    for r in e.records.iter().filter(|r| !r.weighted) {
        let got = ours(&e, r.format, false);
        let diff = first_diff(r.format, &got, &r.bytes);
        if REFERENCE_EXCLUDED.contains(&r.format) {
            println!("{:<7} reference: excluded ({})", r.format.name(), diff.as_deref().unwrap_or("now byte-exact"));
            continue;
        }
        match diff {
            None => println!("{:<7} reference: byte-exact", r.format.name()),
            Some(d) => failures.push(format!("{:?}: {d}", r.format)),
        }
    }
    assert!(failures.is_empty(), "quantize_row differs from ggml (NULL imatrix):\n{}", failures.join("\n"));
}

#[test]
fn weighted_rejects_wrong_importance_length() {
    let x = vec![0.5f32; 256];
    for f in [BlockFormat::Q4_0, BlockFormat::Q4_K, BlockFormat::IQ4_XS, BlockFormat::Q8_0] {
        let mut dst = vec![0u8; f.row_bytes(256).expect("whole blocks")];
        assert!(quantize_row_weighted(f, &x, &mut dst, &[1.0; 255]).is_err(), "{f:?} short");
        assert!(quantize_row_weighted(f, &x, &mut dst, &[1.0; 257]).is_err(), "{f:?} long");
        assert!(quantize_row_weighted(f, &x, &mut dst, &[1.0; 256]).is_ok(), "{f:?} right");
        let mut short = vec![0u8; dst.len() - 1];
        assert!(quantize_row_weighted(f, &x, &mut short, &[1.0; 256]).is_err(), "{f:?} dst");
    }
}

#[test]
fn weighted_with_zero_importance_is_finite() {
    let (x, _) = generate();
    let zeros = vec![0f32; COLS];
    for &f in BlockFormat::ALL.iter().filter(|f| !f.is_float()) {
        let rb = f.row_bytes(COLS).expect("whole blocks");
        let mut dst = vec![0u8; rb];
        let mut back = vec![0f32; COLS];
        for row in x.chunks_exact(COLS) {
            quantize_row_weighted(f, row, &mut dst, &zeros).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            dequantize_row(f, &dst, &mut back).expect("dequantize_row");
            assert!(back.iter().all(|v| v.is_finite()), "{f:?}: non-finite value");
        }
        // An all-zero row with all-zero importance too.
        quantize_row_weighted(f, &[0.0; COLS], &mut dst, &zeros).expect("zero row");
        dequantize_row(f, &dst, &mut back).expect("dequantize_row");
        assert!(back.iter().all(|v| v.is_finite()), "{f:?}: non-finite value (zero row)");
    }
}
