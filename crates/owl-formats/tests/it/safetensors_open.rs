//! `SafetensorsModel::open` on single files, model directories and sharded directories, with
//! files written by the `safetensors` crate (an independent writer) and the shared fixtures.

use std::collections::HashMap;
use std::path::Path;

use owl_formats::safetensors::{Dtype, SafetensorsError, SafetensorsModel};
use safetensors::tensor::TensorView as StView;

/// Writes `tensors` (name, dtype, shape, bytes) as a safetensors file with the reference writer.
fn write(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, StView<'_>)> =
        tensors.iter().map(|(n, d, s, b)| (n.to_string(), StView::new(*d, s.clone(), b).expect("view"))).collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path).expect("serialize");
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn open_err(path: &Path) -> String {
    match SafetensorsModel::open(path) {
        Ok(_) => panic!("expected an error opening {}", path.display()),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
    }
}

#[test]
fn fixture_llama_weights_match_reference_reader() {
    let dir = owl_test::fixture("models/llama");
    let model = SafetensorsModel::open(&dir).expect("open llama dir");
    // Parameter count from the fixtures README.
    assert_eq!(model.n_elements(), 139_584);
    let reference = owl_test::load_safetensors_f32(&dir.join("model.safetensors"));
    assert_eq!(model.len(), reference.len());
    let mut last_offset = 0;
    for t in model.tensors() {
        assert_eq!(t.dtype, Dtype::F32);
        let want = &reference[t.name];
        assert_eq!(t.shape, want.shape.as_slice(), "{}", t.name);
        assert_eq!(t.to_f32_vec().expect("f32"), want.data, "{}", t.name);
        // Data order: views come out in ascending file position.
        let pos = t.data.as_ptr() as usize;
        assert!(pos >= last_offset, "{} out of data order", t.name);
        last_offset = pos;
    }
    let embed = model.tensor("model.embed_tokens.weight").expect("embedding");
    assert_eq!(embed.shape, &[512, 64]);
    assert_eq!(embed.data.len(), 512 * 64 * 4);
    assert!(model.tensor("lm_head.weight").is_some());
    assert!(model.tensor("nope").is_none());
    assert_eq!(model.require("nope").expect_err("missing").to_string(), "no tensor named `nope`");
    assert_eq!(model.file_size(), std::fs::metadata(dir.join("model.safetensors")).expect("meta").len());
    assert_eq!(model.shard_paths().count(), 1);
}

#[test]
fn non_compute_dtypes_load_as_metadata() {
    let path = owl_test::fixture("models/llama/reference.safetensors");
    let model = SafetensorsModel::open(&path).expect("open reference file");
    let ids = model.tensor("input_ids").expect("input_ids");
    assert_eq!((ids.dtype, ids.shape), (Dtype::I64, &[24usize][..]));
    assert_eq!(i64::from_le_bytes(ids.data[..8].try_into().expect("8 bytes")), 1);
    assert!(matches!(ids.to_f32_vec(), Err(SafetensorsError::UnsupportedDtype { dtype: Dtype::I64, .. })));
    let f64s = model.tensor("logits_f64").expect("logits_f64");
    assert_eq!((f64s.dtype, f64s.shape), (Dtype::F64, &[24usize, 512][..]));
    assert!(f64s.to_f32_vec().is_err());
    let logits = model.tensor("logits").expect("logits").to_f32_vec().expect("f32");
    assert_eq!(logits.len(), 24 * 512);
}

#[test]
fn single_file_and_dir_with_half_types() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f16: Vec<u8> = [1.0f32, -0.5, 2.25].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let bf16: Vec<u8> = [3.0f32, -1.0].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let file = tmp.path().join("model.safetensors");
    write(
        &file,
        &[
            ("h", safetensors::Dtype::F16, vec![3], f16),
            ("b", safetensors::Dtype::BF16, vec![1, 2], bf16),
            ("w", safetensors::Dtype::F32, vec![2], f32_bytes(&[7.0, 8.0])),
        ],
    );
    for path in [file.as_path(), tmp.path()] {
        let m = SafetensorsModel::open(path).expect("open");
        assert_eq!(m.len(), 3);
        assert_eq!(m.metadata(), &[("format".to_string(), "pt".to_string())]);
        assert_eq!(m.tensor("h").expect("h").to_f32_vec().expect("f16"), vec![1.0, -0.5, 2.25]);
        assert_eq!(m.tensor("b").expect("b").to_f32_vec().expect("bf16"), vec![3.0, -1.0]);
        assert_eq!(m.tensor("w").expect("w").to_f32_vec().expect("f32"), vec![7.0, 8.0]);
        assert_eq!(m.n_elements(), 7);
    }
}

/// A two-shard model directory with its index.
fn sharded(dir: &Path, index: &str) {
    write(
        &dir.join("model-00001-of-00002.safetensors"),
        &[("a", safetensors::Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0]))],
    );
    write(
        &dir.join("model-00002-of-00002.safetensors"),
        &[
            ("b", safetensors::Dtype::F32, vec![1], f32_bytes(&[3.0])),
            ("c", safetensors::Dtype::F32, vec![1], f32_bytes(&[4.0])),
        ],
    );
    std::fs::write(dir.join("model.safetensors.index.json"), index).expect("write index");
}

const GOOD_INDEX: &str = r#"{"metadata": {"total_size": 16}, "weight_map": {
    "c": "model-00002-of-00002.safetensors", "a": "model-00001-of-00002.safetensors",
    "b": "model-00002-of-00002.safetensors"}}"#;

#[test]
fn sharded_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    sharded(tmp.path(), GOOD_INDEX);
    let m = SafetensorsModel::open(tmp.path()).expect("open sharded");
    let names: Vec<&str> = m.tensors().map(|t| t.name).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(m.shard_paths().count(), 2);
    assert_eq!(m.tensor("c").expect("c").to_f32_vec().expect("f32"), vec![4.0]);
    assert_eq!(m.tensor("a").expect("a").to_f32_vec().expect("f32"), vec![1.0, 2.0]);
}

#[test]
fn sharded_directory_errors() {
    let case = |index: &str| {
        let tmp = tempfile::tempdir().expect("tempdir");
        sharded(tmp.path(), index);
        let msg = open_err(tmp.path());
        msg.replace(&tmp.path().display().to_string(), "DIR")
    };
    assert_eq!(
        case("{"),
        "DIR/model.safetensors.index.json: invalid JSON: EOF while parsing an object at line 1 column 1"
    );
    assert_eq!(case("{}"), "DIR/model.safetensors.index.json: missing `weight_map`");
    assert_eq!(case(r#"{"weight_map": []}"#), "DIR/model.safetensors.index.json: `weight_map` is not an object");
    assert_eq!(case(r#"{"weight_map": {}}"#), "DIR/model.safetensors.index.json: `weight_map` is empty");
    assert_eq!(case(r#"{"weight_map": {"a": 1}}"#), "DIR/model.safetensors.index.json: `weight_map.a` is not a string");
    assert_eq!(
        case(r#"{"weight_map": {"a": "../model-00001-of-00002.safetensors"}}"#),
        "DIR/model.safetensors.index.json: `weight_map.a`: \"../model-00001-of-00002.safetensors\" is not a file name inside the model directory"
    );
    assert_eq!(
        case(r#"{"weight_map": {"a": "/etc/passwd"}}"#),
        "DIR/model.safetensors.index.json: `weight_map.a`: \"/etc/passwd\" is not a file name inside the model directory"
    );
    assert_eq!(
        case(r#"{"weight_map": {"a": "model-00002-of-00002.safetensors"}}"#),
        "tensor `a` is listed in the index for DIR/model-00002-of-00002.safetensors but that file does not contain it"
    );
    assert_eq!(
        case(r#"{"weight_map": {"z": "model-00001-of-00002.safetensors"}}"#),
        "tensor `z` is listed in the index for DIR/model-00001-of-00002.safetensors but that file does not contain it"
    );
    assert!(case(r#"{"weight_map": {"a": "missing.safetensors"}}"#)
        .starts_with("cannot read DIR/missing.safetensors: No such file"));

    // The same name in two shards.
    let tmp = tempfile::tempdir().expect("tempdir");
    sharded(tmp.path(), GOOD_INDEX);
    write(
        &tmp.path().join("model-00002-of-00002.safetensors"),
        &[("a", safetensors::Dtype::F32, vec![1], f32_bytes(&[3.0]))],
    );
    let msg = open_err(tmp.path()).replace(&tmp.path().display().to_string(), "DIR");
    assert_eq!(
        msg,
        "tensor `a` is in both DIR/model-00001-of-00002.safetensors and DIR/model-00002-of-00002.safetensors"
    );
}

#[test]
fn open_errors_name_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().display().to_string();
    assert_eq!(open_err(tmp.path()), format!("{d} has neither model.safetensors nor model.safetensors.index.json"));
    let missing = tmp.path().join("absent.safetensors");
    assert!(open_err(&missing).starts_with(&format!("cannot read {d}/absent.safetensors: No such file")));
    let short = tmp.path().join("short.safetensors");
    std::fs::write(&short, b"abc").expect("write");
    assert_eq!(
        open_err(&short),
        format!("{d}/short.safetensors: file is 3 bytes, too short for the 8-byte header length")
    );
    let truncated = tmp.path().join("truncated.safetensors");
    write(&truncated, &[("w", safetensors::Dtype::F32, vec![4], f32_bytes(&[1.0, 2.0, 3.0, 4.0]))]);
    let bytes = std::fs::read(&truncated).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).expect("truncate");
    assert_eq!(
        open_err(&truncated),
        format!(
            "{d}/truncated.safetensors: tensor `w`: data_offsets [0, 16] runs past the end of the 13-byte data section"
        )
    );
}
