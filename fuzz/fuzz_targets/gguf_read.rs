//! GGUF reader on arbitrary bytes: must return Ok or Err, never panic, never allocate
//! from an unchecked count; on Ok every tensor's data view must be in bounds and exactly
//! `n_bytes` long, and writing the file back must parse to the same metadata and tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use owl_formats::gguf::{GgufFile, GgufWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for t in file.tensors() {
        assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(file.tensor(&t.name), Some(t));
    }
    for (key, value) in file.metadata() {
        // Same entry (identity, not PartialEq, which is false for NaN values).
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)), "{key}");
        let _ = value.to_string();
    }
    let mut out = Vec::new();
    GgufWriter::from_file(&file).write_to(&mut out).expect("a file that parsed must be writable");
    let again = GgufFile::from_bytes(out.clone()).expect("a written file must parse");
    assert_eq!(again.tensors().len(), file.tensors().len());
    for (a, b) in again.tensors().iter().zip(file.tensors()) {
        assert_eq!((&a.name, &a.shape, a.ggml_type), (&b.name, &b.shape, b.ggml_type));
        assert_eq!(again.tensor_data(a), file.tensor_data(b));
    }
    // Debug text, not PartialEq, so that NaN values compare equal.
    assert_eq!(format!("{:?}", again.metadata()), format!("{:?}", file.metadata()));
    // What owl writes, owl writes back byte for byte (NaN payloads included).
    let mut out2 = Vec::new();
    GgufWriter::from_file(&again).write_to(&mut out2).expect("rewrite");
    assert!(out2 == out, "write -> read -> write is not byte-identical");
});
