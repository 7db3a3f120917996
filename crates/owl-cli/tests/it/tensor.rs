//! `owl tensor`: dequantized tensors as .npy and JSON, checked against gguf-py.
//!
//! The reference values were computed with gguf-py 0.19.0 and numpy 2.4.6:
//! `gguf.quants.dequantize(t.data, t.tensor_type).astype(float32)` reshaped to the reversed
//! ggml shape (numpy order), for each tensor below. Expected: bit-identical values, so the
//! SHA-256 of the little-endian f32 data must match exactly; the leading values of the first
//! rows and the sums (f64, tolerance 1e-6 relative to max(1, |sum|), which only covers the
//! summation order) are there to say where a mismatch lies.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use owl_formats::gguf::{GgmlType, GgufWriter};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{assert_one_line_error, owl, owl_json, Run};

mod gguf_py;

use gguf_py::{Reference, REFERENCES};

/// `owl_test::demo_model`, asked once per model and test binary: the fetch script checks
/// the file's SHA-256 on every call, seconds for the 0.5B model.
fn demo_model(name: &str) -> PathBuf {
    static PATHS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut paths = PATHS.lock().unwrap_or_else(|e| e.into_inner());
    paths.entry(name.to_string()).or_insert_with(|| owl_test::demo_model(name)).clone()
}

/// A finished `owl` run with stdout as raw bytes.
struct BytesRun {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

fn owl_bytes<I, S>(args: I) -> BytesRun
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_owl")).args(args).output().expect("run owl");
    BytesRun { code: out.status.code(), stdout: out.stdout, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// An array read from .npy bytes.
struct Npy {
    shape: Vec<usize>,
    data: Vec<f32>,
    /// The raw little-endian data.
    bytes: Vec<u8>,
}

/// Parses a .npy v1.0 file as numpy's format spec (numpy/lib/format.py) defines it and
/// checks what owl promises: '<f4', C order, data at a multiple of 64 bytes.
fn parse_npy(file: &[u8]) -> Npy {
    assert!(file.len() >= 10, "{} bytes is too short for .npy", file.len());
    assert_eq!(&file[..6], b"\x93NUMPY", "magic");
    assert_eq!(&file[6..8], [1, 0], "version 1.0");
    let header_len = u16::from_le_bytes([file[8], file[9]]) as usize;
    let start = 10 + header_len;
    assert_eq!(start % 64, 0, "data starts at {start}, not a multiple of 64");
    let header = std::str::from_utf8(&file[10..start]).expect("ASCII header");
    assert!(header.ends_with('\n'), "{header:?}");
    let dict = header.trim_end();
    let prefix = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
    let tuple = dict
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix("), }"))
        .unwrap_or_else(|| panic!("unexpected header {dict:?}"));
    let shape: Vec<usize> =
        tuple.split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.parse().expect("dimension")).collect();
    if shape.len() == 1 {
        assert!(tuple.ends_with(','), "a 1-tuple needs its comma: {tuple:?}");
    }
    let bytes = file[start..].to_vec();
    let n: usize = shape.iter().product();
    assert_eq!(bytes.len(), 4 * n, "data bytes for shape {shape:?}");
    let data = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Npy { shape, data, bytes }
}

/// `owl tensor MODEL NAME` to stdout, parsed.
fn tensor_npy(model: &Path, name: &str) -> Npy {
    let run = owl_bytes([OsStr::new("tensor"), model.as_os_str(), OsStr::new(name)]);
    assert_eq!(run.code, Some(0), "owl tensor {name} failed: {}", run.stderr);
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
    parse_npy(&run.stdout)
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[track_caller]
fn assert_sum(what: &str, got: f64, want: f64) {
    let tol = 1e-6 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: {got} vs gguf-py {want} (tolerance {tol:e})");
}

fn check(reference: &Reference, npy: &Npy) {
    let what = format!("{} {}", reference.model, reference.name);
    assert_eq!(npy.shape, reference.shape, "{what}: shape");
    let row_len = *reference.shape.last().expect("shape");
    for (r, want) in reference.rows.iter().enumerate() {
        let got = &npy.data[r * row_len..r * row_len + want.len()];
        assert_eq!(got, want, "{what}: row {r} starts differently");
    }
    let sum: f64 = npy.data.iter().map(|&v| f64::from(v)).sum();
    let sum_sq: f64 = npy.data.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    assert_sum(&format!("{what}: sum"), sum, reference.sum);
    assert_sum(&format!("{what}: sum of squares"), sum_sq, reference.sum_sq);
    assert_eq!(hex(&Sha256::digest(&npy.bytes)), reference.sha256, "{what}: data is not bit-identical to gguf-py's");
}

#[test]
fn demo_model_tensors_match_gguf_py() {
    let mut types = std::collections::BTreeSet::new();
    for reference in REFERENCES {
        let path = demo_model(reference.model);
        // The tensor is stored in the type this case is meant to cover.
        let gguf = owl_formats::gguf::GgufFile::open(&path).expect("open GGUF");
        let info = gguf.tensor(reference.name).expect("tensor");
        assert_eq!(info.ggml_type.name(), reference.type_name, "{}", reference.name);
        types.insert(reference.type_name);
        let npy = tensor_npy(&path, reference.name);
        check(reference, &npy);
    }
    assert_eq!(types.into_iter().collect::<Vec<_>>(), ["F32", "Q4_1", "Q4_K", "Q5_0", "Q6_K", "Q8_0"]);
}

#[test]
fn output_file_and_json_agree_with_stdout() {
    let path = demo_model("gemma3");
    let tmp = tempfile::tempdir().expect("tempdir");
    let npy_path = tmp.path().join("attn_k.npy");
    let name = "blk.0.attn_k.weight";
    let run = owl([OsStr::new("tensor"), path.as_os_str(), OsStr::new(name), OsStr::new("-o"), npy_path.as_os_str()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.is_empty() && run.stderr.is_empty());
    let file = std::fs::read(&npy_path).expect("output file");
    let stdout = owl_bytes([OsStr::new("tensor"), path.as_os_str(), OsStr::new(name)]);
    assert!(file == stdout.stdout, "-o FILE and stdout differ");
    let npy = parse_npy(&file);
    let reference = REFERENCES.iter().find(|r| r.model == "gemma3" && r.name == name).expect("reference");
    check(reference, &npy);

    // JSON (chosen by the .json extension): the same numbers, exactly.
    let json_path = tmp.path().join("attn_k.json");
    let run = owl([OsStr::new("tensor"), path.as_os_str(), OsStr::new(name), OsStr::new("-o"), json_path.as_os_str()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let json: Value = serde_json::from_slice(&std::fs::read(&json_path).expect("json file")).expect("JSON");
    assert_json_matches(&json, name, "Q5_0", &npy);

    // Only the two outputs are left: no temporary files.
    assert_eq!(list_dir(tmp.path()), ["attn_k.json", "attn_k.npy"]);
}

fn assert_json_matches(json: &Value, name: &str, type_name: &str, npy: &Npy) {
    let keys: Vec<&str> = json.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "type", "shape", "data"]);
    assert_eq!(json["name"], name);
    assert_eq!(json["type"], type_name);
    let shape: Vec<usize> =
        json["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
    assert_eq!(shape, npy.shape);
    let data: Vec<f32> =
        json["data"].as_array().expect("data").iter().map(|v| v.as_f64().expect("number") as f32).collect();
    assert_eq!(data.len(), npy.data.len());
    let same_bits = data.iter().zip(&npy.data).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same_bits, "JSON numbers differ from the .npy values");
}

#[test]
fn json_of_a_norm_vector() {
    for (model, name) in [("smollm2", "blk.0.attn_norm.weight"), ("qwen2.5-coder", "blk.0.attn_k.bias")] {
        let path = demo_model(model);
        let json = owl_json([
            OsStr::new("tensor"),
            path.as_os_str(),
            OsStr::new(name),
            OsStr::new("--format"),
            OsStr::new("json"),
        ]);
        let npy = tensor_npy(&path, name);
        assert_json_matches(&json, name, "F32", &npy);
        let reference = REFERENCES.iter().find(|r| r.model == model && r.name == name).expect("reference");
        check(reference, &npy);
    }
}

#[test]
fn hf_directory_and_safetensors_file() {
    let dir = owl_test::fixture("models/llama");
    let file = dir.join("model.safetensors");
    let want = owl_test::load_safetensors_f32(&file);
    for (model, name) in [
        (&dir, "model.layers.0.mlp.gate_proj.weight"),
        (&dir, "model.norm.weight"),
        (&file, "model.layers.1.self_attn.k_proj.weight"),
    ] {
        let npy = tensor_npy(model, name);
        let expected = &want[name];
        assert_eq!(npy.shape, expected.shape, "{name}: shape");
        owl_test::assert_close(name, &npy.data, &expected.data, 0.0);
    }
    let json = owl_json([
        OsStr::new("tensor"),
        dir.as_os_str(),
        OsStr::new("model.norm.weight"),
        OsStr::new("--format"),
        OsStr::new("json"),
    ]);
    assert_json_matches(&json, "model.norm.weight", "F32", &tensor_npy(&dir, "model.norm.weight"));
}

/// A GGUF with one tensor of each plain type, one with an integer float32 cannot hold, and
/// one of a type owl has no dequantizer for.
fn odd_types_gguf(dir: &Path) -> PathBuf {
    let mut w = GgufWriter::new();
    let le =
        |v: &[i64], width: usize| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()[..width].to_vec()).collect() };
    w.add_tensor("i8", vec![4], GgmlType::I8, le(&[-128, 0, 5, 127], 1)).expect("i8");
    w.add_tensor("i16", vec![2], GgmlType::I16, le(&[-32768, 300], 2)).expect("i16");
    w.add_tensor("i32", vec![3], GgmlType::I32, le(&[1 << 24, -7, 0], 4)).expect("i32");
    w.add_tensor("i64", vec![2], GgmlType::I64, le(&[-(1 << 40), 3], 8)).expect("i64");
    let f64s: Vec<u8> = [0.5f64, -2.25].iter().flat_map(|v| v.to_le_bytes()).collect();
    w.add_tensor("f64", vec![2], GgmlType::F64, f64s).expect("f64");
    let f64_bad: Vec<u8> = [0.5f64, 0.1].iter().flat_map(|v| v.to_le_bytes()).collect();
    w.add_tensor("f64_inexact", vec![2], GgmlType::F64, f64_bad).expect("f64");
    w.add_tensor("i32_big", vec![2], GgmlType::I32, le(&[1, (1 << 24) + 1], 4)).expect("i32");
    // ggml shape [2, 3, 4]: 4 x 3 rows of 2, values 0..24 in storage order.
    let f16s: Vec<u8> = (0..24u16).flat_map(|i| half_bits(f32::from(i)).to_le_bytes()).collect();
    w.add_tensor("cube", vec![2, 3, 4], GgmlType::F16, f16s).expect("f16");
    w.add_tensor("iq2", vec![256], GgmlType::IQ2_XXS, vec![0u8; 66]).expect("iq2");
    let path = dir.join("odd.gguf");
    w.write_file(&path).expect("write gguf");
    path
}

/// f16 bits of a small integer (exact): sign 0, exponent and mantissa by hand.
fn half_bits(v: f32) -> u16 {
    if v == 0.0 {
        return 0;
    }
    let e = v.log2().floor() as i32;
    let mantissa = ((v / 2f32.powi(e) - 1.0) * 1024.0) as u16;
    (((e + 15) as u16) << 10) | mantissa
}

#[test]
fn integer_f64_and_f16_gguf_tensors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = odd_types_gguf(tmp.path());
    for (name, shape, values) in [
        ("i8", vec![4], vec![-128.0, 0.0, 5.0, 127.0]),
        ("i16", vec![2], vec![-32768.0, 300.0]),
        ("i32", vec![3], vec![16_777_216.0, -7.0, 0.0]),
        ("i64", vec![2], vec![-1_099_511_627_776.0, 3.0]),
        ("f64", vec![2], vec![0.5, -2.25]),
        ("cube", vec![4, 3, 2], (0..24).map(|i| i as f32).collect()),
    ] {
        let npy = tensor_npy(&path, name);
        assert_eq!(npy.shape, shape, "{name}");
        assert_eq!(npy.data, values, "{name}");
    }
    let json = owl_json([
        OsStr::new("tensor"),
        path.as_os_str(),
        OsStr::new("cube"),
        OsStr::new("--format"),
        OsStr::new("json"),
    ]);
    assert_eq!(json["type"], "F16");
    assert_eq!(json["shape"], serde_json::json!([4, 3, 2]));
    assert_eq!(json["data"][23], 23.0);
}

/// The file names in `dir`, sorted.
fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `owl tensor ARGS...` expecting one error line and no output file in `dir`.
#[track_caller]
fn assert_fails_cleanly(args: &[&OsStr], dir: &Path) -> String {
    let before = list_dir(dir);
    let mut all = vec![OsStr::new("tensor")];
    all.extend_from_slice(args);
    let run: Run = owl(all);
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    let line = assert_one_line_error(&run);
    let after = list_dir(dir);
    assert_eq!(before, after, "files appeared or vanished in {}", dir.display());
    line
}

#[test]
fn errors_are_one_line_and_leave_no_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gguf = odd_types_gguf(tmp.path());
    let out = tmp.path().join("out.npy");
    std::fs::write(&out, b"old").expect("write");
    let o = OsStr::new("-o");
    let g = gguf.as_os_str();

    let line = assert_fails_cleanly(&[g, OsStr::new("iq2"), o, out.as_os_str()], tmp.path());
    assert!(
        line.starts_with("error: tensor `iq2` has type IQ2_XXS, which owl cannot dequantize (supported: F32, F16, "),
        "{line}"
    );
    let line = assert_fails_cleanly(&[g, OsStr::new("i32_big"), o, out.as_os_str()], tmp.path());
    assert_eq!(line, "error: tensor `i32_big` (I32) holds 16777217 at index 1, which float32 cannot represent exactly");
    let line = assert_fails_cleanly(&[g, OsStr::new("f64_inexact")], tmp.path());
    assert_eq!(line, "error: tensor `f64_inexact` (F64) holds 0.1 at index 1, which float32 cannot represent exactly");
    assert_eq!(std::fs::read(&out).expect("read"), b"old", "the old file survives");

    // Unknown names: close ones suggested, or the way to list them all.
    let smollm2 = demo_model("smollm2");
    let line = assert_fails_cleanly(
        &[smollm2.as_os_str(), OsStr::new("blk.0.ffn_dow.weight"), o, out.as_os_str()],
        tmp.path(),
    );
    let model = smollm2.display();
    assert_eq!(
        line,
        format!(
            "error: no tensor named `blk.0.ffn_dow.weight` in {model}; did you mean \
             `blk.0.ffn_down.weight`, `blk.1.ffn_down.weight`, `blk.10.ffn_down.weight`? \
             ('owl inspect {model} --tensors' lists all 272)"
        )
    );
    let line = assert_fails_cleanly(&[g, OsStr::new("model.embed_tokens.weight")], tmp.path());
    assert_eq!(
        line,
        format!(
            "error: no tensor named `model.embed_tokens.weight` in {} ('owl inspect {} --tensors' lists all 9)",
            gguf.display(),
            gguf.display()
        )
    );
    let llama = owl_test::fixture("models/llama");
    let line = assert_fails_cleanly(&[llama.as_os_str(), OsStr::new("q_proj.weight")], tmp.path());
    assert!(
        line.contains(
            "did you mean `model.layers.0.self_attn.q_proj.weight`, `model.layers.1.self_attn.q_proj.weight`?"
        ),
        "{line}"
    );

    // Bad output paths: a missing directory, a directory.
    let missing = tmp.path().join("no/such/dir/x.npy");
    let line = assert_fails_cleanly(&[g, OsStr::new("i8"), o, missing.as_os_str()], tmp.path());
    assert!(
        line.starts_with(&format!(
            "error: cannot create a temporary file in {}",
            missing.parent().expect("parent").display()
        )),
        "{line}"
    );
    let line = assert_fails_cleanly(&[g, OsStr::new("i8"), o, tmp.path().as_os_str()], tmp.path());
    assert!(line.ends_with("is a directory (-o wants a file name)"), "{line}");

    // A safetensors dtype with no float32 meaning here.
    let st = tmp.path().join("fp8.safetensors");
    write_safetensors(&st, &[("scale", "F8_E4M3", &[2], &[0x38, 0x40])]);
    let line = assert_fails_cleanly(&[st.as_os_str(), OsStr::new("scale")], tmp.path());
    assert!(line.starts_with("error: tensor `scale` has dtype F8_E4M3, which owl cannot convert to float32"), "{line}");
}

/// Writes a safetensors file: (name, dtype, shape, little-endian bytes), data in order.
fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[usize], &[u8])]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let mut text = serde_json::to_string(&header).expect("json");
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(text.as_bytes());
    for (_, _, _, bytes) in tensors {
        file.extend_from_slice(bytes);
    }
    std::fs::write(path, file).expect("write safetensors");
}

#[test]
fn safetensors_bf16_f16_and_integers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let st = tmp.path().join("mixed.safetensors");
    // bf16 1.0 = 0x3f80, -2.5 = 0xc020; f16 0.5 = 0x3800; i64 -3, 9.
    let i64s: Vec<u8> = [-3i64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(
        &st,
        &[
            ("bf", "BF16", &[1, 2], &[0x80, 0x3f, 0x20, 0xc0]),
            ("half", "F16", &[1], &[0x00, 0x38]),
            ("ids", "I64", &[2, 1], &i64s),
            ("scalar", "F32", &[], &1.5f32.to_le_bytes()),
        ],
    );
    for (name, shape, values) in [
        ("bf", vec![1, 2], vec![1.0, -2.5]),
        ("half", vec![1], vec![0.5]),
        ("ids", vec![2, 1], vec![-3.0, 9.0]),
        ("scalar", vec![], vec![1.5]),
    ] {
        let npy = tensor_npy(&st, name);
        assert_eq!(npy.shape, shape, "{name}");
        assert_eq!(npy.data, values, "{name}");
    }
}

#[test]
fn help_states_the_shape_order() {
    let run = owl(["tensor", "--help"]);
    assert_eq!(run.code, Some(0));
    for needle in ["row-major", "--format", "npy", "json", "-o, --output"] {
        assert!(run.stdout.contains(needle), "missing {needle:?}:\n{}", run.stdout);
    }
    let run = owl(["tensor", "smollm2"]);
    assert_eq!(run.code, Some(2));
    assert_one_line_error(&run);
}
