//! Shared helpers of the GGUF tests: a small valid file with every metadata value type,
//! an FNV-1a fingerprint (computed the same way in the Python that produced the expected
//! values), and a `Write` that compares against expected bytes instead of storing them.

use std::io::{self, Write};

use owl_formats::gguf::{GgmlType, GgufWriter, MetadataArray, MetadataValue};

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A small valid GGUF v3 file: every value type, a nested array, a consistent tokenizer
/// triple, and three tensors (Q8_0, F16, F32). The last tensor is exactly 32 bytes, so
/// the file ends at a tensor's last byte and every shorter prefix is invalid.
pub fn small_valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", MetadataValue::String("llama".into()));
    w.set_metadata("general.alignment", MetadataValue::U32(32));
    w.set_metadata("t.u8", MetadataValue::U8(200));
    w.set_metadata("t.i8", MetadataValue::I8(-100));
    w.set_metadata("t.u16", MetadataValue::U16(60000));
    w.set_metadata("t.i16", MetadataValue::I16(-30000));
    w.set_metadata("t.u32", MetadataValue::U32(4_000_000_000));
    w.set_metadata("t.i32", MetadataValue::I32(-2_000_000_000));
    w.set_metadata("t.f32", MetadataValue::F32(0.25));
    w.set_metadata("t.bool", MetadataValue::Bool(true));
    w.set_metadata("t.u64", MetadataValue::U64(u64::MAX));
    w.set_metadata("t.i64", MetadataValue::I64(i64::MIN));
    w.set_metadata("t.f64", MetadataValue::F64(-1.5e300));
    w.set_metadata("t.utf8", MetadataValue::String("héllo ▁wörld 🦉".into()));
    w.set_metadata(
        "t.nested",
        MetadataValue::Array(MetadataArray::Array(vec![
            MetadataArray::I64(vec![1, -2]),
            MetadataArray::String(vec!["x".into()]),
            MetadataArray::Bool(vec![false, true]),
            MetadataArray::F64(vec![]),
        ])),
    );
    w.set_metadata(
        "tokenizer.ggml.tokens",
        MetadataValue::Array(MetadataArray::String(vec!["<s>".into(), "a".into(), "b".into()])),
    );
    w.set_metadata("tokenizer.ggml.scores", MetadataValue::Array(MetadataArray::F32(vec![0.0, -1.0, -2.0])));
    w.set_metadata("tokenizer.ggml.token_type", MetadataValue::Array(MetadataArray::I32(vec![3, 1, 1])));
    let q8: Vec<u8> = (0..34 * 2).map(|i| i as u8).collect();
    w.add_tensor("blk.0.w", vec![32, 2], GgmlType::Q8_0, q8).expect("q8 tensor");
    let f16: Vec<u8> = (0..2 * 6).map(|i| (i * 7) as u8).collect();
    w.add_tensor("blk.0.h", vec![3, 2], GgmlType::F16, f16).expect("f16 tensor");
    let f32: Vec<u8> = (0..8u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("norm", vec![8], GgmlType::F32, f32).expect("f32 tensor");
    let mut out = Vec::new();
    w.write_to(&mut out).expect("write small file");
    out
}

/// A `Write` that checks every byte against `expected` (no copy of the output is kept).
pub struct CompareWriter<'a> {
    pub expected: &'a [u8],
    pub pos: usize,
}

impl Write for CompareWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.pos + buf.len();
        let Some(want) = self.expected.get(self.pos..end) else {
            return Err(io::Error::other(format!(
                "output longer than expected: {end} > {} bytes",
                self.expected.len()
            )));
        };
        if want != buf {
            let i = want.iter().zip(buf).position(|(a, b)| a != b).unwrap_or(0);
            return Err(io::Error::other(format!(
                "output differs at byte {}: wrote {:#04x}, expected {:#04x}",
                self.pos + i,
                buf[i],
                want[i]
            )));
        }
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
