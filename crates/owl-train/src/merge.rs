//! Baking adapters into a model: `W' = W + Σ_k s_k · c_k · B_k A_k` for every matrix they
//! modify, written as a GGUF file (what `llama-export-lora` does, and PEFT's
//! `merge_and_unload`). Each modified tensor is dequantized, changed in float32 and
//! quantized again to its own type, or to a llama-quantize mix (`--type`); the others are
//! copied as they are. Memory stays near one slab of rows (owl-convert's streaming).
//!
//! A Hugging Face directory is first converted to a GGUF of its own float type (F32, F16 or
//! BF16: exact), beside the output, and removed after.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use owl_convert::{
    convert, quantize, ConvertOptions, FileType, Progress, QuantizeOptions, QuantizeSummary, TensorEdit,
};
use owl_formats::safetensors::{Dtype, SafetensorsModel};
use owl_models::LoraAdapter;

use crate::adapter::{AdapterFile, AdapterSpec, Base, Lineage};
use crate::error::MergeError;

/// What `owl merge` was asked for.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// `None`: every tensor keeps the base's type.
    pub file_type: Option<FileType>,
    pub lineage: Lineage,
}

/// The adapters' deltas, added to the rows of the tensors they modify.
#[derive(Debug)]
struct AddDeltas {
    adapters: Vec<(Arc<LoraAdapter>, f32)>,
}

impl TensorEdit for AddDeltas {
    fn edits(&self, name: &str) -> bool {
        self.adapters.iter().any(|(a, s)| *s != 0.0 && a.get(name).is_some())
    }

    fn edit_rows(&self, name: &str, first_row: usize, cols: usize, rows: &mut [f32]) {
        for (adapter, user_scale) in &self.adapters {
            let Some(m) = adapter.get(name).filter(|m| m.cols() == cols) else { continue };
            let (rank, scale) = (m.rank(), user_scale * m.scale());
            for (i, row) in rows.chunks_exact_mut(cols).enumerate() {
                let r = first_row + i;
                let Some(b) = m.b().get(r * rank..(r + 1) * rank) else { continue };
                for (j, &bj) in b.iter().enumerate() {
                    let c = scale * bj;
                    if c != 0.0 {
                        for (w, &a) in row.iter_mut().zip(&m.a()[j * cols..(j + 1) * cols]) {
                            *w += c * a;
                        }
                    }
                }
            }
        }
    }
}

/// Merges the adapters of `specs` into `model` (a GGUF file or a Hugging Face directory)
/// and writes `out` atomically.
pub fn merge(
    model: &Path,
    specs: &[AdapterSpec],
    out: &Path,
    options: &MergeOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<QuantizeSummary, MergeError> {
    if specs.is_empty() {
        return Err(MergeError::NoAdapter);
    }
    let adapters = specs
        .iter()
        .map(|s| Ok((AdapterFile::open(&s.path, s.name.as_deref())?, s.scale)))
        .collect::<Result<Vec<_>, MergeError>>()?;
    if model.is_dir() {
        let temp = TempFile(temp_beside(out)?);
        let file_type = float_type(model)?;
        // A directory without a tokenizer (weights only) merges into weights only.
        let no_tokenizer = !["tokenizer.json", "tokenizer.model"].iter().any(|f| model.join(f).is_file());
        let convert_options = ConvertOptions { file_type, no_tokenizer, tokenizer_pre: None };
        convert(model, &temp.0, &convert_options, &|_| {})?;
        // The adapter names the directory's model, not the temporary file.
        let mut base = Base::of_gguf(&temp.0)?;
        base.file.path = model.to_path_buf();
        base.file.names.extend(model.file_name().map(|n| n.to_string_lossy().into_owned()));
        return merge_gguf(&temp.0, &base, &adapters, out, options, progress);
    }
    let base = Base::of_gguf(model)?;
    merge_gguf(model, &base, &adapters, out, options, progress)
}

fn merge_gguf(
    gguf: &Path,
    base: &Base,
    adapters: &[(AdapterFile, f32)],
    out: &Path,
    options: &MergeOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<QuantizeSummary, MergeError> {
    let bound = adapters
        .iter()
        .map(|(a, scale)| Ok((Arc::new(a.bind_to(base, options.lineage)?), *scale)))
        .collect::<Result<Vec<_>, MergeError>>()?;
    let quantize_options = QuantizeOptions {
        file_type: options.file_type,
        allow_requantize: true,
        pure: false,
        imatrix: None,
        edit: Some(Arc::new(AddDeltas { adapters: bound })),
    };
    Ok(quantize(gguf, out, &quantize_options, progress)?)
}

/// The GGUF float type that holds a directory's weights exactly: that of its first
/// matrix (F32, F16 or BF16).
fn float_type(dir: &Path) -> Result<FileType, MergeError> {
    let st = SafetensorsModel::open(dir).map_err(|e| MergeError::Base(e.to_string()))?;
    let dtype = st.tensors().find(|t| t.shape.len() == 2).map(|t| t.dtype);
    Ok(match dtype {
        Some(Dtype::BF16) => FileType::BF16,
        Some(Dtype::F16) => FileType::F16,
        _ => FileType::F32,
    })
}

/// A temporary file beside `out` (same file system), removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_beside(out: &Path) -> Result<PathBuf, MergeError> {
    let name = out.file_name().ok_or_else(|| MergeError::Base(format!("{} has no file name", out.display())))?;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(dir.join(format!(".{}.base-{}.gguf", name.to_string_lossy(), std::process::id())))
}
