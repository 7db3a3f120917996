//! Truncation everywhere: every strict prefix of the small valid file, and many prefixes of
//! a demo model, must be refused with an error (never a panic, never accepted).
#![allow(clippy::unwrap_used)] // unwrap_err() on results a test expects to fail

use owl_formats::gguf::{GgufError, GgufFile};

use crate::gguf_support::small_valid_file;

fn assert_refused(prefix: &[u8], what: &str) -> String {
    match GgufFile::from_bytes(prefix.to_vec()) {
        Ok(_) => panic!("{what}: a {}-byte prefix was accepted", prefix.len()),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("byte"), "{what}: prefix {}: no byte offset in {msg:?}", prefix.len());
            msg
        }
    }
}

#[test]
fn every_prefix_of_the_small_file_is_refused() {
    let bytes = small_valid_file();
    assert!(GgufFile::from_bytes(bytes.clone()).is_ok());
    let mut kinds = std::collections::BTreeSet::new();
    for n in 0..bytes.len() {
        let msg = assert_refused(&bytes[..n], "small file");
        kinds.insert(msg.split(':').next().unwrap_or("").to_string());
    }
    // Prefixes end inside every part of the file, so several distinct errors must appear.
    assert!(kinds.iter().any(|k| k.starts_with("truncated GGUF")), "{kinds:?}");
    assert!(kinds.iter().any(|k| k.starts_with("tensor \"norm\"")), "{kinds:?}");
}

#[test]
fn prefixes_of_a_demo_model_are_refused() {
    let path = owl_test::demo_model("smollm2");
    let file = GgufFile::open(&path).expect("smollm2 opens");
    let bytes = file.bytes();
    let data_offset = file.data_offset() as usize;
    let infos_start = {
        // The first tensor info starts right after the last metadata value; find it by name.
        let name = file.tensors()[0].name.as_bytes();
        let mut pattern = (name.len() as u64).to_le_bytes().to_vec();
        pattern.extend_from_slice(name);
        bytes[..data_offset].windows(pattern.len()).rposition(|w| w == pattern).expect("first tensor info")
    };
    let mut cuts: Vec<usize> = (0..2048).collect();
    cuts.extend((2048..data_offset).step_by(4999));
    // Every byte through the first tensor infos, then a stride over the rest (each of these
    // prefixes parses the whole 49k-token vocabulary first, ~10 ms).
    cuts.extend(infos_start.saturating_sub(16)..infos_start + 160);
    cuts.extend((infos_start + 160..data_offset).step_by(97));
    cuts.extend(data_offset.saturating_sub(32)..data_offset + 32);
    cuts.push(bytes.len() - 1);
    cuts.push(bytes.len() - file.tensors().last().map_or(1, |t| t.n_bytes as usize));
    let mut tested = 0;
    for &n in &cuts {
        let msg = assert_refused(&bytes[..n], "smollm2");
        if n >= data_offset {
            assert!(msg.contains("lies past the end of the file"), "prefix {n}: {msg}");
        }
        tested += 1;
    }
    assert!(tested > 2500, "{tested}");
}

#[test]
fn open_names_the_path_of_a_missing_file() {
    let err = GgufFile::open("/nonexistent/owl/model.gguf").unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/owl/model.gguf"), "{err}");
}
