//! Reading metadata values (scalars, strings, typed and nested arrays) from the cursor.

use super::cursor::Cursor;
use super::error::GgufError;
use super::value::type_id as t;
use super::value::{MetadataArray, MetadataValue};

/// Arrays of arrays deeper than this are refused: gguf-py writes at most 2 levels, and an
/// unbounded depth would let a small file exhaust the stack.
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// Smallest encoding of one element of a nested array: u32 type + u64 count.
const MIN_ARRAY_BYTES: u64 = 12;
/// Smallest encoding of a string: its u64 length.
const MIN_STRING_BYTES: u64 = 8;

/// Reads a value of type `type_id` (already read at `type_offset`).
pub(crate) fn read_value(
    c: &mut Cursor<'_>,
    type_id: u32,
    type_offset: u64,
    field: &dyn Fn() -> String,
) -> Result<MetadataValue, GgufError> {
    Ok(match type_id {
        t::U8 => MetadataValue::U8(c.u8(field)?),
        t::I8 => MetadataValue::I8(c.u8(field)? as i8),
        t::U16 => MetadataValue::U16(u16::from_le_bytes(fixed::<2>(c, field)?)),
        t::I16 => MetadataValue::I16(i16::from_le_bytes(fixed::<2>(c, field)?)),
        t::U32 => MetadataValue::U32(c.u32(field)?),
        t::I32 => MetadataValue::I32(c.u32(field)? as i32),
        t::F32 => MetadataValue::F32(f32::from_bits(c.u32(field)?)),
        t::BOOL => {
            let offset = c.pos();
            MetadataValue::Bool(bool_from_byte(c.u8(field)?, field, offset)?)
        }
        t::STRING => MetadataValue::String(c.string(field)?),
        t::ARRAY => MetadataValue::Array(read_array(c, field, 1)?),
        t::U64 => MetadataValue::U64(c.u64(field)?),
        t::I64 => MetadataValue::I64(c.u64(field)? as i64),
        t::F64 => MetadataValue::F64(f64::from_bits(c.u64(field)?)),
        _ => {
            return Err(GgufError::UnknownValueType {
                field: format!("{} (value type)", field()),
                offset: type_offset,
                type_id,
            })
        }
    })
}

fn fixed<const N: usize>(c: &mut Cursor<'_>, field: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
    let bytes = c.take(N as u64, field)?;
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    Ok(out)
}

fn bool_from_byte(b: u8, field: impl FnOnce() -> String, offset: u64) -> Result<bool, GgufError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(GgufError::InvalidBool { field: field(), offset, value }),
    }
}

/// An array body: u32 element type, u64 count, elements. `depth` is 1 for a top-level array.
fn read_array(c: &mut Cursor<'_>, field: &dyn Fn() -> String, depth: u32) -> Result<MetadataArray, GgufError> {
    let type_offset = c.pos();
    let elem_type = c.u32(|| format!("{} (array element type)", field()))?;
    let count_offset = c.pos();
    let n = c.u64(|| format!("{} (array length)", field()))?;
    let count_field = || format!("{} (array length)", field());

    // Fixed-size elements: one bounds check, one read, then a tight conversion loop.
    macro_rules! numbers {
        ($variant:ident, $ty:ty, $size:expr) => {{
            c.check_count(n, $size, count_offset, count_field)?;
            let bytes = c.take(n * $size, field)?;
            MetadataArray::$variant(
                bytes
                    .chunks_exact($size)
                    .map(|ch| {
                        let mut a = [0u8; $size];
                        a.copy_from_slice(ch);
                        <$ty>::from_le_bytes(a)
                    })
                    .collect(),
            )
        }};
    }

    Ok(match elem_type {
        t::U8 => numbers!(U8, u8, 1),
        t::I8 => numbers!(I8, i8, 1),
        t::U16 => numbers!(U16, u16, 2),
        t::I16 => numbers!(I16, i16, 2),
        t::U32 => numbers!(U32, u32, 4),
        t::I32 => numbers!(I32, i32, 4),
        t::F32 => numbers!(F32, f32, 4),
        t::U64 => numbers!(U64, u64, 8),
        t::I64 => numbers!(I64, i64, 8),
        t::F64 => numbers!(F64, f64, 8),
        t::BOOL => {
            c.check_count(n, 1, count_offset, count_field)?;
            let start = c.pos();
            let bytes = c.take(n, field)?;
            let mut out = Vec::with_capacity(bytes.len());
            for (i, &b) in bytes.iter().enumerate() {
                out.push(bool_from_byte(b, || format!("{} element {i}", field()), start + i as u64)?);
            }
            MetadataArray::Bool(out)
        }
        t::STRING => {
            c.check_count(n, MIN_STRING_BYTES, count_offset, count_field)?;
            // n * 8 <= remaining bytes, so n fits in usize and the capacity is bounded by the file.
            let mut raw: Vec<&[u8]> = Vec::with_capacity(n as usize);
            for i in 0..n {
                raw.push(c.byte_string(|| format!("{} element {i}", field()))?);
            }
            // Text when every element is UTF-8; raw bytes otherwise (as llama.cpp keeps them).
            match raw.iter().map(|b| std::str::from_utf8(b)).collect::<Result<Vec<&str>, _>>() {
                Ok(strings) => MetadataArray::String(strings.into_iter().map(str::to_owned).collect()),
                Err(_) => MetadataArray::ByteStrings(raw.into_iter().map(<[u8]>::to_vec).collect()),
            }
        }
        t::ARRAY => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep { field: field(), offset: type_offset, limit: MAX_ARRAY_DEPTH });
            }
            c.check_count(n, MIN_ARRAY_BYTES, count_offset, count_field)?;
            let mut out = Vec::with_capacity(n as usize);
            for i in 0..n {
                let inner = || format!("{} element {i}", field());
                out.push(read_array(c, &inner, depth + 1)?);
            }
            MetadataArray::Array(out)
        }
        _ => {
            return Err(GgufError::UnknownValueType {
                field: format!("{} (array element type)", field()),
                offset: type_offset,
                type_id: elem_type,
            })
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn array_bytes(elem_type: u32, n: u64, body: &[u8]) -> Vec<u8> {
        let mut b = elem_type.to_le_bytes().to_vec();
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(body);
        b
    }

    fn parse_array(bytes: &[u8]) -> Result<MetadataValue, GgufError> {
        read_value(&mut Cursor::new(bytes), t::ARRAY, 0, &|| "metadata \"k\"".to_string())
    }

    #[test]
    fn typed_arrays() {
        let v = parse_array(&array_bytes(t::F32, 2, &[0, 0, 128, 63, 0, 0, 0, 64])).unwrap();
        assert_eq!(v, MetadataValue::Array(MetadataArray::F32(vec![1.0, 2.0])));
        let v = parse_array(&array_bytes(t::I16, 1, &[0xff, 0xff])).unwrap();
        assert_eq!(v, MetadataValue::Array(MetadataArray::I16(vec![-1])));
    }

    #[test]
    fn nested_arrays_and_depth_limit() {
        let inner = array_bytes(t::U8, 2, &[7, 8]);
        let v = parse_array(&array_bytes(t::ARRAY, 1, &inner)).unwrap();
        assert_eq!(v, MetadataValue::Array(MetadataArray::Array(vec![MetadataArray::U8(vec![7, 8])])));

        let mut deep = array_bytes(t::U8, 0, &[]);
        for _ in 0..MAX_ARRAY_DEPTH {
            deep = array_bytes(t::ARRAY, 1, &deep);
        }
        let err = parse_array(&deep).unwrap_err().to_string();
        assert!(err.contains("nested deeper than 8"), "{err}");
    }

    #[test]
    fn huge_counts_are_refused_before_allocation() {
        for elem in [t::U64, t::STRING, t::ARRAY, t::BOOL] {
            let err = parse_array(&array_bytes(elem, u64::MAX / 2, &[0; 64])).unwrap_err();
            assert!(matches!(err, GgufError::CountTooLarge { offset: 4, .. }), "{err}");
        }
    }

    #[test]
    fn bad_bool_and_unknown_type() {
        let err = parse_array(&array_bytes(t::BOOL, 3, &[0, 1, 2])).unwrap_err().to_string();
        assert!(err.contains("element 2 at byte 14 is a bool with byte value 2"), "{err}");
        let err = parse_array(&array_bytes(13, 0, &[])).unwrap_err().to_string();
        assert!(err.contains("unknown GGUF value type 13"), "{err}");
    }
}
