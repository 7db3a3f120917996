//! Unit tests of header validation: each malformed case is an error naming the problem.

use super::*;

/// A file from a header JSON string and a data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn err(bytes: &[u8]) -> String {
    match parse_header(bytes) {
        Ok(h) => panic!("expected an error, parsed {h:?}"),
        Err(e) => e.to_string(),
    }
}

const TWO: &str =
    r#"{"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;

#[test]
fn valid_header_in_data_order() {
    let h = parse_header(&file(TWO, &[0u8; 14])).expect("valid");
    assert_eq!(h.header_len, TWO.len());
    assert_eq!(h.data_start, 8 + TWO.len());
    assert_eq!(h.data_len, 14);
    let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        h.tensors[1],
        TensorEntry { name: "b".into(), dtype: Dtype::BF16, shape: vec![3], data_offsets: [8, 14] }
    );
    assert_eq!((h.tensors[1].n_elements(), h.tensors[1].n_bytes()), (3, 6));
    assert!(h.metadata.is_empty());
}

#[test]
fn metadata_scalars_zero_sized_and_padding() {
    let header = r#"{"__metadata__":{"format":"pt","x":"y"},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"z":{"dtype":"F16","shape":[0,4],"data_offsets":[8,8]}}    "#;
    let h = parse_header(&file(header, &[1u8; 8])).expect("valid");
    assert_eq!(h.metadata, vec![("format".to_string(), "pt".to_string()), ("x".to_string(), "y".to_string())]);
    assert_eq!(h.tensors[0].n_elements(), 1);
    assert_eq!(h.tensors[1].n_elements(), 0);
}

#[test]
fn length_prefix_errors() {
    assert_eq!(err(&[1, 2, 3]), "file is 3 bytes, too short for the 8-byte header length");
    assert_eq!(err(&u64::MAX.to_le_bytes()), format!("header length {} exceeds the 100000000-byte limit", u64::MAX));
    let mut big = 100_000_001u64.to_le_bytes().to_vec();
    big.extend_from_slice(b"{}");
    assert!(err(&big).contains("exceeds the 100000000-byte limit"));
    let mut short = 1000u64.to_le_bytes().to_vec();
    short.extend_from_slice(b"{}");
    assert_eq!(err(&short), "header length 1000 runs past the end of the 10-byte file");
}

#[test]
fn json_errors() {
    assert!(err(&file("{\"a\": ", &[])).starts_with("header is not valid JSON: "));
    assert_eq!(err(&file("[1, 2]", &[])), "header is not valid JSON: header does not start with '{'");
    assert!(err(&file("{\"a\": 1} x", &[])).starts_with("header is not valid JSON: trailing characters"));
    assert_eq!(err(&file(r#"{"__metadata__": [1]}"#, &[])), "header `__metadata__` is not an object");
    assert_eq!(err(&file(r#"{"__metadata__": {"k": 1}}"#, &[])), "header `__metadata__` value of `k` is not a string");
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(1000), "]".repeat(1000));
    assert!(err(&file(&deep, &[])).starts_with("header is not valid JSON: recursion limit"));
}

#[test]
fn entry_field_errors() {
    let one = |entry: &str, data: usize| err(&file(&format!("{{\"t\":{entry}}}"), &vec![0u8; data]));
    assert_eq!(one("3", 0), "tensor `t`: entry is not an object");
    assert_eq!(one(r#"{"shape":[1],"data_offsets":[0,4]}"#, 4), "tensor `t`: missing `dtype`");
    assert_eq!(one(r#"{"dtype":1,"shape":[1],"data_offsets":[0,4]}"#, 4), "tensor `t`: `dtype` is not a string");
    assert_eq!(one(r#"{"dtype":"F128","shape":[1],"data_offsets":[0,4]}"#, 4), "tensor `t`: unknown dtype \"F128\"");
    assert_eq!(one(r#"{"dtype":"F32","data_offsets":[0,4]}"#, 4), "tensor `t`: missing `shape`");
    assert_eq!(
        one(r#"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#, 4),
        "tensor `t`: `shape[0]` is not a non-negative integer"
    );
    assert_eq!(
        one(r#"{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}"#, 4),
        "tensor `t`: `shape[0]` is not a non-negative integer"
    );
    assert_eq!(one(r#"{"dtype":"F32","shape":[1]}"#, 4), "tensor `t`: missing `data_offsets`");
    assert_eq!(
        one(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}"#, 4),
        "tensor `t`: `data_offsets` is not an array of two integers"
    );
    assert_eq!(
        one(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}"#, 4),
        "tensor `t`: `data_offsets[1]` is not a non-negative integer"
    );
}

#[test]
fn size_and_offset_errors() {
    let one = |entry: &str, data: usize| err(&file(&format!("{{\"t\":{entry}}}"), &vec![0u8; data]));
    assert_eq!(
        one(r#"{"dtype":"F32","shape":[3],"data_offsets":[0,8]}"#, 8),
        "tensor `t`: data_offsets cover 8 bytes but F32 [3] needs 12"
    );
    assert_eq!(
        one(r#"{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}"#, 8),
        "tensor `t`: shape [4294967296, 4294967296] is too large (size overflows)"
    );
    assert_eq!(
        one(r#"{"dtype":"F4","shape":[3],"data_offsets":[0,2]}"#, 2),
        "tensor `t`: F4 [3] is not a whole number of bytes"
    );
    let h = parse_header(&file(r#"{"t":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}"#, &[0u8; 2])).expect("valid");
    assert_eq!(h.tensors[0].n_bytes(), 2);
    assert_eq!(
        one(r#"{"dtype":"F32","shape":[1],"data_offsets":[8,4]}"#, 8),
        "tensor `t`: data_offsets [8, 4] begin is after end"
    );
    assert_eq!(
        one(r#"{"dtype":"F32","shape":[1],"data_offsets":[4,8]}"#, 6),
        "tensor `t`: data_offsets [4, 8] runs past the end of the 6-byte data section"
    );
    assert_eq!(
        one(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}"#, 6),
        "tensor `t`: data_offsets [0, 18446744073709551615] runs past the end of the 6-byte data section"
    );
}

#[test]
fn layout_errors() {
    let two = |a: [usize; 2], b: [usize; 2], data: usize| {
        let h = format!(
            r#"{{"a":{{"dtype":"U8","shape":[{}],"data_offsets":[{},{}]}},"b":{{"dtype":"U8","shape":[{}],"data_offsets":[{},{}]}}}}"#,
            a[1] - a[0],
            a[0],
            a[1],
            b[1] - b[0],
            b[0],
            b[1]
        );
        err(&file(&h, &vec![0u8; data]))
    };
    assert_eq!(two([0, 4], [2, 6], 6), "tensor `b`: data_offsets [2, 6] overlaps `a`, which ends at 4");
    assert_eq!(two([0, 4], [5, 6], 6), "tensor `b`: data_offsets [5, 6] leaves a hole after `a`, which ends at 4");
    assert_eq!(
        two([1, 4], [4, 6], 6),
        "tensor `a`: data_offsets [1, 4] leaves a hole after `<start of data>`, which ends at 0"
    );
    assert_eq!(
        two([0, 4], [4, 6], 9),
        "tensors cover 6 bytes of the 9-byte data section (trailing bytes are not allowed)"
    );
    assert_eq!(two([0, 4], [0, 4], 4), "tensor `b`: data_offsets [0, 4] overlaps `a`, which ends at 4");
    let dup =
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    assert_eq!(err(&file(dup, &[0u8; 2])), "tensor `a` appears twice in the header");
}

#[test]
fn every_dtype_name_round_trips() {
    for d in Dtype::ALL {
        assert_eq!(Dtype::from_name(d.name()), Some(d));
    }
    assert_eq!(Dtype::from_name("f32"), None);
    assert!(Dtype::F32.is_compute() && Dtype::F16.is_compute() && Dtype::BF16.is_compute());
    assert!(!Dtype::F64.is_compute() && !Dtype::I64.is_compute() && !Dtype::F8E4M3.is_compute());
}

#[test]
fn views_convert_compute_dtypes_only() {
    let f16s: Vec<u8> = [1.5f32, -2.0, 65504.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let bf16s: Vec<u8> = [0.15625f32, -3.0e38].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let v = TensorView { name: "h", dtype: Dtype::F16, shape: &[3], data: &f16s };
    assert_eq!(v.to_f32_vec().expect("f16"), vec![1.5, -2.0, 65504.0]);
    let v = TensorView { name: "b", dtype: Dtype::BF16, shape: &[2], data: &bf16s };
    assert_eq!(v.to_f32_vec().expect("bf16"), vec![0.15625, half::bf16::from_f32(-3.0e38).to_f32()]);
    let f32s: Vec<u8> = [1.0f32, f32::MIN_POSITIVE].iter().flat_map(|v| v.to_le_bytes()).collect();
    // An odd offset: the conversion must not need alignment.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&f32s);
    let v = TensorView { name: "f", dtype: Dtype::F32, shape: &[2], data: &shifted[1..] };
    let mut out = [0f32; 2];
    v.to_f32_into(&mut out).expect("f32");
    assert_eq!(out, [1.0, f32::MIN_POSITIVE]);
    assert_eq!(
        v.to_f32_into(&mut [0f32; 3]).expect_err("length").to_string(),
        "tensor `f`: output buffer holds 3 values, the tensor has 2"
    );
    let v = TensorView { name: "ids", dtype: Dtype::I64, shape: &[1], data: &[0u8; 8] };
    assert_eq!(
        v.to_f32_vec().expect_err("i64").to_string(),
        "tensor `ids` has dtype I64; only F32, F16 and BF16 tensors can be used for compute"
    );
}
