//! The malformed-GGUF corpus in `tests/corpus/gguf/`: each file is built here by
//! [`malformed_cases`] (so the corpus is deterministic and reviewable), committed, and
//! replayed: every file must be refused with an error that names the problem and a byte
//! offset, never a panic. `OWL_UPDATE_CORPUS=1 cargo test -p owl-formats corpus` rewrites
//! the files after a change here. `tests/corpus/gguf_valid/` holds valid seeds (for the
//! fuzzer) that must parse.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use owl_formats::gguf::{type_id as t, GgmlType, GgufFile};

use crate::gguf_support::small_valid_file;

/// A GGUF byte builder that writes whatever it is told, valid or not.
#[derive(Clone)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn u8(&mut self, v: u8) -> &mut Raw {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Raw {
        self.0.extend_from_slice(b);
        self
    }
    pub fn str(&mut self, s: &[u8]) -> &mut Raw {
        self.u64(s.len() as u64).bytes(s)
    }
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.str(key.as_bytes()).u32(t::U32).u32(v)
    }
    pub fn kv_str(&mut self, key: &str, v: &[u8]) -> &mut Raw {
        self.str(key.as_bytes()).u32(t::STRING).str(v)
    }
    /// Key, ARRAY type, element type and count; the caller writes the elements.
    pub fn kv_array(&mut self, key: &str, elem: u32, n: u64) -> &mut Raw {
        self.str(key.as_bytes()).u32(t::ARRAY).u32(elem).u64(n)
    }
    pub fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> &mut Raw {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ggml_type).u64(offset)
    }
    pub fn pad(&mut self, alignment: usize) -> &mut Raw {
        while !self.0.len().is_multiple_of(alignment) {
            self.0.push(0);
        }
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Raw {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn done(&self) -> Vec<u8> {
        self.0.clone()
    }
}

const F32: u32 = 0;

/// One valid F32 tensor of 8 elements after `raw`'s metadata (1 tensor declared).
fn with_one_tensor(mut raw: Raw) -> Vec<u8> {
    raw.tensor("w", &[8], F32, 0).pad(32).zeros(32);
    raw.done()
}

/// (file name, bytes, substring the error message must contain)
pub fn malformed_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut cases: Vec<(&'static str, Vec<u8>, &'static str)> = Vec::new();
    let mut add = |name, bytes, expect| cases.push((name, bytes, expect));
    let small = small_valid_file();

    // Header.
    add("empty", vec![], "field `magic` at byte 0 needs 4 bytes");
    add("bad_magic", b"GGML\x03\0\0\0".to_vec(), "not a GGUF file: magic at byte 0");
    let mut lower = small.clone();
    lower[..4].copy_from_slice(b"gguf");
    add("bad_magic_lowercase", lower, "expected \"GGUF\"");
    add("only_magic", b"GGUF".to_vec(), "field `version` at byte 4 needs 4 bytes");
    add("version_1", Raw::header(1, 0, 0).done(), "GGUF version 1 (field `version` at byte 4) is not supported");
    add("version_4", Raw::header(4, 0, 0).done(), "GGUF version 4");
    add("version_0", Raw::header(0, 0, 0).done(), "GGUF version 0");
    let mut be = small.clone();
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    add("big_endian_v3", be, "big-endian GGUF");
    add("truncated_tensor_count", b"GGUF\x03\0\0\0\x01\0\0".to_vec(), "field `tensor_count` at byte 8 needs 8 bytes");
    add(
        "tensor_count_huge",
        Raw::header(3, u64::MAX, 0).done(),
        "field `tensor_count` at byte 8 is 18446744073709551615",
    );
    add("kv_count_huge", Raw::header(3, 0, 1 << 40).done(), "field `metadata_kv_count` at byte 16 is 1099511627776");

    // Metadata keys and values.
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 40).bytes(b"general");
    add("key_length_past_eof", r.done(), "metadata entry 0 key (text) at byte 32 needs 1099511627776 bytes");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"gen\xffral").u32(t::U32).u32(1);
    add("key_invalid_utf8", r.done(), "metadata entry 0 key at byte 24 is not valid UTF-8");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.name").u32(t::STRING).u64(u64::MAX).bytes(b"x");
    add(
        "string_length_past_eof",
        r.done(),
        "metadata \"general.name\" (text) at byte 56 needs 18446744073709551615 bytes",
    );
    let mut r = Raw::header(3, 0, 1);
    r.kv_str("general.name", b"caf\xc3");
    add("string_invalid_utf8", r.done(), "metadata \"general.name\" at byte 48 is not valid UTF-8");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"x").u32(13).u32(0);
    add("unknown_value_type", r.done(), "metadata \"x\" (value type) at byte 33 has unknown GGUF value type 13");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"x").u32(u32::MAX).u32(0);
    add("unknown_value_type_max", r.done(), "unknown GGUF value type 4294967295");
    let mut r = Raw::header(3, 0, 1);
    r.kv_array("x", 13, 1).u32(0);
    add(
        "unknown_array_element_type",
        r.done(),
        "metadata \"x\" (array element type) at byte 37 has unknown GGUF value type 13",
    );
    let mut r = Raw::header(3, 0, 1);
    r.str(b"x").u32(t::BOOL).u8(7);
    add("bool_not_0_or_1", r.done(), "metadata \"x\" at byte 37 is a bool with byte value 7");
    let mut r = Raw::header(3, 0, 1);
    r.kv_array("tokenizer.ggml.tokens", t::STRING, 1 << 60).str(b"a");
    add(
        "string_array_count_past_eof",
        r.done(),
        "metadata \"tokenizer.ggml.tokens\" (array length) at byte 61 is 1152921504606846976",
    );
    let mut r = Raw::header(3, 0, 1);
    r.kv_array("x", t::U64, u64::MAX / 4).u64(1);
    add(
        "u64_array_count_past_eof",
        r.done(),
        "(array length) at byte 41 is 4611686018427387903, but each entry needs at least 8 bytes",
    );
    let mut r = Raw::header(3, 0, 1);
    r.kv_array("x", t::ARRAY, 1 << 50).zeros(24);
    add("nested_array_count_past_eof", r.done(), "each entry needs at least 12 bytes");
    let mut r = Raw::header(3, 0, 1);
    r.kv_array("x", t::STRING, 2).str(b"ok").u64(100).bytes(b"short");
    add("string_array_element_truncated", r.done(), "metadata \"x\" element 1 (text) at byte 67 needs 100 bytes");
    let mut r = Raw::header(3, 0, 1);
    r.kv_array("x", t::ARRAY, 1);
    for _ in 0..12 {
        r.u32(t::ARRAY).u64(1);
    }
    r.u32(t::U8).u64(0);
    add("arrays_nested_too_deep", r.done(), "arrays nested deeper than 8 levels");
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("general.alignment", 32).kv_u32("general.alignment", 64);
    add("duplicate_key", r.done(), "metadata key \"general.alignment\" at byte 57 appears twice (first at byte 24)");

    // Alignment.
    for (name, value, expect) in [
        ("alignment_not_power_of_two", 48u32, "is 48: it must be a power of two"),
        ("alignment_zero", 0, "is 0: it must be a power of two"),
        ("alignment_absurd", 1 << 30, "it must be at most 1 MiB"),
    ] {
        let mut r = Raw::header(3, 1, 1);
        r.kv_u32("general.alignment", value);
        add(name, with_one_tensor(r), expect);
    }
    let mut r = Raw::header(3, 1, 1);
    r.kv_str("general.alignment", b"32");
    add(
        "alignment_is_string",
        with_one_tensor(r),
        "`general.alignment` at byte 24 is \"32\": it must be an unsigned integer",
    );

    // Tokenizer arrays that disagree.
    let tokens = |r: &mut Raw| {
        r.kv_array("tokenizer.ggml.tokens", t::STRING, 3).str(b"a").str(b"b").str(b"c");
    };
    let mut r = Raw::header(3, 1, 2);
    tokens(&mut r);
    r.kv_array("tokenizer.ggml.scores", t::F32, 2).zeros(8);
    add(
        "tokenizer_scores_length",
        with_one_tensor(r),
        "metadata \"tokenizer.ggml.scores\" at byte 96 has 2 entries but `tokenizer.ggml.tokens` has 3",
    );
    let mut r = Raw::header(3, 1, 2);
    tokens(&mut r);
    r.kv_array("tokenizer.ggml.token_type", t::I32, 4).zeros(16);
    add(
        "tokenizer_token_type_length",
        with_one_tensor(r),
        "\"tokenizer.ggml.token_type\" at byte 96 has 4 entries but `tokenizer.ggml.tokens` has 3",
    );
    let mut r = Raw::header(3, 1, 1);
    r.kv_array("tokenizer.ggml.tokens", t::U32, 1).u32(5);
    add(
        "tokenizer_tokens_not_strings",
        with_one_tensor(r),
        "\"tokenizer.ggml.tokens\" at byte 24 is an array of u32, expected an array of strings",
    );
    let mut r = Raw::header(3, 1, 2);
    tokens(&mut r);
    r.kv_array("tokenizer.ggml.scores", t::STRING, 3).str(b"").str(b"").str(b"");
    add(
        "tokenizer_scores_are_strings",
        with_one_tensor(r),
        "\"tokenizer.ggml.scores\" at byte 96 is an array of string, expected an array of numbers",
    );

    // Tensor infos.
    let one = |dims: &[u64], ty: u32, offset: u64| {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("w", dims, ty, offset).pad(32).zeros(64);
        r.done()
    };
    let mut r = Raw::header(3, 1, 0);
    r.u64(1 << 33).bytes(b"w").zeros(40);
    add("tensor_name_length_past_eof", r.done(), "tensor info 0 name (text) at byte 32 needs 8589934592 bytes");
    let mut r = Raw::header(3, 1, 0);
    r.str(b"\xff").u32(1).u64(8).u32(F32).u64(0).pad(32).zeros(32);
    add("tensor_name_invalid_utf8", r.done(), "tensor info 0 name at byte 24 is not valid UTF-8");
    add(
        "tensor_unknown_ggml_type",
        one(&[8], 99, 0),
        "tensor \"w\": field `type` at byte 45 is 99, not a known ggml type",
    );
    add("tensor_retired_ggml_type", one(&[8], 4, 0), "is 4, not a known ggml type");
    // An i32 -1 as llama.cpp's enum reads it.
    add("tensor_negative_ggml_type", one(&[8], u32::MAX, 0), "is 4294967295, not a known ggml type");
    add("tensor_zero_dims", one(&[], F32, 0), "field `n_dims` is 0");
    add(
        "tensor_five_dims",
        one(&[1, 1, 1, 1, 8], F32, 0),
        "field `n_dims` is 5; ggml tensors have at most 4 dimensions",
    );
    let mut r = Raw::header(3, 1, 0);
    r.str(b"w").u32(u32::MAX).zeros(64);
    add("tensor_n_dims_huge", r.done(), "field `n_dims` is 4294967295");
    let mut r = Raw::header(3, 1, 0);
    r.str(b"w").u32(4).u64(8).u64(1).u64(1);
    add("tensor_truncated_in_dims", r.done(), "tensor \"w\" field `ne[3]` at byte 61 needs 8 bytes");
    add(
        "tensor_shape_overflow",
        one(&[1 << 32, 1 << 32], F32, 0),
        "has more elements than fit in a signed 64-bit count",
    );
    add(
        "tensor_shape_overflow_i64",
        one(&[1 << 62, 2], GgmlType::I8.id(), 0),
        "[4611686018427387904, 2] has more elements",
    );
    add(
        "tensor_bytes_overflow",
        one(&[1 << 62], F32, 0),
        "4611686018427387904 elements of F32 need more than 2^64 bytes",
    );
    add(
        "tensor_row_not_whole_blocks",
        one(&[33, 2], GgmlType::Q4_0.id(), 0),
        "row length shape[0] = 33 is not a multiple of the Q4_0 block size 32",
    );
    add(
        "tensor_row_not_whole_k_blocks",
        one(&[640, 2], GgmlType::Q4_K.id(), 0),
        "not a multiple of the Q4_K block size 256",
    );
    add(
        "tensor_misaligned_offset",
        one(&[8], F32, 8),
        "tensor \"w\": field `offset` at byte 49 is 8, not a multiple of the alignment 32",
    );
    add("tensor_offset_past_eof", one(&[8], F32, 1 << 20), "lies past the end of the file");
    add("tensor_offset_overflows_u64", one(&[8], F32, u64::MAX - 31), "data at file bytes 18446744073709551648..18446744073709551680 (32 bytes; field `offset` at byte 49) lies past the end of the file (128 bytes)");
    add(
        "tensor_data_truncated",
        one(&[32], F32, 0),
        "(128 bytes; field `offset` at byte 49) lies past the end of the file (128 bytes)",
    );
    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[8], F32, 0).tensor("w", &[8], F32, 32).pad(32).zeros(64);
    add("tensor_duplicate_name", r.done(), "tensor name \"w\" at byte 57 appears twice (first at byte 24)");
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], F32, 0).tensor("b", &[8], F32, 32).pad(32).zeros(64);
    add("tensor_overlap", r.done(), "tensor \"b\" (data at file bytes 128..160; field `offset` at byte 82) overlaps tensor \"a\" (data at file bytes 96..160)");
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64).tensor("w", &[8], F32, 32).pad(64).zeros(128);
    add("tensor_misaligned_custom_alignment", r.done(), "is 32, not a multiple of the alignment 64");
    let mut cut = small.clone();
    cut.truncate(small.len() - 1);
    add("small_file_missing_last_byte", cut, "tensor \"norm\"");
    cases
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/gguf")
}

fn valid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/gguf_valid")
}

/// With `OWL_UPDATE_CORPUS=1`, rewrites the corpus from the generator, once per test run,
/// before any corpus test reads it.
fn update_corpus_if_requested() {
    static ONCE: Once = Once::new();
    if std::env::var_os("OWL_UPDATE_CORPUS").is_none_or(|v| v != "1") {
        return;
    }
    ONCE.call_once(|| {
        let (dir, valid) = (corpus_dir(), valid_dir());
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::create_dir_all(&valid).expect("create valid dir");
        for (name, bytes, _) in malformed_cases() {
            std::fs::write(dir.join(format!("{name}.gguf")), bytes).expect("write corpus file");
        }
        std::fs::write(valid.join("small.gguf"), small_valid_file()).expect("write valid seed");
    });
}

#[test]
fn corpus_files_match_their_generator() {
    update_corpus_if_requested();
    let dir = corpus_dir();
    let valid = valid_dir();
    let small = small_valid_file();
    for (name, bytes, _) in malformed_cases() {
        let path = dir.join(format!("{name}.gguf"));
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate with OWL_UPDATE_CORPUS=1)", path.display()));
        assert!(
            on_disk == bytes,
            "{} differs from its generator (regenerate with OWL_UPDATE_CORPUS=1)",
            path.display()
        );
    }
    assert_eq!(std::fs::read(valid.join("small.gguf")).expect("valid seed"), small);
}

#[test]
fn every_corpus_file_is_refused_with_a_meaningful_error() {
    update_corpus_if_requested();
    let expectations = malformed_cases();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(corpus_dir()).expect("corpus dir").map(|e| e.expect("corpus entry").path()).collect();
    entries.sort();
    assert!(
        entries.len() >= expectations.len(),
        "corpus has {} files, generator {}",
        entries.len(),
        expectations.len()
    );
    let mut failures = Vec::new();
    for path in &entries {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        let outcome = catch_unwind(AssertUnwindSafe(|| GgufFile::open(path)));
        let message = match outcome {
            Err(_) => {
                failures.push(format!("{name}: PANICKED"));
                continue;
            }
            Ok(Ok(_)) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Ok(Err(e)) => e.to_string(),
        };
        eprintln!("{name}: {message}");
        // Every reader error names a byte offset.
        if !message.contains("byte") {
            failures.push(format!("{name}: no byte offset in {message:?}"));
        }
        // Files that came from the generator must fail for the reason they were built for;
        // others (e.g. fuzzer finds) only need to be refused.
        if let Some((_, _, expect)) = expectations.iter().find(|(n, _, _)| *n == name) {
            if !message.contains(expect) {
                failures.push(format!("{name}: expected {expect:?} in {message:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_seeds_parse() {
    update_corpus_if_requested();
    for entry in std::fs::read_dir(valid_dir()).expect("valid dir") {
        let path = entry.expect("entry").path();
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for t in f.tensors() {
            assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        }
    }
}
