//! Importance matrices: per weight matrix, the mean squared activation of each input column
//! over a calibration text, which steers quantization toward the columns that matter.
//!
//! Two file formats, both as llama.cpp reads them (common/imatrix-loader.cpp at 0c1e570):
//! - GGUF (`general.type = "imatrix"`): per weight `W`, tensors `W.in_sum2` (F32
//!   `[ne0, n_mat]`, raw Σx² per column, one row per expert) and `W.counts` (F32 `[1, n_mat]`,
//!   tokens seen per matrix), with `imatrix.datasets`, `imatrix.chunk_count` and
//!   `imatrix.chunk_size`;
//! - legacy `.dat`: `i32 n_entries`, then per entry `i32 len, name, i32 ncall, i32 nval,
//!   f32 values[nval]` (values already multiplied out to `mean · ncall`), then optionally
//!   `i32 last_chunk, i32 len, dataset`.
//!
//! Either way, what quantization uses is the mean: Σx² / count per column (llama-quantize
//! `load_imatrix`), 1.0 where a matrix saw no tokens.

use std::collections::BTreeMap;
use std::path::Path;

use owl_formats::gguf::{GgmlType, GgufFile, GgufWriter, MetadataArray, MetadataValue};

use crate::error::ConvertError;

/// One weight matrix's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// Σx² per input column, `n_mat` blocks of `ne0` (experts one after another).
    pub sums: Vec<f32>,
    /// Tokens per matrix (`n_mat` values; legacy files: one, the call count).
    pub counts: Vec<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imatrix {
    pub entries: BTreeMap<String, ImatrixEntry>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
    /// Read from a legacy `.dat` file (whose values are pre-multiplied by the call count).
    pub legacy: bool,
}

fn bad(path: &Path, reason: impl Into<String>) -> ConvertError {
    ConvertError::Imatrix { path: path.to_path_buf(), reason: reason.into() }
}

impl Imatrix {
    /// Reads either format (GGUF is recognised by its magic).
    pub fn read(path: &Path) -> Result<Imatrix, ConvertError> {
        let bytes =
            std::fs::read(path).map_err(|source| ConvertError::Io { action: "read", path: path.into(), source })?;
        if bytes.starts_with(b"GGUF") {
            let file = GgufFile::from_bytes(bytes).map_err(|e| bad(path, e.to_string()))?;
            Imatrix::from_gguf(path, &file)
        } else {
            Imatrix::from_legacy(path, &bytes)
        }
    }

    fn from_gguf(path: &Path, file: &GgufFile) -> Result<Imatrix, ConvertError> {
        let mut m = Imatrix::default();
        match file.get("imatrix.datasets") {
            Some(MetadataValue::Array(MetadataArray::String(v))) => m.datasets = v.clone(),
            Some(_) => return Err(bad(path, "imatrix.datasets is not a string array")),
            None => {}
        }
        let has_meta = file.get("imatrix.datasets").is_some()
            && file.get("imatrix.chunk_count").is_some()
            && file.get("imatrix.chunk_size").is_some();
        if !has_meta {
            // llama-quantize refuses these too (tools/quantize: "missing imatrix metadata").
            return Err(bad(path, "missing imatrix.datasets, imatrix.chunk_count or imatrix.chunk_size"));
        }
        let u32_key = |k: &str| {
            file.get_u64(k).and_then(|v| u32::try_from(v).ok()).ok_or_else(|| bad(path, format!("{k} is not a u32")))
        };
        m.chunk_count = u32_key("imatrix.chunk_count")?;
        m.chunk_size = u32_key("imatrix.chunk_size")?;
        let f32s = |name: &str| -> Result<(Vec<f32>, Vec<u64>), ConvertError> {
            let t = file.tensor(name).ok_or_else(|| bad(path, format!("{name} is missing")))?;
            if t.ggml_type != GgmlType::F32 {
                return Err(bad(path, format!("{name} is {}, expected F32", t.ggml_type)));
            }
            let data = file.tensor_data(t);
            Ok((data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), t.shape.clone()))
        };
        for t in file.tensors() {
            let (name, kind) = match (t.name.strip_suffix(".in_sum2"), t.name.strip_suffix(".counts")) {
                (Some(n), _) => (n, 0),
                (_, Some(n)) => (n, 1),
                _ => return Err(bad(path, format!("tensor {} is neither .in_sum2 nor .counts", t.name))),
            };
            if kind == 1 || m.entries.contains_key(name) {
                continue;
            }
            let (sums, shape) = f32s(&t.name)?;
            let (counts, cshape) = f32s(&format!("{name}.counts"))?;
            let n_mat = shape.get(1).copied().unwrap_or(1);
            if counts.len() as u64 != n_mat || cshape.first() != Some(&1) {
                return Err(bad(path, format!("{name}: {} counts for {n_mat} matrices", counts.len())));
            }
            if sums.iter().any(|v| !v.is_finite()) {
                return Err(bad(path, format!("{name}: non-finite values")));
            }
            let counts = counts.iter().map(|&c| c.round() as i64).collect();
            m.entries.insert(name.to_string(), ImatrixEntry { sums, counts });
        }
        for t in file.tensors() {
            if let Some(n) = t.name.strip_suffix(".counts") {
                if !m.entries.contains_key(n) {
                    return Err(bad(path, format!("{} has no {n}.in_sum2", t.name)));
                }
            }
        }
        if m.entries.is_empty() {
            return Err(bad(path, "no entries"));
        }
        Ok(m)
    }

    fn from_legacy(path: &Path, bytes: &[u8]) -> Result<Imatrix, ConvertError> {
        let mut m = Imatrix { legacy: true, ..Imatrix::default() };
        let mut pos = 0usize;
        let take = |pos: &mut usize, len: usize, what: &str| -> Result<&[u8], ConvertError> {
            let end = pos.checked_add(len).filter(|&e| e <= bytes.len());
            let end = end.ok_or_else(|| bad(path, format!("truncated at byte {pos} ({what})")))?;
            let s = &bytes[*pos..end];
            *pos = end;
            Ok(s)
        };
        let read_i32 = |pos: &mut usize, what: &str| -> Result<i32, ConvertError> {
            let b = take(pos, 4, what)?;
            Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let n = read_i32(&mut pos, "entry count")?;
        if n < 1 {
            return Err(bad(path, format!("{n} entries (not an imatrix file?)")));
        }
        for e in 0..n {
            let len = read_i32(&mut pos, "name length")?;
            let len = usize::try_from(len).map_err(|_| bad(path, format!("entry {e}: name length {len}")))?;
            let name = String::from_utf8(take(&mut pos, len, "name")?.to_vec())
                .map_err(|_| bad(path, format!("entry {e}: name is not UTF-8")))?;
            let ncall = read_i32(&mut pos, "call count")?;
            let nval = read_i32(&mut pos, "value count")?;
            if nval < 1 {
                return Err(bad(path, format!("{name}: {nval} values")));
            }
            // Bounded by the file: take() checks before anything is allocated.
            let raw = take(&mut pos, nval as usize * 4, "values")?;
            let sums: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if sums.iter().any(|v| !v.is_finite()) {
                return Err(bad(path, format!("{name}: non-finite values")));
            }
            m.entries.insert(name, ImatrixEntry { sums, counts: vec![i64::from(ncall)] });
        }
        if pos < bytes.len() {
            let last = read_i32(&mut pos, "chunk count")?;
            let len = read_i32(&mut pos, "dataset length")?;
            let len = usize::try_from(len).map_err(|_| bad(path, format!("dataset name length {len}")))?;
            let name = String::from_utf8_lossy(take(&mut pos, len, "dataset")?).into_owned();
            m.chunk_count = u32::try_from(last).unwrap_or(0);
            if !name.is_empty() {
                m.datasets.push(name);
            }
        }
        Ok(m)
    }

    /// The per-column means quantization uses for weight `name` (`ne0 · n_mat` values), as
    /// llama-quantize normalizes them.
    pub fn importance(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        if self.legacy {
            let ncall = e.counts.first().copied().unwrap_or(0);
            return Some(if ncall > 0 { e.sums.iter().map(|&s| s / ncall as f32).collect() } else { e.sums.clone() });
        }
        let n_mat = e.counts.len().max(1);
        let ne0 = e.sums.len() / n_mat;
        let mut out = Vec::with_capacity(e.sums.len());
        for (j, block) in e.sums.chunks(ne0.max(1)).enumerate() {
            let c = e.counts.get(j).copied().unwrap_or(0);
            if c > 0 {
                out.extend(block.iter().map(|&s| s / c as f32));
            } else {
                out.extend(std::iter::repeat_n(1.0, block.len()));
            }
        }
        Some(out)
    }

    /// Writes the GGUF format (entries sorted by name), atomically.
    pub fn write_gguf(&self, path: &Path) -> Result<(), ConvertError> {
        let mut w = GgufWriter::new();
        w.set_metadata("general.type", MetadataValue::String("imatrix".into()));
        w.set_metadata("imatrix.datasets", MetadataValue::Array(MetadataArray::String(self.datasets.clone())));
        w.set_metadata("imatrix.chunk_count", MetadataValue::U32(self.chunk_count));
        w.set_metadata("imatrix.chunk_size", MetadataValue::U32(self.chunk_size));
        for (name, e) in &self.entries {
            let n_mat = e.counts.len().max(1) as u64;
            let ne0 = e.sums.len() as u64 / n_mat;
            let sums: Vec<u8> = e.sums.iter().flat_map(|v| v.to_le_bytes()).collect();
            let counts: Vec<u8> = e.counts.iter().flat_map(|&c| (c as f32).to_le_bytes()).collect();
            w.add_tensor(format!("{name}.in_sum2"), vec![ne0, n_mat], GgmlType::F32, sums)?;
            w.add_tensor(format!("{name}.counts"), vec![1, n_mat], GgmlType::F32, counts)?;
        }
        w.write_file(path)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn legacy_bytes(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(ncall.to_le_bytes());
            b.extend((vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend(v.to_le_bytes());
            }
        }
        if let Some((last, ds)) = trailer {
            b.extend(last.to_le_bytes());
            b.extend((ds.len() as i32).to_le_bytes());
            b.extend(ds.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_files_normalize_by_their_call_count() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.dat");
        std::fs::write(&p, legacy_bytes(&[("blk.0.ffn_down.weight", 4, &[8.0, 2.0])], Some((10, "wiki.txt")))).unwrap();
        let m = Imatrix::read(&p).unwrap();
        assert!(m.legacy);
        assert_eq!(m.importance("blk.0.ffn_down.weight").unwrap(), [2.0, 0.5]);
        assert_eq!((m.chunk_count, m.datasets.as_slice()), (10, &["wiki.txt".to_string()][..]));
        assert_eq!(m.importance("blk.1.ffn_down.weight"), None);
    }

    #[test]
    fn gguf_files_round_trip_and_normalize_per_expert() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.gguf");
        let mut m =
            Imatrix { datasets: vec!["calib.txt".into()], chunk_count: 3, chunk_size: 512, ..Imatrix::default() };
        m.entries.insert(
            "blk.0.ffn_up_exps.weight".into(),
            ImatrixEntry { sums: vec![4.0, 8.0, 1.0, 1.0], counts: vec![4, 0] },
        );
        m.write_gguf(&p).unwrap();
        let back = Imatrix::read(&p).unwrap();
        assert_eq!(back, m);
        // Expert 1 saw no tokens: llama-quantize uses 1.0 for it.
        assert_eq!(back.importance("blk.0.ffn_up_exps.weight").unwrap(), [1.0, 2.0, 1.0, 1.0]);
    }

    #[test]
    fn malformed_files_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("bad.dat");
        for bytes in [
            vec![],
            0i32.to_le_bytes().to_vec(),
            legacy_bytes(&[("x", 1, &[1.0])], None)[..10].to_vec(),
            // A value count far beyond the file: refused before allocating.
            {
                let mut b = legacy_bytes(&[("x", 1, &[1.0])], None);
                b[13..17].copy_from_slice(&i32::MAX.to_le_bytes());
                b
            },
            legacy_bytes(&[("x", 1, &[f32::NAN])], None),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            let err = Imatrix::read(&p).unwrap_err().to_string();
            assert!(err.contains("bad.dat"), "{err}");
        }
    }
}
