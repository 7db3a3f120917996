//! `owl quantize`: a GGUF file to another file type, tensor by tensor, with llama-quantize's
//! per-tensor choices ([`crate::mix`]), tensor order and metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use owl_formats::gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue, TensorData, TensorInfo};
use owl_kernels::quant::dequantize_row;

use crate::error::ConvertError;
use crate::file_type::FileType;
use crate::imatrix::Imatrix;
use crate::mix::{self, MixModel, MixTensor};
use crate::progress::Progress;
use crate::stream::{block_format, RowSink};

/// ggml's `GGML_QNT_VERSION`, which llama.cpp writes as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// The mix to write; `None`: every tensor keeps its type (a merge that only changes
    /// values), and `general.file_type` stays the input's.
    pub file_type: Option<FileType>,
    /// Quantize tensors that are already quantized (llama-quantize's `--allow-requantize`):
    /// the error of both roundings adds up, so it is refused unless asked for.
    pub allow_requantize: bool,
    /// Every quantizable tensor in the default type, no mix (llama-quantize's `--pure`).
    pub pure: bool,
    /// An importance matrix and the path it was read from (written into the metadata).
    pub imatrix: Option<(String, Imatrix)>,
    /// Changes to tensors' values on the way (a LoRA merge): every edited tensor is
    /// dequantized, edited and quantized again, to its own type or the mix's.
    pub edit: Option<Arc<dyn TensorEdit>>,
}

impl QuantizeOptions {
    pub fn new(file_type: FileType) -> Self {
        QuantizeOptions { file_type: Some(file_type), allow_requantize: false, pure: false, imatrix: None, edit: None }
    }
}

/// A change to some tensors' values, applied in float32 between dequantization and
/// quantization, a slab of whole rows at a time.
pub trait TensorEdit: Send + Sync + std::fmt::Debug {
    /// Whether tensor `name` (GGUF naming) changes.
    fn edits(&self, name: &str) -> bool;
    /// Changes rows `first_row..` of `name`: `rows` holds whole rows of `cols` values.
    fn edit_rows(&self, name: &str, first_row: usize, cols: usize, rows: &mut [f32]);
}

#[derive(Debug, Clone)]
pub struct QuantizeSummary {
    pub path: PathBuf,
    pub tensors: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Tensors per element type written.
    pub types: BTreeMap<String, usize>,
    /// Tensors whose stored bytes were copied unchanged.
    pub copied: usize,
}

/// What llama-quantize reads from a file's metadata to pick types.
pub(crate) fn mix_model(meta: &dyn Fn(&str) -> Option<u64>, arch: &str, has_imatrix: bool) -> MixModel {
    let get = |k: &str| meta(&format!("{arch}.{k}"));
    let n_layer = get("block_count").unwrap_or(0) as usize;
    let n_head = get("attention.head_count").unwrap_or(0) as usize;
    let n_head_kv = get("attention.head_count_kv").map_or(n_head, |v| v as usize);
    let is_70b = match arch {
        "llama" => n_layer == 80 && n_head != n_head_kv,
        "qwen2" => n_layer == 80,
        _ => false,
    };
    MixModel {
        n_layer,
        n_expert: get("expert_count").unwrap_or(0) as usize,
        n_gqa: n_head.checked_div(n_head_kv).unwrap_or(0),
        is_70b,
        has_imatrix,
    }
}

/// Quantizes `input` to `out` (written atomically).
pub fn quantize(
    input: &Path,
    out: &Path,
    options: &QuantizeOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<QuantizeSummary, ConvertError> {
    let file = GgufFile::open(input)?;
    let arch = file
        .architecture()
        .ok_or_else(|| ConvertError::Invalid(format!("{}: no general.architecture", input.display())))?
        .to_string();
    let imatrix = options.imatrix.as_ref().map(|(_, m)| m);
    let model = mix_model(&|k| file.get_u64(k), &arch, imatrix.is_some_and(|m| !m.entries.is_empty()));
    let mut tensors: Vec<&TensorInfo> = file.tensors().iter().collect();
    tensors.sort_by(|a, b| mix::quantize_order(&a.name, &b.name));
    let mix_tensors: Vec<MixTensor<'_>> = tensors.iter().map(|t| MixTensor { name: &t.name, ne: &t.shape }).collect();
    let chosen: Vec<Option<GgmlType>> = match options.file_type {
        None => vec![None; mix_tensors.len()],
        Some(ft) if options.pure => {
            mix_tensors.iter().map(|&t| mix::allows_quantization(t).then(|| ft.default_type())).collect()
        }
        Some(ft) => mix::quantize_types(ft, &model, &mix_tensors),
    };
    let types: Vec<GgmlType> = tensors.iter().zip(&chosen).map(|(t, c)| c.unwrap_or(t.ggml_type)).collect();
    let edited = |t: &TensorInfo| options.edit.as_ref().is_some_and(|e| e.edits(&t.name));

    for (t, &ty) in tensors.iter().zip(&types) {
        if ty == t.ggml_type && !edited(t) {
            continue;
        }
        if block_format(t.ggml_type).is_none() {
            return Err(ConvertError::tensor(&t.name, format!("element type {} cannot be read", t.ggml_type)));
        }
        let requant = !matches!(t.ggml_type, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        if requant && !options.allow_requantize && !edited(t) {
            return Err(ConvertError::tensor(
                &t.name,
                format!(
                    "is already {}: requantizing to {ty} compounds both roundings; start from an F32/F16/BF16 \
                     file, or pass --allow-requantize",
                    t.ggml_type
                ),
            ));
        }
    }

    let mut writer = GgufWriter::new();
    writer.set_version(file.version())?;
    for (k, v) in file.metadata() {
        writer.set_metadata(k.clone(), v.clone());
    }
    // llama_model_quantize_impl: both keys removed, then appended, in this order.
    if let Some(ft) = options.file_type {
        for key in ["general.quantization_version", "general.file_type"] {
            writer.remove_metadata(key);
        }
        writer.set_metadata("general.quantization_version", MetadataValue::U32(QUANTIZATION_VERSION));
        writer.set_metadata("general.file_type", MetadataValue::U32(ft.llama_ftype()));
    }
    if let Some((path, m)) = &options.imatrix {
        imatrix_metadata(&mut writer, path, m);
    }
    // Importance per converted tensor, checked before anything is written.
    let mut importance: Vec<Option<Vec<f32>>> = Vec::with_capacity(tensors.len());
    for (t, &ty) in tensors.iter().zip(&types) {
        let found = match imatrix {
            Some(m) if ty != t.ggml_type || edited(t) => m.importance(&t.name),
            _ => None,
        };
        let want = t.shape.first().copied().unwrap_or(1) * t.shape.get(2).copied().unwrap_or(1);
        importance.push(match found {
            Some(v) if v.len() as u64 == want => Some(v),
            // llama-quantize: embeddings are quantized without; anything else is an error.
            Some(_) if t.name == "token_embd.weight" || t.name == "per_layer_token_embd.weight" => None,
            Some(v) => {
                return Err(ConvertError::tensor(
                    &t.name,
                    format!("the importance matrix has {} values for it, the tensor needs {want}", v.len()),
                ))
            }
            None => None,
        });
    }

    let total: u64 = tensors.iter().zip(&types).map(|(t, ty)| ty.bytes_for(t.n_elements).unwrap_or(0)).sum();
    progress(Progress::Start { tensors: tensors.len(), bytes: total });
    let mut summary_types: BTreeMap<String, usize> = BTreeMap::new();
    let mut copied = 0;
    for (index, ((t, &ty), importance)) in tensors.iter().zip(&types).zip(importance).enumerate() {
        *summary_types.entry(ty.name().to_string()).or_default() += 1;
        let bytes = ty.bytes_for(t.n_elements).unwrap_or(0);
        let data = file.tensor_data(t);
        let file = &file;
        let edit = options.edit.as_deref().filter(|_| edited(t));
        let produce: owl_formats::gguf::TensorWriteFn<'_> = if ty == t.ggml_type && edit.is_none() {
            copied += 1;
            Box::new(move |w: &mut dyn std::io::Write| {
                progress(Progress::Tensor { index, name: &t.name, ggml_type: ty.name(), bytes });
                w.write_all(data)?;
                file.release_pages(data);
                Ok(())
            })
        } else {
            Box::new(move |w: &mut dyn std::io::Write| {
                progress(Progress::Tensor { index, name: &t.name, ggml_type: ty.name(), bytes });
                requantize(file, t, ty, importance.clone(), edit, w)
            })
        };
        writer.add_tensor(t.name.clone(), t.shape.clone(), ty, TensorData::Stream(produce))?;
    }
    let bytes_out = writer.write_file(out)?;
    Ok(QuantizeSummary {
        path: out.to_path_buf(),
        tensors: tensors.len(),
        bytes_in: file.file_size(),
        bytes_out,
        types: summary_types,
        copied,
    })
}

/// Dequantizes `t` row by row (slabs of about 8 MiB of f32) and writes it as `ty`.
fn requantize(
    file: &GgufFile,
    t: &TensorInfo,
    ty: GgmlType,
    importance: Option<Vec<f32>>,
    edit: Option<&dyn TensorEdit>,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("tensor {}: {e}", t.name));
    let cols = t.shape.first().copied().unwrap_or(1) as usize;
    let rows = (t.n_elements as usize) / cols.max(1);
    let src_format = block_format(t.ggml_type).ok_or_else(|| invalid(format!("cannot read {}", t.ggml_type)))?;
    let src_row = src_format.row_bytes(cols).ok_or_else(|| invalid("rows are not whole blocks".into()))?;
    let data = file.tensor_data(t);
    let mut sink = RowSink::new(w, &t.name, ty, cols)?;
    if let Some(v) = importance {
        let rows_per_matrix = t.shape.get(1).copied().unwrap_or(1) as usize;
        sink = sink.with_importance(v, rows_per_matrix);
    }
    let slab_rows = ((8 << 20) / 4 / cols.max(1)).clamp(1, rows.max(1));
    let mut buf = vec![0f32; slab_rows * cols];
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + slab_rows).min(rows);
        let slab = &mut buf[..(r1 - r0) * cols];
        for (i, row) in slab.chunks_exact_mut(cols).enumerate() {
            let at = (r0 + i) * src_row;
            dequantize_row(src_format, &data[at..at + src_row], row).map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(edit) = edit {
            edit.edit_rows(&t.name, r0, cols, slab);
        }
        sink.rows(slab)?;
        file.release_pages(&data[r0 * src_row..r1 * src_row]);
        r0 = r1;
    }
    Ok(())
}

/// The `quantize.imatrix.*` keys llama-quantize writes (tools/quantize/quantize.cpp): the
/// file and first dataset (each cut to 127 bytes), the entry and chunk counts.
fn imatrix_metadata(writer: &mut GgufWriter<'_>, path: &str, m: &Imatrix) {
    let cut = |s: &str| {
        let mut end = s.len().min(127);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    };
    writer.set_metadata("quantize.imatrix.file", MetadataValue::String(cut(path)));
    if let Some(d) = m.datasets.first() {
        writer.set_metadata("quantize.imatrix.dataset", MetadataValue::String(cut(d)));
    }
    writer.set_metadata("quantize.imatrix.entries_count", MetadataValue::U32(m.entries.len() as u32));
    if m.chunk_count > 0 {
        writer.set_metadata("quantize.imatrix.chunks_count", MetadataValue::U32(m.chunk_count));
    }
}
