//! Writer tests: read → write reproduces each demo model byte for byte (compared while
//! streaming, no copy kept), the small file survives a round trip with every value type,
//! and `write_file` is atomic.
#![allow(clippy::unwrap_used)] // unwrap_err() on results a test expects to fail

use std::borrow::Cow;
use std::io::Write;

use owl_formats::gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MetadataArray, MetadataValue, TensorData};

use crate::gguf_support::{small_valid_file, CompareWriter};

fn assert_byte_identical_round_trip(name: &str) {
    let path = owl_test::demo_model(name);
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let writer = GgufWriter::from_file(&file);
    let mut cmp = CompareWriter { expected: file.bytes(), pos: 0 };
    let written = writer.write_to(&mut cmp).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(written, file.file_size(), "{name}: written size");
    assert_eq!(cmp.pos as u64, file.file_size(), "{name}: compared bytes");
}

#[test]
fn smollm2_round_trip_is_byte_identical() {
    assert_byte_identical_round_trip("smollm2");
}

#[test]
fn gemma3_round_trip_is_byte_identical() {
    assert_byte_identical_round_trip("gemma3");
}

#[test]
fn qwen2_5_coder_round_trip_is_byte_identical() {
    assert_byte_identical_round_trip("qwen2.5-coder");
}

#[test]
fn small_file_round_trips_every_value_type() {
    let bytes = small_valid_file();
    let f = GgufFile::from_bytes(bytes.clone()).expect("small file parses");
    assert_eq!(f.version(), 3);
    assert_eq!(f.get("t.u8"), Some(&MetadataValue::U8(200)));
    assert_eq!(f.get("t.i8"), Some(&MetadataValue::I8(-100)));
    assert_eq!(f.get("t.u16"), Some(&MetadataValue::U16(60000)));
    assert_eq!(f.get("t.i16"), Some(&MetadataValue::I16(-30000)));
    assert_eq!(f.get_u64("t.u32"), Some(4_000_000_000));
    assert_eq!(f.get_i64("t.i32"), Some(-2_000_000_000));
    assert_eq!(f.get_f32("t.f32"), Some(0.25));
    assert_eq!(f.get_bool("t.bool"), Some(true));
    assert_eq!(f.get_u64("t.u64"), Some(u64::MAX));
    assert_eq!(f.get_i64("t.u64"), None);
    assert_eq!(f.get_i64("t.i64"), Some(i64::MIN));
    assert_eq!(f.get_u64("t.i64"), None);
    assert_eq!(f.get("t.f64"), Some(&MetadataValue::F64(-1.5e300)));
    assert_eq!(f.get_str("t.utf8"), Some("héllo ▁wörld 🦉"));
    let nested = f.get_array("t.nested").and_then(|a| a.as_arrays()).expect("nested array");
    assert_eq!(nested.len(), 4);
    assert_eq!(nested[0], MetadataArray::I64(vec![1, -2]));
    assert_eq!(nested[2].as_bools(), Some(&[false, true][..]));
    assert_eq!(nested[3], MetadataArray::F64(vec![]));
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys[..3], ["general.architecture", "general.alignment", "t.u8"]);

    let t = f.tensor("blk.0.h").expect("f16 tensor");
    assert_eq!(
        (t.shape.as_slice(), t.ggml_type, t.n_elements, t.n_bytes, t.offset),
        (&[3u64, 2][..], GgmlType::F16, 6, 12, 96)
    );
    assert_eq!(f.tensor_data(t), (0..12).map(|i| (i * 7) as u8).collect::<Vec<_>>());
    assert_eq!(f.tensor("norm").map(|t| t.offset), Some(128));
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.file_size(), f.data_offset() + 128 + 32);

    let mut again = Vec::new();
    GgufWriter::from_file(&f).write_to(&mut again).expect("rewrite");
    assert_eq!(again, bytes);
}

#[test]
fn version_2_and_other_alignments_round_trip() {
    let mut w = GgufWriter::new();
    w.set_version(2).expect("v2");
    w.set_alignment(64).expect("alignment");
    w.set_metadata("general.architecture", MetadataValue::String("x".into()));
    w.add_tensor("a", vec![3], GgmlType::I8, vec![1u8, 2, 3]).expect("a");
    w.add_tensor("b", vec![256, 1], GgmlType::Q4_K, vec![9u8; 144]).expect("b");
    let mut out = Vec::new();
    let n = w.write_to(&mut out).expect("write");
    assert_eq!(n, out.len() as u64);
    let f = GgufFile::from_bytes(out.clone()).expect("read back");
    assert_eq!((f.version(), f.alignment()), (2, 64));
    assert_eq!(f.get("general.alignment"), Some(&MetadataValue::U32(64)));
    assert_eq!(f.tensor("b").map(|t| t.offset), Some(64));
    assert_eq!(f.data_offset() % 64, 0);
    let mut again = Vec::new();
    GgufWriter::from_file(&f).write_to(&mut again).expect("rewrite");
    assert_eq!(again, out);
    assert!(w.set_version(1).is_err());
    assert!(w.set_alignment(48).is_err());
    assert!(w.set_alignment(1 << 21).is_err());
}

#[test]
fn writer_refuses_inconsistent_input() {
    let mut w = GgufWriter::new();
    let err = w.add_tensor("t", vec![31], GgmlType::Q4_0, vec![0u8; 18]).unwrap_err().to_string();
    assert!(err.contains("not a multiple of the Q4_0 block size 32"), "{err}");
    let err = w.add_tensor("t", vec![32], GgmlType::Q4_0, vec![0u8; 17]).unwrap_err().to_string();
    assert!(err.contains("data is 17 bytes, but shape [32] of Q4_0 takes 18"), "{err}");
    w.add_tensor("t", vec![32], GgmlType::Q4_0, vec![0u8; 18]).expect("valid");
    let err = w.add_tensor("t", vec![32], GgmlType::Q4_0, vec![0u8; 18]).unwrap_err().to_string();
    assert!(err.contains("already added"), "{err}");

    w.set_metadata("tokenizer.ggml.tokens", MetadataValue::Array(MetadataArray::String(vec!["a".into()])));
    w.set_metadata("tokenizer.ggml.scores", MetadataValue::Array(MetadataArray::F32(vec![0.0, 1.0])));
    let err = w.write_to(Vec::new()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.scores") && err.contains("has 2 entries"), "{err}");
    w.remove_metadata("tokenizer.ggml.scores");
    w.set_metadata("general.alignment", MetadataValue::F32(32.0));
    let err = w.write_to(Vec::new()).unwrap_err().to_string();
    assert!(err.contains("general.alignment"), "{err}");
    w.set_metadata("general.alignment", MetadataValue::U64(32));
    assert!(w.write_to(Vec::new()).is_ok());
}

#[test]
fn streamed_tensor_data_is_written_and_size_checked() {
    let mut w = GgufWriter::new();
    w.add_tensor(
        "s",
        vec![4],
        GgmlType::F32,
        TensorData::Stream(Box::new(|out: &mut dyn Write| out.write_all(&[1u8; 16]))),
    )
    .expect("streamed tensor");
    w.add_tensor("c", vec![2], GgmlType::F16, TensorData::Bytes(Cow::Owned(vec![5u8; 4]))).expect("owned");
    let mut out = Vec::new();
    w.write_to(&mut out).expect("write");
    let f = GgufFile::from_bytes(out).expect("read back");
    assert_eq!(f.tensor("s").map(|t| f.tensor_data(t)), Some(&[1u8; 16][..]));

    let mut bad = GgufWriter::new();
    bad.add_tensor(
        "s",
        vec![4],
        GgmlType::F32,
        TensorData::Stream(Box::new(|out: &mut dyn Write| out.write_all(&[1u8; 15]))),
    )
    .expect("accepted until written");
    let err = bad.write_to(Vec::new()).unwrap_err().to_string();
    assert!(err.contains("wrote 15 bytes, but the tensor takes 16"), "{err}");
}

#[test]
fn write_file_is_atomic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.gguf");
    let small = small_valid_file();
    let f = GgufFile::from_bytes(small.clone()).expect("parse");
    let n = GgufWriter::from_file(&f).write_file(&path).expect("write_file");
    assert_eq!(n, small.len() as u64);
    assert_eq!(std::fs::read(&path).expect("read"), small);
    assert_eq!(GgufFile::open(&path).expect("open").tensors().len(), 3);

    // A failing write leaves the old file and no temporary behind.
    let mut bad = GgufWriter::new();
    bad.add_tensor("s", vec![4], GgmlType::F32, TensorData::Stream(Box::new(|_: &mut dyn Write| Ok(()))))
        .expect("accepted until written");
    let err = bad.write_file(&path).unwrap_err();
    assert!(matches!(err, GgufError::InvalidInput { .. }), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), small);
    let names: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.gguf")]);

    // A directory that does not exist is an error naming the path.
    let err = GgufWriter::from_file(&f).write_file(dir.path().join("missing/x.gguf")).unwrap_err().to_string();
    assert!(err.contains("missing/x.gguf"), "{err}");
}

/// A string array with elements that are not UTF-8 (real vocabularies hold partial
/// characters) loads with its raw bytes, shows them escaped, and writes back identically.
#[test]
fn string_arrays_keep_non_utf8_bytes() {
    use owl_formats::gguf::{GgufFile, GgufWriter, MetadataArray, MetadataValue};
    let raw: Vec<Vec<u8>> = vec![b"ok".to_vec(), vec![0xe2, 0x82], vec![0xac], vec![0xc0, 0x80]];
    let mut w = GgufWriter::new();
    w.set_metadata("tokenizer.ggml.tokens", MetadataValue::Array(MetadataArray::ByteStrings(raw.clone())));
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).expect("write");
    let file = GgufFile::from_bytes(bytes.clone()).expect("a non-UTF-8 string array loads");
    let array = file.get_array("tokenizer.ggml.tokens").expect("array");
    assert!(array.as_strings().is_none());
    assert_eq!(array.as_byte_strings().expect("strings"), raw.iter().map(Vec::as_slice).collect::<Vec<_>>());
    assert_eq!(array.to_string(), r#"[string; 4] ["ok", "\xe2\x82", "\xac", "\xc0\x80"]"#);
    let mut again = Vec::new();
    GgufWriter::from_file(&file).write_to(&mut again).expect("rewrite");
    assert!(again == bytes, "write -> read -> write is byte-identical");
    // All-UTF-8 arrays stay text.
    let mut w = GgufWriter::new();
    w.set_metadata("x", MetadataValue::Array(MetadataArray::ByteStrings(vec![b"a".to_vec()])));
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).expect("write");
    let file = GgufFile::from_bytes(bytes).expect("load");
    assert_eq!(file.get_array("x").and_then(|a| a.as_strings()).map(|s| s.to_vec()), Some(vec!["a".to_string()]));
}
