//! GGUF metadata values: the 13 value types of the GGUF spec, arrays kept typed so that a
//! 262k-entry vocabulary is one `Vec<String>` and its scores one `Vec<f32>`.

use std::fmt;

/// GGUF value type ids (`enum gguf_type` in ggml/include/gguf.h).
pub mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;

    /// The spec's name for a value type id (`"u32"`, `"string"`, …), `None` if unknown.
    pub fn name(id: u32) -> Option<&'static str> {
        Some(match id {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            BOOL => "bool",
            STRING => "string",
            ARRAY => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
            _ => return None,
        })
    }

    /// Bytes one value of a fixed-size type takes; `None` for string and array.
    pub fn fixed_size(id: u32) -> Option<u64> {
        Some(match id {
            U8 | I8 | BOOL => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            _ => return None,
        })
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetadataArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: all elements share one type. Nested arrays hold inner arrays that may
/// each have their own element type (as gguf-py writes them).
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    /// A string array with at least one element that is not valid UTF-8, every element
    /// kept as its raw bytes. GGUF strings are bytes (llama.cpp reads them as such) and
    /// some real vocabularies hold pieces that are partial characters.
    ByteStrings(Vec<Vec<u8>>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Array(Vec<MetadataArray>),
}

impl MetadataValue {
    /// The GGUF value type id written before this value.
    pub fn type_id(&self) -> u32 {
        match self {
            MetadataValue::U8(_) => type_id::U8,
            MetadataValue::I8(_) => type_id::I8,
            MetadataValue::U16(_) => type_id::U16,
            MetadataValue::I16(_) => type_id::I16,
            MetadataValue::U32(_) => type_id::U32,
            MetadataValue::I32(_) => type_id::I32,
            MetadataValue::F32(_) => type_id::F32,
            MetadataValue::Bool(_) => type_id::BOOL,
            MetadataValue::String(_) => type_id::STRING,
            MetadataValue::Array(_) => type_id::ARRAY,
            MetadataValue::U64(_) => type_id::U64,
            MetadataValue::I64(_) => type_id::I64,
            MetadataValue::F64(_) => type_id::F64,
        }
    }

    /// The spec's name of this value's type (`"u32"`, `"array"`, …).
    pub fn type_name(&self) -> &'static str {
        type_id::name(self.type_id()).unwrap_or("?")
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer value that is non-negative, widened to `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::U64(v) => Some(v),
            MetadataValue::I8(v) => u64::try_from(v).ok(),
            MetadataValue::I16(v) => u64::try_from(v).ok(),
            MetadataValue::I32(v) => u64::try_from(v).ok(),
            MetadataValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::U64(v) => i64::try_from(v).ok(),
            MetadataValue::I8(v) => Some(v.into()),
            MetadataValue::I16(v) => Some(v.into()),
            MetadataValue::I32(v) => Some(v.into()),
            MetadataValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// A float value as `f64` (f32 widened exactly), or an integer converted.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64).or_else(|| self.as_u64().map(|v| v as f64)),
        }
    }

    /// A float value as `f32` (f64 rounded), or an integer converted.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetadataValue::F32(v) => Some(v),
            _ => self.as_f64().map(|v| v as f32),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            MetadataValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl MetadataArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetadataArray::U8(v) => v.len(),
            MetadataArray::I8(v) => v.len(),
            MetadataArray::U16(v) => v.len(),
            MetadataArray::I16(v) => v.len(),
            MetadataArray::U32(v) => v.len(),
            MetadataArray::I32(v) => v.len(),
            MetadataArray::F32(v) => v.len(),
            MetadataArray::Bool(v) => v.len(),
            MetadataArray::String(v) => v.len(),
            MetadataArray::ByteStrings(v) => v.len(),
            MetadataArray::U64(v) => v.len(),
            MetadataArray::I64(v) => v.len(),
            MetadataArray::F64(v) => v.len(),
            MetadataArray::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GGUF value type id of the elements.
    pub fn element_type_id(&self) -> u32 {
        match self {
            MetadataArray::U8(_) => type_id::U8,
            MetadataArray::I8(_) => type_id::I8,
            MetadataArray::U16(_) => type_id::U16,
            MetadataArray::I16(_) => type_id::I16,
            MetadataArray::U32(_) => type_id::U32,
            MetadataArray::I32(_) => type_id::I32,
            MetadataArray::F32(_) => type_id::F32,
            MetadataArray::Bool(_) => type_id::BOOL,
            MetadataArray::String(_) | MetadataArray::ByteStrings(_) => type_id::STRING,
            MetadataArray::U64(_) => type_id::U64,
            MetadataArray::I64(_) => type_id::I64,
            MetadataArray::F64(_) => type_id::F64,
            MetadataArray::Array(_) => type_id::ARRAY,
        }
    }

    /// The spec's name of the element type (`"string"`, `"f32"`, …).
    pub fn element_type_name(&self) -> &'static str {
        type_id::name(self.element_type_id()).unwrap_or("?")
    }

    pub fn as_u8s(&self) -> Option<&[u8]> {
        match self {
            MetadataArray::U8(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i8s(&self) -> Option<&[i8]> {
        match self {
            MetadataArray::I8(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_u16s(&self) -> Option<&[u16]> {
        match self {
            MetadataArray::U16(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i16s(&self) -> Option<&[i16]> {
        match self {
            MetadataArray::I16(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_u32s(&self) -> Option<&[u32]> {
        match self {
            MetadataArray::U32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i32s(&self) -> Option<&[i32]> {
        match self {
            MetadataArray::I32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_f32s(&self) -> Option<&[f32]> {
        match self {
            MetadataArray::F32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bools(&self) -> Option<&[bool]> {
        match self {
            MetadataArray::Bool(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            MetadataArray::String(v) => Some(v),
            _ => None,
        }
    }
    /// The elements of a string array as bytes, whether or not they are all UTF-8.
    pub fn as_byte_strings(&self) -> Option<Vec<&[u8]>> {
        match self {
            MetadataArray::String(v) => Some(v.iter().map(|s| s.as_bytes()).collect()),
            MetadataArray::ByteStrings(v) => Some(v.iter().map(Vec::as_slice).collect()),
            _ => None,
        }
    }
    pub fn as_u64s(&self) -> Option<&[u64]> {
        match self {
            MetadataArray::U64(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i64s(&self) -> Option<&[i64]> {
        match self {
            MetadataArray::I64(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_f64s(&self) -> Option<&[f64]> {
        match self {
            MetadataArray::F64(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_arrays(&self) -> Option<&[MetadataArray]> {
        match self {
            MetadataArray::Array(v) => Some(v),
            _ => None,
        }
    }

    /// Integer elements widened to `i64` (any integer element type; `None` for floats,
    /// strings, bools, nested arrays, or a u64 element above `i64::MAX`). Useful where
    /// writers disagree on the width, e.g. `token_type` as i32 or u32.
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        fn widen<T: Copy>(v: &[T], f: impl Fn(T) -> Option<i64>) -> Option<Vec<i64>> {
            v.iter().map(|&x| f(x)).collect()
        }
        match self {
            MetadataArray::U8(v) => widen(v, |x| Some(x.into())),
            MetadataArray::I8(v) => widen(v, |x| Some(x.into())),
            MetadataArray::U16(v) => widen(v, |x| Some(x.into())),
            MetadataArray::I16(v) => widen(v, |x| Some(x.into())),
            MetadataArray::U32(v) => widen(v, |x| Some(x.into())),
            MetadataArray::I32(v) => widen(v, |x| Some(x.into())),
            MetadataArray::U64(v) => widen(v, |x| i64::try_from(x).ok()),
            MetadataArray::I64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Float or integer elements converted to `f32` (`None` for strings, bools, arrays).
    pub fn to_f32s(&self) -> Option<Vec<f32>> {
        match self {
            MetadataArray::F32(v) => Some(v.clone()),
            MetadataArray::F64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            _ => self.to_i64s().map(|v| v.into_iter().map(|x| x as f32).collect()),
        }
    }
}

/// Short, human-sized rendering: scalars in full, strings quoted, arrays as
/// `[string; 49152] ["<unk>", "<s>", …]` with at most 4 elements shown.
impl fmt::Display for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataValue::U8(v) => write!(f, "{v}"),
            MetadataValue::I8(v) => write!(f, "{v}"),
            MetadataValue::U16(v) => write!(f, "{v}"),
            MetadataValue::I16(v) => write!(f, "{v}"),
            MetadataValue::U32(v) => write!(f, "{v}"),
            MetadataValue::I32(v) => write!(f, "{v}"),
            MetadataValue::F32(v) => write!(f, "{v}"),
            MetadataValue::Bool(v) => write!(f, "{v}"),
            MetadataValue::String(v) => write!(f, "{v:?}"),
            MetadataValue::Array(a) => write!(f, "{a}"),
            MetadataValue::U64(v) => write!(f, "{v}"),
            MetadataValue::I64(v) => write!(f, "{v}"),
            MetadataValue::F64(v) => write!(f, "{v}"),
        }
    }
}

impl fmt::Display for MetadataArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 4;
        fn items<T: fmt::Debug>(f: &mut fmt::Formatter<'_>, v: &[T]) -> fmt::Result {
            f.write_str(" [")?;
            for (i, x) in v.iter().take(SHOWN).enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{x:?}")?;
            }
            if v.len() > SHOWN {
                f.write_str(", …")?;
            }
            f.write_str("]")
        }
        write!(f, "[{}; {}]", self.element_type_name(), self.len())?;
        match self {
            MetadataArray::U8(v) => items(f, v),
            MetadataArray::I8(v) => items(f, v),
            MetadataArray::U16(v) => items(f, v),
            MetadataArray::I16(v) => items(f, v),
            MetadataArray::U32(v) => items(f, v),
            MetadataArray::I32(v) => items(f, v),
            MetadataArray::F32(v) => items(f, v),
            MetadataArray::Bool(v) => items(f, v),
            MetadataArray::String(v) => items(f, v),
            MetadataArray::ByteStrings(v) => items(f, &v.iter().map(|b| EscapedBytes(b)).collect::<Vec<_>>()),
            MetadataArray::U64(v) => items(f, v),
            MetadataArray::I64(v) => items(f, v),
            MetadataArray::F64(v) => items(f, v),
            MetadataArray::Array(v) => {
                f.write_str(" [")?;
                for (i, inner) in v.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{inner}")?;
                }
                if v.len() > SHOWN {
                    f.write_str(", …")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Bytes shown as a quoted string: valid UTF-8 as text (escaped like `{:?}`), other
/// bytes as `\xHH`.
pub struct EscapedBytes<'a>(pub &'a [u8]);

impl fmt::Debug for EscapedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                write!(f, "{}", c.escape_debug())?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn integer_accessors_widen_and_reject_out_of_range() {
        assert_eq!(MetadataValue::U8(7).as_u64(), Some(7));
        assert_eq!(MetadataValue::I32(-1).as_u64(), None);
        assert_eq!(MetadataValue::I32(-1).as_i64(), Some(-1));
        assert_eq!(MetadataValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetadataValue::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(MetadataValue::F32(1.5).as_u64(), None);
        assert_eq!(MetadataValue::Bool(true).as_u64(), None);
    }

    #[test]
    fn float_accessors_convert() {
        assert_eq!(MetadataValue::F32(1e6).as_f32(), Some(1e6));
        assert_eq!(MetadataValue::F64(0.5).as_f32(), Some(0.5));
        assert_eq!(MetadataValue::U32(10000).as_f32(), Some(10000.0));
        assert_eq!(MetadataValue::I8(-3).as_f64(), Some(-3.0));
        assert_eq!(MetadataValue::U64(u64::MAX).as_f64(), Some(u64::MAX as f64));
        assert_eq!(MetadataValue::String("1".into()).as_f32(), None);
    }

    #[test]
    fn array_accessors_and_display() {
        let a = MetadataArray::String(vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()]);
        assert_eq!(a.len(), 5);
        assert_eq!(a.element_type_name(), "string");
        assert_eq!(a.as_strings().map(|s| s.len()), Some(5));
        assert_eq!(a.as_f32s(), None);
        assert_eq!(a.to_string(), r#"[string; 5] ["a", "b", "c", "d", …]"#);
        let n = MetadataArray::Array(vec![MetadataArray::U8(vec![1]), MetadataArray::F32(vec![])]);
        assert_eq!(n.to_string(), "[array; 2] [[u8; 1] [1], [f32; 0] []]");
        assert_eq!(MetadataArray::U32(vec![1, 2]).to_i64s(), Some(vec![1, 2]));
        assert_eq!(MetadataArray::U64(vec![u64::MAX]).to_i64s(), None);
        assert_eq!(MetadataArray::I32(vec![-2]).to_f32s(), Some(vec![-2.0]));
    }
}
