//! How a tensor's stored bytes become f32 values: GGUF block formats through owl-kernels'
//! dequantizers, safetensors F32/F16/BF16 through owl-formats, and integer / F64 tensors
//! converted value by value, only when float32 holds every value exactly.

use anyhow::{anyhow, bail};

use owl_formats::gguf::GgmlType;
use owl_formats::safetensors::{Dtype, TensorView};
use owl_kernels::quant::dequantize_row;
use owl_kernels::BlockFormat;

/// How a tensor's stored bytes become f32 values.
pub(super) enum Elements<'a> {
    /// A GGUF block format, dequantized by owl-kernels a chunk of whole blocks at a time.
    Blocks { format: BlockFormat, data: &'a [u8] },
    /// safetensors F32 / F16 / BF16, converted by owl-formats.
    Floats(TensorView<'a>),
    /// Integers, every value checked up front to be exactly representable in f32.
    Ints { kind: IntKind, data: &'a [u8] },
    /// Little-endian f64, every value checked up front to be exactly representable in f32.
    F64(&'a [u8]),
}

/// Integer element types (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IntKind {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
}

impl IntKind {
    const fn bytes(self) -> usize {
        match self {
            Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 => 4,
            Self::I64 | Self::U64 => 8,
        }
    }
}

/// The values of `data`, `W` bytes each, decoded by `f`.
fn values<'d, const W: usize, T>(data: &'d [u8], f: impl Fn([u8; W]) -> T + 'd) -> impl Iterator<Item = T> + 'd {
    data.chunks_exact(W).map(move |c| {
        let mut a = [0u8; W];
        a.copy_from_slice(c);
        f(a)
    })
}

/// Evaluates `$body` with `$values` bound to an iterator over the integers of `$data`
/// widened to i128 (which holds every kind), so the match on the kind stays outside the
/// per-element loop.
macro_rules! with_ints {
    ($kind:expr, $data:expr, |$values:ident| $body:expr) => {
        match $kind {
            IntKind::I8 => {
                let $values = values::<1, i128>($data, |b| i128::from(i8::from_le_bytes(b)));
                $body
            }
            IntKind::U8 => {
                let $values = values::<1, i128>($data, |b| i128::from(u8::from_le_bytes(b)));
                $body
            }
            IntKind::I16 => {
                let $values = values::<2, i128>($data, |b| i128::from(i16::from_le_bytes(b)));
                $body
            }
            IntKind::U16 => {
                let $values = values::<2, i128>($data, |b| i128::from(u16::from_le_bytes(b)));
                $body
            }
            IntKind::I32 => {
                let $values = values::<4, i128>($data, |b| i128::from(i32::from_le_bytes(b)));
                $body
            }
            IntKind::U32 => {
                let $values = values::<4, i128>($data, |b| i128::from(u32::from_le_bytes(b)));
                $body
            }
            IntKind::I64 => {
                let $values = values::<8, i128>($data, |b| i128::from(i64::from_le_bytes(b)));
                $body
            }
            IntKind::U64 => {
                let $values = values::<8, i128>($data, |b| i128::from(u64::from_le_bytes(b)));
                $body
            }
        }
    };
}

/// The first integer that float32 cannot hold exactly, with its index. `f32 as i128` is
/// exact below 2^127, so the round trip cannot be fooled by saturation (i64::MAX rounds up
/// to 2^63 as an f32, which an `as i64` cast would clamp back to i64::MAX).
fn first_inexact_int(kind: IntKind, data: &[u8]) -> Option<(usize, String)> {
    with_ints!(kind, data, |ints| ints.enumerate().find(|&(_, v)| (v as f32) as i128 != v))
        .map(|(i, v)| (i, v.to_string()))
}

/// The first f64 that float32 cannot hold exactly, with its index. NaN and the infinities
/// carry over and count as exact.
fn first_inexact_f64(data: &[u8]) -> Option<(usize, String)> {
    values::<8, f64>(data, f64::from_le_bytes)
        .enumerate()
        .find(|&(_, v)| !v.is_nan() && f64::from(v as f32) != v)
        .map(|(i, v)| (i, v.to_string()))
}

/// The kernel format of a GGUF type (the same table as `owl_models::block_format`, kept
/// here so that the CLI does not build the model crate for this command).
fn block_format(t: GgmlType) -> Option<BlockFormat> {
    Some(match t {
        GgmlType::F32 => BlockFormat::F32,
        GgmlType::F16 => BlockFormat::F16,
        GgmlType::BF16 => BlockFormat::BF16,
        GgmlType::Q4_0 => BlockFormat::Q4_0,
        GgmlType::Q4_1 => BlockFormat::Q4_1,
        GgmlType::Q5_0 => BlockFormat::Q5_0,
        GgmlType::Q5_1 => BlockFormat::Q5_1,
        GgmlType::Q8_0 => BlockFormat::Q8_0,
        GgmlType::Q8_1 => BlockFormat::Q8_1,
        GgmlType::Q2_K => BlockFormat::Q2_K,
        GgmlType::Q3_K => BlockFormat::Q3_K,
        GgmlType::Q4_K => BlockFormat::Q4_K,
        GgmlType::Q5_K => BlockFormat::Q5_K,
        GgmlType::Q6_K => BlockFormat::Q6_K,
        GgmlType::Q8_K => BlockFormat::Q8_K,
        GgmlType::IQ4_NL => BlockFormat::IQ4_NL,
        GgmlType::IQ4_XS => BlockFormat::IQ4_XS,
        _ => return None,
    })
}

/// The GGUF types `owl tensor` reads, for error messages.
pub(super) fn supported_gguf_types() -> String {
    let mut names: Vec<&str> = GgmlType::ALL.iter().filter(|t| block_format(**t).is_some()).map(|t| t.name()).collect();
    names.extend(["I8", "I16", "I32", "I64", "F64"]);
    names.join(", ")
}

impl<'a> Elements<'a> {
    pub(super) fn gguf(name: &str, t: GgmlType, data: &'a [u8]) -> anyhow::Result<Elements<'a>> {
        if let Some(format) = block_format(t) {
            return Ok(Elements::Blocks { format, data });
        }
        let kind = match t {
            GgmlType::I8 => IntKind::I8,
            GgmlType::I16 => IntKind::I16,
            GgmlType::I32 => IntKind::I32,
            GgmlType::I64 => IntKind::I64,
            GgmlType::F64 => return Elements::f64(name, t.name(), data),
            _ => bail!(
                "tensor `{name}` has type {t}, which owl cannot dequantize (supported: {})",
                supported_gguf_types()
            ),
        };
        Elements::ints(name, t.name(), kind, data)
    }

    pub(super) fn safetensors(view: TensorView<'a>) -> anyhow::Result<Elements<'a>> {
        let kind = match view.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => return Ok(Elements::Floats(view)),
            Dtype::F64 => return Elements::f64(view.name, view.dtype.name(), view.data),
            Dtype::I8 => IntKind::I8,
            Dtype::U8 => IntKind::U8,
            Dtype::I16 => IntKind::I16,
            Dtype::U16 => IntKind::U16,
            Dtype::I32 => IntKind::I32,
            Dtype::U32 => IntKind::U32,
            Dtype::I64 => IntKind::I64,
            Dtype::U64 => IntKind::U64,
            other => bail!(
                "tensor `{}` has dtype {other}, which owl cannot convert to float32 \
                 (supported: F32, F16, BF16, F64, I8, U8, I16, U16, I32, U32, I64, U64)",
                view.name
            ),
        };
        Elements::ints(view.name, view.dtype.name(), kind, view.data)
    }

    /// Integers, refused before anything is written if one would change in f32.
    fn ints(name: &str, type_name: &str, kind: IntKind, data: &'a [u8]) -> anyhow::Result<Elements<'a>> {
        if let Some((index, value)) = first_inexact_int(kind, data) {
            return Err(inexact(name, type_name, index, &value));
        }
        Ok(Elements::Ints { kind, data })
    }

    /// F64 values, refused before anything is written if one would change in f32.
    fn f64(name: &str, type_name: &str, data: &'a [u8]) -> anyhow::Result<Elements<'a>> {
        if let Some((index, value)) = first_inexact_f64(data) {
            return Err(inexact(name, type_name, index, &value));
        }
        Ok(Elements::F64(data))
    }

    /// Decodes `out.len()` elements starting at element `start`. `start` is a multiple of
    /// [`super::CHUNK_ELEMS`] and `out.len()` whole blocks (every tensor holds whole blocks).
    pub(super) fn decode(&self, start: usize, out: &mut [f32]) -> anyhow::Result<()> {
        let ends_early = || anyhow!("data ends early at element {start}");
        match self {
            Elements::Blocks { format, data } => {
                let from = start / format.block_elems() * format.block_bytes();
                let bytes =
                    format.row_bytes(out.len()).and_then(|n| data.get(from..from + n)).ok_or_else(ends_early)?;
                dequantize_row(*format, bytes, out)?;
            }
            Elements::Floats(view) => {
                let width = view.dtype.bits() / 8;
                let shape = [out.len()];
                let part = TensorView {
                    shape: &shape,
                    data: view.data.get(start * width..(start + out.len()) * width).ok_or_else(ends_early)?,
                    ..*view
                };
                part.to_f32_into(out)?;
            }
            Elements::Ints { kind, data } => {
                let w = kind.bytes();
                let bytes = data.get(start * w..(start + out.len()) * w).ok_or_else(ends_early)?;
                with_ints!(*kind, bytes, |ints| {
                    for (o, v) in out.iter_mut().zip(ints) {
                        *o = v as f32;
                    }
                });
            }
            Elements::F64(data) => {
                let bytes = data.get(start * 8..(start + out.len()) * 8).ok_or_else(ends_early)?;
                for (o, v) in out.iter_mut().zip(values::<8, f64>(bytes, f64::from_le_bytes)) {
                    *o = v as f32;
                }
            }
        }
        Ok(())
    }
}

fn inexact(name: &str, type_name: &str, index: usize, value: &str) -> anyhow::Error {
    anyhow!(
        "tensor `{name}` ({type_name}) holds {value} at index {index}, which float32 cannot \
         represent exactly"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a whole small tensor.
    fn decode_all(e: &Elements, n: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n];
        e.decode(0, &mut out).expect("decodes");
        out
    }

    fn le<const W: usize, T: Copy>(values: &[T], f: impl Fn(T) -> [u8; W]) -> Vec<u8> {
        values.iter().flat_map(|&v| f(v)).collect()
    }

    #[test]
    fn exactness_of_integer_and_f64_values() {
        let i32s = le(&[0i32, -5, 1 << 24, -(1 << 24), 1 << 30], i32::to_le_bytes);
        assert_eq!(first_inexact_int(IntKind::I32, &i32s), None);
        let e = Elements::ints("t", "I32", IntKind::I32, &i32s).expect("exact");
        assert_eq!(decode_all(&e, 5), [0.0, -5.0, 16_777_216.0, -16_777_216.0, 1_073_741_824.0]);
        let bad = le(&[3i32, (1 << 24) + 1], i32::to_le_bytes);
        assert_eq!(first_inexact_int(IntKind::I32, &bad), Some((1, "16777217".to_string())));
        let err = Elements::ints("pos", "I32", IntKind::I32, &bad).err().expect("inexact");
        assert_eq!(
            err.to_string(),
            "tensor `pos` (I32) holds 16777217 at index 1, which float32 cannot represent exactly"
        );
        assert_eq!(first_inexact_int(IntKind::I64, &i64::MAX.to_le_bytes()), Some((0, i64::MAX.to_string())));
        assert_eq!(first_inexact_int(IntKind::U64, &(1u64 << 63).to_le_bytes()), None);
        let e = Elements::ints("t", "I8", IntKind::I8, &[0x80, 0x7f]).expect("exact");
        assert_eq!(decode_all(&e, 2), [-128.0, 127.0]);
        let e = Elements::ints("t", "U16", IntKind::U16, &[0xff, 0xff, 1, 0]).expect("exact");
        assert_eq!(decode_all(&e, 2), [65535.0, 1.0]);

        let f64s = le(&[0.5f64, f64::NAN, f64::NEG_INFINITY, 0.1], f64::to_le_bytes);
        assert_eq!(first_inexact_f64(&f64s), Some((3, "0.1".to_string())));
        let e = Elements::f64("t", "F64", &f64s[..24]).expect("exact");
        let got = decode_all(&e, 3);
        assert_eq!(got[0], 0.5);
        assert!(got[1].is_nan());
        assert_eq!(got[2], f32::NEG_INFINITY);
    }
}
