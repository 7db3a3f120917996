//! Shared helpers of the quant tests: a tiny deterministic PRNG and the fixture index.

use owl_kernels::quant::BlockFormat;

/// SplitMix64: deterministic, dependency-free, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// `n` values of `sigma · N(0, 1)`.
    pub fn gaussian_row(&mut self, n: usize, sigma: f64) -> Vec<f32> {
        (0..n).map(|_| (sigma * self.gaussian()) as f32).collect()
    }
}

/// The format GGUF/ggml calls `name`.
pub fn format_by_name(name: &str) -> BlockFormat {
    BlockFormat::ALL
        .into_iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("fixture format {name} has no BlockFormat"))
}

/// One case of `quants/index.json`.
pub struct Case {
    pub format: BlockFormat,
    pub kind: String,
    pub raw: Vec<u8>,
    pub dequantized: Vec<f32>,
    /// The quantizer input, for `quantize` cases.
    pub input: Option<Vec<f32>>,
}

/// Every case of every format in the fixture index (asserting the index's block sizes
/// agree with ours).
pub fn fixture_cases() -> Vec<Case> {
    let index = owl_test::fixture_json("quants/index.json");
    let formats = index.as_object().expect("index.json is an object");
    let mut cases = Vec::new();
    for (name, entry) in formats {
        if name.starts_with('_') {
            continue;
        }
        let format = format_by_name(name);
        assert_eq!(entry["block_elems"].as_u64(), Some(format.block_elems() as u64), "{name} block_elems");
        assert_eq!(entry["block_bytes"].as_u64(), Some(format.block_bytes() as u64), "{name} block_bytes");
        for case in entry["cases"].as_array().expect("cases") {
            let file = |key: &str| case[key].as_str().map(|f| owl_test::fixture(&format!("quants/{f}")));
            let raw_path = file("raw").expect("raw");
            let raw = std::fs::read(&raw_path).expect("read raw");
            let dequantized = owl_test::read_f32_file(&file("dequantized_f32").expect("dequantized_f32"));
            let input = file("input_f32").map(|p| owl_test::read_f32_file(&p));
            cases.push(Case {
                format,
                kind: case["kind"].as_str().expect("kind").to_string(),
                raw,
                dequantized,
                input,
            });
        }
    }
    cases
}
