//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`, seeds and every crash the
//! fuzzer found) through the same checks on stable Rust, and the loader corpora the other
//! crates keep, so that a fixed crash stays fixed without a nightly toolchain.

use std::path::{Path, PathBuf};

fn inputs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        files.extend(entries.map(|e| e.expect("entry").path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn replay(target: &str, extra: &[&str], check: fn(&[u8])) {
    let mut dirs = vec![workspace().join("fuzz/corpus").join(target)];
    dirs.extend(extra.iter().map(|d| workspace().join(d)));
    // Templates that only the renderer process's limits stop (INDEX.tsv: `sandbox:`) would
    // run unbounded in-process; owl-cli's corpus test covers them.
    let sandboxed: Vec<String> =
        std::fs::read_to_string(workspace().join("crates/owl-tokenizer/tests/corpus/templates/INDEX.tsv"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\tsandbox:"))
            .filter_map(|l| l.split('\t').next().map(str::to_string))
            .collect();
    let files: Vec<PathBuf> = inputs(&dirs)
        .into_iter()
        .filter(|f| !f.file_name().and_then(|n| n.to_str()).is_some_and(|n| sandboxed.iter().any(|s| s == n)))
        .collect();
    assert!(!files.is_empty(), "{target}: no corpus in {dirs:?}");
    for file in &files {
        let data = std::fs::read(file).expect("read");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target}: {} fails its check", file.display());
        }
    }
    eprintln!("{target}: {} inputs", files.len());
}

#[test]
fn gguf_read() {
    replay(
        "gguf_read",
        &["crates/owl-formats/tests/corpus/gguf", "crates/owl-formats/tests/corpus/gguf_valid"],
        owl_fuzz::gguf_read,
    );
}

#[test]
fn safetensors_header() {
    replay("safetensors_header", &["crates/owl-formats/tests/corpus/safetensors"], owl_fuzz::safetensors_header);
}

#[test]
fn gguf_tokenizer() {
    replay("gguf_tokenizer", &["crates/owl-tokenizer/tests/corpus/vocab"], owl_fuzz::gguf_tokenizer);
}

#[test]
fn chat_template() {
    replay("chat_template", &["crates/owl-tokenizer/tests/corpus/templates"], owl_fuzz::chat_template);
}

#[test]
fn tokenizer_text() {
    replay("tokenizer_text", &[], owl_fuzz::tokenizer_text);
}

#[test]
fn server_request() {
    replay("server_request", &[], owl_fuzz::server_request);
}
