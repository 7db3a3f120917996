//! Demo-model tokenizers, built once per test binary, and the reference data files.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use owl_formats::gguf::GgufFile;
use owl_tokenizer::{GgufVocab, Tokenizer};

pub const MODELS: [&str; 3] = ["smollm2", "gemma3", "qwen2.5-coder"];

/// The fixture folder under ../shared/fixtures/real_models of each demo model.
pub fn fixture_dir(model: &str) -> &'static str {
    match model {
        "smollm2" => "real_models/smollm2-135m-instruct-q4_1",
        "gemma3" => "real_models/gemma3-270m-q4_k_m",
        "qwen2.5-coder" => "real_models/qwen2.5-coder-0.5b-instruct",
        other => panic!("no fixture for {other}"),
    }
}

struct Demo {
    vocab: GgufVocab,
    tokenizer: Tokenizer,
}

fn demos() -> &'static Mutex<HashMap<&'static str, &'static Demo>> {
    static DEMOS: OnceLock<Mutex<HashMap<&'static str, &'static Demo>>> = OnceLock::new();
    DEMOS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn demo(name: &str) -> &'static Demo {
    let key = MODELS.iter().find(|m| **m == name).unwrap_or_else(|| panic!("unknown demo model {name}"));
    let mut map = demos().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = map.get(key) {
        return d;
    }
    let path = owl_test::demo_model(name);
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let vocab = GgufVocab::from_gguf(&gguf).unwrap_or_else(|e| panic!("{name}: {e}"));
    let start = Instant::now();
    let tokenizer = Tokenizer::from_gguf_vocab(&vocab).unwrap_or_else(|e| panic!("{name}: {e}"));
    let build_time = start.elapsed();
    eprintln!("built {name} tokenizer ({}) in {build_time:?}", tokenizer.description());
    let d: &'static Demo = Box::leak(Box::new(Demo { vocab, tokenizer }));
    map.insert(key, d);
    d
}

/// The demo model's tokenizer (built once per test binary).
pub fn tokenizer(name: &str) -> &'static Tokenizer {
    &demo(name).tokenizer
}

/// The demo model's vocabulary metadata.
pub fn vocab(name: &str) -> &'static GgufVocab {
    &demo(name).vocab
}

pub fn data_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(file)
}

/// A JSON file of tests/data.
pub fn data(file: &str) -> serde_json::Value {
    let path = data_path(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an id list: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap_or_else(|| panic!("not an id: {x}")) as u32)
        .collect()
}

pub fn corpus() -> Vec<String> {
    data("corpus.json")["corpus"]
        .as_array()
        .expect("corpus list")
        .iter()
        .map(|s| s.as_str().expect("corpus string").to_string())
        .collect()
}

/// Shows where two id lists part, for failure messages.
pub fn diff(ours: &[u32], want: &[u32], tok: &Tokenizer) -> String {
    let at = ours.iter().zip(want).position(|(a, b)| a != b).unwrap_or(ours.len().min(want.len()));
    let show = |v: &[u32]| -> String {
        v.iter()
            .skip(at.saturating_sub(2))
            .take(8)
            .map(|&i| format!("{i}:{:?}", tok.piece(i).unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!("first difference at {at}: ours [{}] vs reference [{}]", show(ours), show(want))
}
