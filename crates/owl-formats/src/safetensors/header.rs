//! The safetensors header: an 8-byte little-endian length, then that many bytes of JSON
//! mapping tensor names to `{dtype, shape, data_offsets}` (plus an optional `__metadata__`
//! object of strings), then the data section.
//!
//! Spec: <https://github.com/huggingface/safetensors#format>. Validation is stricter than "it
//! parses": the header length is checked against the file before anything is allocated or
//! parsed (and capped at [`MAX_HEADER_LEN`]), names must be unique, every tensor's byte length
//! must equal product(shape) * dtype size (overflow-checked), and the tensors must tile the
//! data section exactly — in range, ordered, no overlaps, no holes (the spec forbids holes so a
//! file cannot hide a second payload).

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::SafetensorsError;

/// Largest header accepted (the `safetensors` crate's limit, too): 100 MB.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Element types a safetensors file can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    /// 4-bit float (e2m1), two per byte.
    F4,
    /// 6-bit float e2m3.
    F6E2M3,
    /// 6-bit float e3m2.
    F6E3M2,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    /// Complex of two f32.
    C64,
    F64,
    I64,
    U64,
}

impl Dtype {
    /// Every dtype, for lookups and tests.
    pub const ALL: [Dtype; 22] = [
        Dtype::Bool,
        Dtype::F4,
        Dtype::F6E2M3,
        Dtype::F6E3M2,
        Dtype::U8,
        Dtype::I8,
        Dtype::F8E5M2,
        Dtype::F8E4M3,
        Dtype::F8E8M0,
        Dtype::F8E4M3Fnuz,
        Dtype::F8E5M2Fnuz,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::C64,
        Dtype::F64,
        Dtype::I64,
        Dtype::U64,
    ];

    /// The spelling used in the header ("F32", "BF16", "F8_E4M3", ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::F4 => "F4",
            Dtype::F6E2M3 => "F6_E2M3",
            Dtype::F6E3M2 => "F6_E3M2",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E8M0 => "F8_E8M0",
            Dtype::F8E4M3Fnuz => "F8_E4M3FNUZ",
            Dtype::F8E5M2Fnuz => "F8_E5M2FNUZ",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::C64 => "C64",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// Parses a header spelling.
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bits per element.
    pub fn bits(self) -> usize {
        match self {
            Dtype::F4 => 4,
            Dtype::F6E2M3 | Dtype::F6E3M2 => 6,
            Dtype::Bool
            | Dtype::U8
            | Dtype::I8
            | Dtype::F8E5M2
            | Dtype::F8E4M3
            | Dtype::F8E8M0
            | Dtype::F8E4M3Fnuz
            | Dtype::F8E5M2Fnuz => 8,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 32,
            Dtype::C64 | Dtype::F64 | Dtype::I64 | Dtype::U64 => 64,
        }
    }

    /// Whether owl computes with this dtype (F32, F16, BF16); others load as metadata only.
    pub fn is_compute(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Tensor name (e.g. "model.layers.0.self_attn.q_proj.weight").
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first (row-major).
    pub shape: Vec<usize>,
    /// [begin, end) byte range relative to the start of the data section.
    pub data_offsets: [usize; 2],
}

impl TensorEntry {
    /// Number of elements (product of the shape; 1 for a scalar). Validated not to overflow.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of data.
    pub fn n_bytes(&self) -> usize {
        self.data_offsets[1] - self.data_offsets[0]
    }
}

/// A validated safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Length of the JSON header in bytes (the leading u64).
    pub header_len: usize,
    /// Absolute file offset of the data section: 8 + header_len.
    pub data_start: usize,
    /// Length of the data section in bytes (file length - data_start).
    pub data_len: usize,
    /// Tensors in data order (ascending offsets).
    pub tensors: Vec<TensorEntry>,
    /// The `__metadata__` string pairs, in file order.
    pub metadata: Vec<(String, String)>,
}

/// The header's JSON object as (key, value) pairs in file order; a map would silently drop
/// duplicate names, which must be an error.
struct RawEntries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for RawEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = RawEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<Value>()?;
                    entries.push((key, value));
                }
                Ok(RawEntries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// Parses and validates the header of a safetensors file held in `bytes` (the whole file, or
/// at least the whole file's length: the data section is checked against `bytes.len()`).
pub fn parse_header(bytes: &[u8]) -> Result<SafetensorsHeader, SafetensorsError> {
    let file_len = bytes.len();
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(SafetensorsError::TooShort { file_len });
    };
    let mut len_le = [0u8; 8];
    len_le.copy_from_slice(len_bytes);
    let header_len_u64 = u64::from_le_bytes(len_le);
    if header_len_u64 > MAX_HEADER_LEN {
        return Err(SafetensorsError::HeaderTooLarge { header_len: header_len_u64, max: MAX_HEADER_LEN });
    }
    // Fits: <= 100 MB.
    let header_len = header_len_u64 as usize;
    let data_start = 8 + header_len;
    if data_start > file_len {
        return Err(SafetensorsError::HeaderOutOfBounds { header_len: header_len_u64, file_len });
    }
    let data_len = file_len - data_start;
    let json = &bytes[8..data_start];
    if json.first() != Some(&b'{') {
        return Err(SafetensorsError::HeaderJson { message: "header does not start with '{'".into() });
    }
    let RawEntries(raw) =
        serde_json::from_slice(json).map_err(|e| SafetensorsError::HeaderJson { message: e.to_string() })?;

    let mut seen = HashSet::with_capacity(raw.len());
    let mut tensors = Vec::with_capacity(raw.len());
    let mut metadata = Vec::new();
    for (name, value) in raw {
        if !seen.insert(name.clone()) {
            return Err(SafetensorsError::DuplicateTensor { name });
        }
        if name == "__metadata__" {
            metadata = parse_metadata(value)?;
            continue;
        }
        tensors.push(parse_entry(name, value, data_len)?);
    }

    // Data order; ties (zero-sized tensors) keep header order.
    tensors.sort_by_key(|t| t.data_offsets);
    let mut expected_begin = 0usize;
    let mut previous: Option<&TensorEntry> = None;
    for t in &tensors {
        let [begin, end] = t.data_offsets;
        if begin != expected_begin {
            let (prev_name, prev_end) =
                previous.map_or(("<start of data>", 0), |p| (p.name.as_str(), p.data_offsets[1]));
            let reason = if begin < expected_begin {
                format!("overlaps `{prev_name}`, which ends at {prev_end}")
            } else {
                format!("leaves a hole after `{prev_name}`, which ends at {prev_end}")
            };
            return Err(SafetensorsError::BadOffsets { name: t.name.clone(), begin, end, reason });
        }
        expected_begin = end;
        previous = Some(t);
    }
    if expected_begin != data_len {
        return Err(SafetensorsError::TrailingData { covered: expected_begin, data_len });
    }
    Ok(SafetensorsHeader { header_len, data_start, data_len, tensors, metadata })
}

fn parse_metadata(value: Value) -> Result<Vec<(String, String)>, SafetensorsError> {
    let Value::Object(map) = value else {
        return Err(SafetensorsError::BadMetadata { reason: "is not an object".into() });
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(SafetensorsError::BadMetadata { reason: format!("value of `{k}` is not a string") }),
        })
        .collect()
}

fn parse_entry(name: String, value: Value, data_len: usize) -> Result<TensorEntry, SafetensorsError> {
    let bad = |name: &str, reason: String| SafetensorsError::BadTensorEntry { name: name.to_string(), reason };
    let Value::Object(obj) = value else {
        return Err(bad(&name, "entry is not an object".into()));
    };
    let dtype_name = match obj.get("dtype") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(bad(&name, "`dtype` is not a string".into())),
        None => return Err(bad(&name, "missing `dtype`".into())),
    };
    let Some(dtype) = Dtype::from_name(dtype_name) else {
        return Err(SafetensorsError::UnknownDtype { name, dtype: dtype_name.chars().take(32).collect() });
    };
    let shape = match obj.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .enumerate()
            .map(|(i, d)| {
                d.as_u64()
                    .and_then(|u| usize::try_from(u).ok())
                    .ok_or_else(|| bad(&name, format!("`shape[{i}]` is not a non-negative integer")))
            })
            .collect::<Result<Vec<usize>, _>>()?,
        Some(_) => return Err(bad(&name, "`shape` is not an array".into())),
        None => return Err(bad(&name, "missing `shape`".into())),
    };
    let offsets = match obj.get("data_offsets") {
        Some(Value::Array(o)) if o.len() == 2 => {
            let get = |i: usize| {
                o[i].as_u64()
                    .and_then(|u| usize::try_from(u).ok())
                    .ok_or_else(|| bad(&name, format!("`data_offsets[{i}]` is not a non-negative integer")))
            };
            [get(0)?, get(1)?]
        }
        Some(_) => return Err(bad(&name, "`data_offsets` is not an array of two integers".into())),
        None => return Err(bad(&name, "missing `data_offsets`".into())),
    };
    let [begin, end] = offsets;
    if begin > end {
        return Err(SafetensorsError::BadOffsets { name, begin, end, reason: "begin is after end".into() });
    }
    if end > data_len {
        return Err(SafetensorsError::BadOffsets {
            name,
            begin,
            end,
            reason: format!("runs past the end of the {data_len}-byte data section"),
        });
    }
    let n_elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let n_bits = n_elements.and_then(|n| n.checked_mul(dtype.bits()));
    let Some(n_bits) = n_bits else {
        return Err(SafetensorsError::SizeOverflow { name, shape });
    };
    if n_bits % 8 != 0 {
        return Err(bad(&name, format!("{dtype} {shape:?} is not a whole number of bytes")));
    }
    let expected = n_bits / 8;
    if end - begin != expected {
        return Err(SafetensorsError::SizeMismatch { name, dtype, shape, expected, actual: end - begin });
    }
    Ok(TensorEntry { name, dtype, shape, data_offsets: offsets })
}
