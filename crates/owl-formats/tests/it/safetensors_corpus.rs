//! Crafted safetensors files (tests/corpus/safetensors): each is built here (deterministic,
//! reviewable), committed, and must be refused by `SafetensorsModel::open` with an error
//! naming the problem. `OWL_UPDATE_CORPUS=1 cargo test -p owl-formats safetensors_corpus`
//! rewrites them; the owl-cli corpus test replays them through the binary under a 2 GiB
//! address-space limit.

use std::path::{Path, PathBuf};

use owl_formats::safetensors::SafetensorsModel;

/// A file from a header JSON string and a data section of `data` zero bytes.
fn file(header: &str, data: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

/// (name, bytes, what it stands for, expected error fragment).
pub fn safetensors_cases() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
    let t = |entry: &str| format!("{{\"t\":{entry}}}");
    vec![
        (
            "header_length_huge",
            u64::MAX.to_le_bytes().to_vec(),
            "an 8-byte header length of 2^64-1: an allocation sized from the file",
            "exceeds the 100000000-byte limit",
        ),
        (
            "header_length_past_eof",
            {
                let mut f = 1000u64.to_le_bytes().to_vec();
                f.extend_from_slice(b"{}");
                f
            },
            "a header length past the end of the file",
            "runs past the end of the 10-byte file",
        ),
        ("header_not_json", file("{\"t\": ", 0), "a header that is not JSON", "header is not valid JSON"),
        (
            "header_json_nested_deep",
            file(&format!("{}1{}", "[".repeat(200), "]".repeat(200)), 0),
            "a header nested deep enough to exhaust a recursive parser's stack",
            "header is not valid JSON",
        ),
        (
            "offsets_overlap",
            file(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
            ),
            "two tensors over the same bytes (a write through one corrupts the other)",
            "overlap",
        ),
        (
            "offsets_reversed",
            file(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[8,4]}"#), 8),
            "data offsets whose begin is after their end (a negative length)",
            "begin is after end",
        ),
        (
            "offsets_past_eof",
            file(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}"#), 6),
            "data offsets past the end of the file",
            "runs past the end of the 6-byte data section",
        ),
        (
            "dtype_shape_mismatch",
            file(&t(r#"{"dtype":"F32","shape":[3],"data_offsets":[0,8]}"#), 8),
            "a shape and dtype that need more bytes than the offsets give (reads past the tensor)",
            "data_offsets cover 8 bytes but F32 [3] needs 12",
        ),
        (
            "dtype_unknown",
            file(&t(r#"{"dtype":"F128","shape":[1],"data_offsets":[0,4]}"#), 4),
            "an unknown dtype",
            "unknown dtype \"F128\"",
        ),
        (
            "shape_overflow",
            file(&t(r#"{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}"#), 8),
            "a shape whose element count overflows 64 bits",
            "too large (size overflows)",
        ),
        (
            "shape_negative",
            file(&t(r#"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#), 4),
            "a negative dimension",
            "is not a non-negative integer",
        ),
        (
            "tensor_name_duplicate",
            file(
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                2,
            ),
            "one name twice: which tensor a reader binds depends on the parser",
            "appears twice",
        ),
    ]
}

/// The error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/safetensors")
}

#[test]
fn safetensors_corpus_is_refused_with_named_problems() {
    let dir = corpus_dir();
    if std::env::var_os("OWL_UPDATE_CORPUS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (name, bytes, _, _) in safetensors_cases() {
            std::fs::write(dir.join(format!("{name}.safetensors")), bytes).expect("write corpus file");
        }
    }
    let cases = safetensors_cases();
    assert_eq!(std::fs::read_dir(&dir).expect("corpus dir").count(), cases.len(), "one file per case");
    for (name, bytes, stands_for, expect) in cases {
        let path = dir.join(format!("{name}.safetensors"));
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(on_disk == bytes, "{name} differs from its generator (regenerate with OWL_UPDATE_CORPUS=1)");
        let err = match SafetensorsModel::open(&path) {
            Ok(_) => panic!("{name} ({stands_for}) was accepted"),
            Err(e) => chain(&e),
        };
        assert!(err.contains(expect), "{name} ({stands_for}): {err}");
    }
}
