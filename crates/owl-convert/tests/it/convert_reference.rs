//! owl convert against llama.cpp's convert_hf_to_gguf.py on every fixture model: the same
//! metadata keys with the same values, and the same tensors (names, order, shapes, types and
//! bytes) in float32. The expectations were recorded once with the llama.cpp that
//! bench/compare builds (llama.cpp@0c1e57098), by scripts/convert_reference/record.sh (which
//! switches set_vocab off: the fixtures have no tokenizer, so both sides write weights and
//! hyper-parameters only). A few keys owl writes and llama.cpp's converter does not are
//! listed below, each with why: without them the file would describe another model than the
//! checkpoint (llama.cpp's converter relies on defaults that do not hold for these configs).

use std::collections::BTreeMap;
use std::path::Path;

use owl_convert::FileType;
use owl_formats::gguf::{GgufFile, MetadataArray, MetadataValue};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::fixtures::converted;

/// (variants, key) that owl writes beyond llama.cpp's converter, and why.
const OWL_ONLY: &[(&[&str], &str, &str)] = &[
    (
        &["deepseek_v3", "deepseek_v3_yarn_groups"],
        "deepseek2.expert_gating_func",
        "transformers' DeepseekV3 routes by sigmoid when the config names no scoring_func; llama.cpp's default is softmax",
    ),
    (
        &["gemma2", "gemma3", "gemma3_rope_scaling"],
        ".attention.scale",
        "query_pre_attn_scalar differs from head_dim, which llama.cpp assumes",
    ),
    (
        &["gemma3", "gemma3_rope_scaling"],
        "gemma3.attention.sliding_window_pattern",
        "the config's layer types differ from llama.cpp's fixed 5-in-6 sliding pattern",
    ),
    (&["mistral"], "llama.attention.sliding_window", "Mistral's sliding window, which llama.cpp's llama graph has not"),
];

fn owl_only(variant: &str, key: &str) -> bool {
    OWL_ONLY
        .iter()
        .any(|(variants, k, _)| variants.contains(&variant) && (key == *k || (k.starts_with('.') && key.ends_with(k))))
}

/// A value as gguf-py's reader gives it: its type's name and its contents.
fn view(v: &MetadataValue) -> (String, Value) {
    let scalar = |t: &str, v: Value| (t.to_string(), v);
    match v {
        MetadataValue::U8(x) => scalar("UINT8", json!(x)),
        MetadataValue::I8(x) => scalar("INT8", json!(x)),
        MetadataValue::U16(x) => scalar("UINT16", json!(x)),
        MetadataValue::I16(x) => scalar("INT16", json!(x)),
        MetadataValue::U32(x) => scalar("UINT32", json!(x)),
        MetadataValue::I32(x) => scalar("INT32", json!(x)),
        MetadataValue::U64(x) => scalar("UINT64", json!(x)),
        MetadataValue::I64(x) => scalar("INT64", json!(x)),
        MetadataValue::F32(x) => scalar("FLOAT32", json!(f64::from(*x))),
        MetadataValue::F64(x) => scalar("FLOAT64", json!(x)),
        MetadataValue::Bool(x) => scalar("BOOL", json!(x)),
        MetadataValue::String(x) => scalar("STRING", json!(x)),
        MetadataValue::Array(a) => {
            let (t, items): (&str, Vec<Value>) = match a {
                MetadataArray::I32(v) => ("INT32", v.iter().map(|x| json!(x)).collect()),
                MetadataArray::U32(v) => ("UINT32", v.iter().map(|x| json!(x)).collect()),
                MetadataArray::F32(v) => ("FLOAT32", v.iter().map(|x| json!(f64::from(*x))).collect()),
                MetadataArray::Bool(v) => ("BOOL", v.iter().map(|x| json!(x)).collect()),
                MetadataArray::String(v) => ("STRING", v.iter().map(|x| json!(x)).collect()),
                other => (other_name(other), Vec::new()),
            };
            let value = if items.len() <= 64 { Value::Array(items.clone()) } else { Value::Null };
            (format!("ARRAY[{t}]"), json!({"len": a.len(), "value": value}))
        }
    }
}

fn other_name(a: &MetadataArray) -> &'static str {
    match a {
        MetadataArray::U8(_) => "UINT8",
        MetadataArray::I8(_) => "INT8",
        MetadataArray::U16(_) => "UINT16",
        MetadataArray::I16(_) => "INT16",
        MetadataArray::U64(_) => "UINT64",
        MetadataArray::I64(_) => "INT64",
        MetadataArray::F64(_) => "FLOAT64",
        _ => "OTHER",
    }
}

/// The recorded entry in the same shape as [`view`].
fn recorded(entry: &Value) -> (String, Value) {
    let t = entry["type"].as_str().expect("type").to_string();
    if t.starts_with("ARRAY") {
        return (t, json!({"len": entry["len"], "value": entry["value"]}));
    }
    (t, entry["value"].clone())
}

/// Equal values; float32 ones compared as float32 (the recorded JSON went through a
/// float64 repr of them).
fn same(a: &(String, Value), b: &(String, Value)) -> bool {
    fn as_f32(v: &Value) -> Option<f32> {
        v.as_f64().map(|x| x as f32)
    }
    fn floats(v: &Value) -> Option<Vec<Option<f32>>> {
        v.as_array().map(|items| items.iter().map(as_f32).collect())
    }
    match (a.0.as_str(), b.0.as_str()) {
        ("FLOAT32", "FLOAT32") => as_f32(&a.1).is_some() && as_f32(&a.1) == as_f32(&b.1),
        ("ARRAY[FLOAT32]", "ARRAY[FLOAT32]") => {
            a.1["len"] == b.1["len"] && floats(&a.1["value"]) == floats(&b.1["value"])
        }
        _ => a == b,
    }
}

fn compare(variant: &str, want: &Value, file: &Path) -> Vec<String> {
    let gguf = GgufFile::open(file).expect("open");
    let mut problems = Vec::new();
    let ours: BTreeMap<&str, (String, Value)> = gguf.metadata().iter().map(|(k, v)| (k.as_str(), view(v))).collect();
    let theirs = want["keys"].as_object().expect("keys");
    for (key, entry) in theirs {
        match ours.get(key.as_str()) {
            None => problems.push(format!("missing key {key} = {}", entry["value"])),
            Some(have) if !same(have, &recorded(entry)) => {
                problems.push(format!("key {key}: llama.cpp {:?}, owl {have:?}", recorded(entry)))
            }
            Some(_) => {}
        }
    }
    for key in ours.keys().filter(|k| !theirs.contains_key(**k)) {
        if !owl_only(variant, key) {
            problems.push(format!("extra key {key} = {:?}", ours[key]));
        }
    }
    for (variants, key, _) in OWL_ONLY.iter().filter(|(v, _, _)| v.contains(&variant)) {
        let written = ours.keys().any(|k| k == key || (key.starts_with('.') && k.ends_with(key)));
        if !written || theirs.keys().any(|k| k == key) {
            problems.push(format!("{key} is listed as owl's own for {variants:?} but is not"));
        }
    }
    let tensors: Vec<Value> = gguf
        .tensors()
        .iter()
        .map(|t| {
            let digest = Sha256::digest(gguf.tensor_data(t));
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            json!({"name": t.name, "shape": t.shape, "type": t.ggml_type.name(), "sha256": hex})
        })
        .collect();
    let want_tensors = want["tensors"].as_array().expect("tensors");
    if tensors.len() != want_tensors.len() {
        problems.push(format!("{} tensors, llama.cpp {}", tensors.len(), want_tensors.len()));
    }
    for (have, want) in tensors.iter().zip(want_tensors) {
        if have != want {
            problems.push(format!("tensor: llama.cpp {want}, owl {have}"));
        }
    }
    problems
}

#[test]
fn metadata_and_tensors_equal_convert_hf_to_gguf() {
    let data = owl_test::workspace_root().join("crates/owl-convert/tests/data/convert_hf_to_gguf");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(&data).expect("recorded expectations").flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let variant = path.file_stem().and_then(|s| s.to_str()).expect("name").to_string();
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        let file = converted(&variant, FileType::F32, tmp.path());
        let problems = compare(&variant, &want, &file);
        if !problems.is_empty() {
            failures.push(format!("{variant}:\n    {}", problems.join("\n    ")));
        }
        checked += 1;
    }
    assert_eq!(checked, 19, "one recorded conversion per fixture model");
    assert!(failures.is_empty(), "owl convert differs from convert_hf_to_gguf.py:\n{}", failures.join("\n"));
}
