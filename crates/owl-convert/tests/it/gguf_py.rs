//! The files owl writes, read by llama.cpp's own GGUF library (`gguf` from PyPI, in a cached
//! venv made by scripts/gguf_check/setup.sh; a failed install fails the test): it parses them,
//! sees the tensors and keys owl's reader sees in the same order, knows every tensor name and
//! key for the architecture, and its tensor-name map (what convert_hf_to_gguf.py names
//! tensors by) gives each checkpoint tensor the name owl wrote.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use owl_convert::FileType;
use owl_formats::gguf::GgufFile;

use crate::fixtures::{converted, VARIANTS};

fn gguf_python() -> PathBuf {
    owl_test::setup_python("gguf_check/setup.sh", "gguf-py")
}

fn gguf_py_view(python: &Path, file: &Path, hf_dir: &Path) -> serde_json::Value {
    let check = owl_test::workspace_root().join("scripts/gguf_check/check.py");
    let out = Command::new(python).arg(check).arg(file).arg(hf_dir).output().expect("run check.py");
    assert!(
        out.status.success(),
        "gguf-py could not read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("check.py prints JSON")
}

/// Tensors llama.cpp's converter computes rather than maps (`generate_extra_tensors`).
const COMPUTED: [&str; 3] = ["rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"];

#[test]
fn llama_cpp_gguf_library_reads_every_converted_fixture() {
    let python = gguf_python();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for variant in VARIANTS {
        for ft in [FileType::F32, FileType::Q4_K_M] {
            if ft == FileType::Q4_K_M && !matches!(variant, "llama" | "qwen3_moe" | "gemma3" | "deepseek_v2") {
                continue;
            }
            let file = converted(variant, ft, tmp.path());
            let hf = owl_test::fixture(&format!("models/{variant}"));
            let view = gguf_py_view(&python, &file, &hf);
            let ours = GgufFile::open(&file).expect("owl reads its own file");
            let mut problems = Vec::new();
            if view["unknown_tensors"] != serde_json::json!([]) {
                problems.push(format!("tensor names llama.cpp does not know: {}", view["unknown_tensors"]));
            }
            if view["unknown_keys"] != serde_json::json!([]) {
                problems.push(format!("keys llama.cpp does not know: {}", view["unknown_keys"]));
            }
            let theirs: Vec<(String, Vec<u64>, String)> = view["tensors"]
                .as_array()
                .expect("tensors")
                .iter()
                .map(|t| {
                    let shape =
                        t["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim")).collect();
                    (t["name"].as_str().expect("name").into(), shape, t["type"].as_str().expect("type").into())
                })
                .collect();
            let mine: Vec<(String, Vec<u64>, String)> =
                ours.tensors().iter().map(|t| (t.name.clone(), t.shape.clone(), t.ggml_type.to_string())).collect();
            if theirs != mine {
                problems.push(format!("tensors differ:\n gguf-py {theirs:?}\n owl     {mine:?}"));
            }
            let keys: Vec<&str> =
                view["kv"].as_array().expect("kv").iter().map(|k| k["key"].as_str().expect("key")).collect();
            let my_keys: Vec<&str> = ours.metadata().iter().map(|(k, _)| k.as_str()).collect();
            if keys != my_keys {
                problems.push(format!("keys differ:\n gguf-py {keys:?}\n owl     {my_keys:?}"));
            }
            let mapped: BTreeSet<&str> = view["hf_names"]
                .as_object()
                .expect("hf_names")
                .values()
                .filter_map(|v| v.as_array())
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            let unmapped: Vec<&String> = view["hf_names"]
                .as_object()
                .expect("hf_names")
                .iter()
                .filter(|(_, v)| v.is_null())
                .map(|(k, _)| k)
                .collect();
            let written: BTreeSet<&str> = mine.iter().map(|(n, _, _)| n.as_str()).collect();
            let missing: Vec<_> = mapped.difference(&written).collect();
            let extra: Vec<_> = written.difference(&mapped).filter(|n| !COMPUTED.contains(n)).collect();
            if !missing.is_empty() || !extra.is_empty() || !unmapped.is_empty() {
                problems.push(format!(
                    "names vs gguf.TensorNameMap: missing {missing:?}, not from the map {extra:?}, unmapped {unmapped:?}"
                ));
            }
            if !problems.is_empty() {
                failures.push(format!("{variant} {ft}: {}", problems.join("; ")));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
