//! Crafted vocabularies (tests/corpus/vocab/*.gguf): GGUF files that parse, whose tokenizer
//! metadata must be refused with an error naming the problem — never a panic, never a
//! table indexed by a number the file chose. Each file is built here (deterministic,
//! reviewable) and committed; `OWL_UPDATE_CORPUS=1 cargo test -p owl-tokenizer vocab_corpus`
//! rewrites them. The owl-cli corpus test replays them through `owl tokenize` under a 2 GiB
//! address-space limit.

use std::path::{Path, PathBuf};

use owl_formats::gguf::{GgufFile, GgufWriter, MetadataArray, MetadataValue};
use owl_tokenizer::Tokenizer;

/// A small SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens, a few pieces.
fn base() -> (Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for p in ["▁", "a", "b", "▁a", "ab", "▁ab"] {
        tokens.push(p.into());
        types.push(1);
    }
    (tokens, types)
}

fn gguf(tokens: Vec<String>, types: Vec<i32>, extra: &[(&str, MetadataValue)]) -> Vec<u8> {
    gguf_of(MetadataArray::String(tokens), types, extra)
}

/// A SentencePiece GGUF vocabulary from a token array (text or raw bytes), with descending
/// scores, the given types, BOS 1 and EOS 2, then `extra` keys.
fn gguf_of(tokens: MetadataArray, types: Vec<i32>, extra: &[(&str, MetadataValue)]) -> Vec<u8> {
    let n = tokens.len();
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", MetadataValue::String("llama".into()));
    w.set_metadata("tokenizer.ggml.model", MetadataValue::String("llama".into()));
    w.set_metadata("tokenizer.ggml.tokens", MetadataValue::Array(tokens));
    w.set_metadata(
        "tokenizer.ggml.scores",
        MetadataValue::Array(MetadataArray::F32((0..n).map(|i| -(i as f32)).collect())),
    );
    w.set_metadata("tokenizer.ggml.token_type", MetadataValue::Array(MetadataArray::I32(types)));
    w.set_metadata("tokenizer.ggml.bos_token_id", MetadataValue::U32(1));
    w.set_metadata("tokenizer.ggml.eos_token_id", MetadataValue::U32(2));
    for (k, v) in extra {
        w.set_metadata(*k, v.clone());
    }
    let mut out = Vec::new();
    w.write_to(&mut out).expect("write GGUF");
    out
}

/// (name, file bytes, what it stands for, expected error fragment).
pub fn vocab_cases() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
    let mut cases = Vec::new();
    let with_byte_token = |text: &str| {
        let (mut tokens, types) = base();
        tokens[3 + 0x41] = text.to_string();
        gguf(tokens, types, &[])
    };
    cases.push((
        "cve-2025-49847_byte_token_negative_hex",
        with_byte_token("<0x-1>"),
        "CVE-2025-49847 class: a byte-typed token whose hex parses negative, an index before the byte table",
        "is typed as a byte token, but its text \"<0x-1>\" is not <0xHH>",
    ));
    cases.push((
        "byte_token_not_hex",
        with_byte_token("<0xZZ>"),
        "a byte-typed token that is no hex at all (llama.cpp's stoi threw)",
        "its text \"<0xZZ>\" is not <0xHH>",
    ));
    cases.push((
        "byte_token_past_255",
        with_byte_token("<0x100>"),
        "a byte-typed token past 0xFF, an index after the byte table",
        "its text \"<0x100>\" is not <0xHH>",
    ));
    let (tokens, types) = base();
    cases.push((
        "bos_id_out_of_range",
        gguf(tokens.clone(), types.clone(), &[("tokenizer.ggml.bos_token_id", MetadataValue::U32(4_000_000_000))]),
        "a special token id far outside the vocabulary (ids index the token table)",
        "token id 4000000000 is outside the vocabulary of 265 tokens",
    ));
    cases.push((
        "eos_id_negative",
        gguf(tokens.clone(), types.clone(), &[("tokenizer.ggml.eos_token_id", MetadataValue::I32(-1))]),
        "a negative special token id",
        "tokenizer.ggml.eos_token_id",
    ));
    cases.push((
        "vocabulary_empty",
        gguf(Vec::new(), Vec::new(), &[("tokenizer.ggml.bos_token_id", MetadataValue::U32(0))]),
        "an empty vocabulary with special ids into it",
        "tokenizer.ggml.tokens",
    ));
    let nan_scores = {
        let (tokens, types) = base();
        let n = tokens.len();
        let scores: Vec<f32> = (0..n).map(|i| if i == 7 { f32::NAN } else { -(i as f32) }).collect();
        gguf(tokens, types, &[("tokenizer.ggml.scores", MetadataValue::Array(MetadataArray::F32(scores)))])
    };
    cases.push((
        "scores_nan",
        nan_scores,
        "a NaN score: sorting by it panicked in owl's SentencePiece ranks (found by fuzzing)",
        "token 7 has score NaN; scores must be finite numbers",
    ));
    cases.push((
        "tokenizer_model_unknown",
        gguf(tokens.clone(), types.clone(), &[("tokenizer.ggml.model", MetadataValue::String("plamo2".into()))]),
        "a tokenizer family owl does not build (PLaMo-2's byte table was CVE material in llama.cpp)",
        "tokenizer model `plamo2` is not supported",
    ));
    cases.push((
        "merges_name_unknown_tokens",
        gguf(
            tokens.clone(),
            types.clone(),
            &[
                ("tokenizer.ggml.model", MetadataValue::String("gpt2".into())),
                ("tokenizer.ggml.pre", MetadataValue::String("qwen2".into())),
                ("tokenizer.ggml.merges", MetadataValue::Array(MetadataArray::String(vec!["a zz".into()]))),
            ],
        ),
        "BPE merges that name tokens the vocabulary does not have",
        "merge #0 `a zz`: \"zz\" is not in the vocabulary",
    ));
    cases
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/vocab")
}

#[test]
fn vocab_corpus_is_refused_with_named_problems() {
    let dir = corpus_dir();
    if std::env::var_os("OWL_UPDATE_CORPUS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (name, bytes, _, _) in vocab_cases() {
            std::fs::write(dir.join(format!("{name}.gguf")), bytes).expect("write corpus file");
        }
        // The valid base is the fuzzer's seed for the tokenizer target.
        let (tokens, types) = base();
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/gguf_tokenizer");
        std::fs::create_dir_all(&seeds).expect("create seed dir");
        std::fs::write(seeds.join("spm_base.gguf"), gguf(tokens, types, &[])).expect("write seed");
    }
    let cases = vocab_cases();
    let on_disk = std::fs::read_dir(&dir).expect("corpus dir").count();
    assert_eq!(on_disk, cases.len(), "one file per case (regenerate with OWL_UPDATE_CORPUS=1)");
    for (name, bytes, stands_for, expect) in cases {
        let path = dir.join(format!("{name}.gguf"));
        let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(file == bytes, "{name} differs from its generator (regenerate with OWL_UPDATE_CORPUS=1)");
        let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{name}: the GGUF itself must parse: {e}"));
        let err = match Tokenizer::from_gguf(&gguf) {
            Ok(_) => panic!("{name} ({stands_for}) was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expect), "{name} ({stands_for}): {err}");
    }
}

#[test]
fn the_base_vocabulary_is_fine() {
    let (tokens, types) = base();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ok.gguf");
    std::fs::write(&path, gguf(tokens, types, &[])).expect("write");
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).expect("parse")).expect("a valid vocabulary");
    let ids = tok.encode("ab é", false, true).expect("encode");
    assert_eq!(tok.decode(&ids, false).expect("decode"), "ab é");
}

/// A vocabulary whose token texts are not all UTF-8 (partial characters, as some real
/// vocabularies have): it loads as llama.cpp loads it, the raw tokens decode to their bytes,
/// show escaped, and text still round-trips through the byte tokens.
pub fn non_utf8_vocabulary() -> Vec<u8> {
    let (tokens, mut types) = base();
    let mut raw: Vec<Vec<u8>> = tokens.into_iter().map(String::into_bytes).collect();
    raw.push(vec![0xe2, 0x82]); // the first two bytes of "€"
    raw.push(vec![0xac]); // its last byte
    raw.push("▁".bytes().chain([0xe2]).collect()); // a space, then a partial character
    types.extend([1, 1, 1]);
    gguf_of(MetadataArray::ByteStrings(raw), types, &[])
}

/// Where the valid non-UTF-8 vocabulary is kept (the CLI's tests load it too).
fn non_utf8_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/vocab_valid/non_utf8_tokens.gguf")
}

#[test]
fn non_utf8_token_strings_load_and_byte_tokens_round_trip() {
    let path = non_utf8_path();
    if std::env::var_os("OWL_UPDATE_CORPUS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("create dir");
        std::fs::write(&path, non_utf8_vocabulary()).expect("write");
    }
    let on_disk = std::fs::read(&path).expect("the non-UTF-8 vocabulary (regenerate with OWL_UPDATE_CORPUS=1)");
    assert!(on_disk == non_utf8_vocabulary(), "{} differs from its generator", path.display());
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).expect("parse")).expect("loads");
    let (e2_82, ac, space_e2) = (265, 266, 267);
    assert_eq!(tok.decode(&[e2_82, ac], false).expect("decode"), "€");
    assert_eq!(tok.piece(e2_82), Some("\u{FFFF}\\xe2\\x82"));
    assert_eq!(tok.token_bytes(space_e2), Some(vec![b' ', 0xe2]));
    // Streaming keeps the partial character until it is whole.
    let mut stream = tok.stream_decoder(false);
    assert_eq!(stream.push(e2_82).expect("push"), "");
    assert_eq!(stream.push(ac).expect("push"), "€");
    // Text never maps onto the raw tokens; it goes through the byte tokens and back.
    for text in ["€ x", "a € b", "ab\u{FFFF}\\xe2\\x82"] {
        let ids = tok.encode(text, false, true).expect("encode");
        assert!(!ids.contains(&e2_82) && !ids.contains(&ac), "{text:?}: {ids:?}");
        let back = tok.decode(&ids, false).expect("decode");
        assert_eq!(back, text);
        assert_eq!(tok.encode(&back, false, true).expect("encode"), ids, "{text:?}");
    }
}
