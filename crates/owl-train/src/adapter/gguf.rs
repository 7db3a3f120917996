//! llama.cpp's GGUF LoRA format (convert_lora_to_gguf.py; read by llama-adapter.cpp):
//! `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha` (f32), and per
//! modified base tensor `NAME.lora_a` (ggml `[in, r]`, i.e. A as `[r][in]`) and `NAME.lora_b`
//! (ggml `[r, out]`, B as `[out][r]`), NAME in the base GGUF's naming with B's q/k rows in
//! llama.cpp's order. llama.cpp scales by `alpha / r` (r = `lora_b`'s ne[0]), or by 1 when
//! alpha is 0.

use std::collections::BTreeMap;
use std::path::Path;

use owl_formats::gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue};
use owl_kernels::quant::dequantize_row;
use owl_models::block_format;

use super::{AdapterFile, Naming, RawPair};
use crate::error::AdapterError;

/// Reads a GGUF LoRA adapter.
pub fn read(path: &Path, name: String) -> Result<AdapterFile, AdapterError> {
    let format = |reason: String| AdapterError::Format { path: path.to_path_buf(), reason };
    let file = GgufFile::open(path).map_err(|e| format(e.to_string()))?;
    match file.get_str("general.type") {
        Some("adapter") => {}
        Some(other) => return Err(format(format!("general.type is {other:?}: a model, not an adapter"))),
        None => return Err(format("no general.type: a model, not an adapter".into())),
    }
    match file.get_str("adapter.type") {
        Some("lora") => {}
        other => {
            return Err(AdapterError::Unsupported {
                path: path.to_path_buf(),
                what: format!("adapter.type {:?}", other.unwrap_or("(missing)")),
                hint: Some("only LoRA adapters".into()),
            })
        }
    }
    if file.get("adapter.alora.invocation_tokens").is_some() {
        return Err(AdapterError::Unsupported { path: path.to_path_buf(), what: "activated LoRA".into(), hint: None });
    }
    let alpha = match file.get("adapter.lora.alpha") {
        Some(MetadataValue::F32(a)) => *a,
        Some(MetadataValue::F64(a)) => *a as f32,
        None => 0.0,
        Some(v) => return Err(format(format!("adapter.lora.alpha is {v:?}, not a number"))),
    };
    let base_architecture = file.get_str("general.architecture").map(str::to_string);
    let base_model = file.get_str("general.base_model.0.repo_url").or(file.get_str("general.base_model.0.name"));
    let base_model = base_model.map(str::to_string);

    // base tensor → (A, B), each (rows, cols, values) in PyTorch orientation.
    type Half = Option<(usize, usize, Vec<f32>)>;
    let mut tensors: BTreeMap<String, (Half, Half)> = BTreeMap::new();
    for info in file.tensors() {
        let (base, is_a) = if let Some(b) = info.name.strip_suffix(".lora_a") {
            (b, true)
        } else if let Some(b) = info.name.strip_suffix(".lora_b") {
            (b, false)
        } else {
            return Err(AdapterError::Unsupported {
                path: path.to_path_buf(),
                what: format!("the tensor {} (an adapter with more than low-rank pairs)", info.name),
                hint: None,
            });
        };
        let &[cols, rows] = info.shape.as_slice() else {
            return Err(format(format!("{}: shape {:?} is not a matrix", info.name, info.shape)));
        };
        let (rows, cols) = (rows as usize, cols as usize);
        let values = dequantize(info.ggml_type, file.tensor_data(info), rows, cols)
            .map_err(|e| format(format!("{}: {e}", info.name)))?;
        let entry = tensors.entry(base.to_string()).or_default();
        *(if is_a { &mut entry.0 } else { &mut entry.1 }) = Some((rows, cols, values));
    }
    let mut pairs = Vec::with_capacity(tensors.len());
    for (target, (a, b)) in tensors {
        let (Some((rank, cols, a)), Some((rows, rank_b, b))) = (a, b) else {
            return Err(format(format!("{target} has only one of lora_a and lora_b")));
        };
        if rank != rank_b {
            return Err(format(format!("{target}: lora_a has rank {rank}, lora_b {rank_b}")));
        }
        let scale = if alpha == 0.0 { 1.0 } else { alpha / rank as f32 };
        pairs.push(RawPair { target, rows, cols, rank, a, b, scale });
    }
    if pairs.is_empty() {
        return Err(format("holds no LoRA pairs".into()));
    }
    Ok(AdapterFile {
        path: path.to_path_buf(),
        name,
        naming: Naming::Gguf,
        pairs,
        base_architecture,
        base_model,
        alpha,
    })
}

/// `rows × cols` values of a tensor stored as `ggml_type`.
fn dequantize(ggml_type: GgmlType, data: &[u8], rows: usize, cols: usize) -> Result<Vec<f32>, String> {
    let format =
        block_format(ggml_type).ok_or_else(|| format!("element type {} is not supported", ggml_type.name()))?;
    let row_bytes = format.row_bytes(cols).ok_or_else(|| format!("{cols} columns do not fit {}", format.name()))?;
    if Some(data.len()) != row_bytes.checked_mul(rows) {
        return Err(format!("{} bytes for {rows}x{cols} {}", data.len(), format.name()));
    }
    let mut out = vec![0f32; rows * cols];
    if row_bytes > 0 {
        for (src, dst) in data.chunks_exact(row_bytes).zip(out.chunks_exact_mut(cols)) {
            dequantize_row(format, src, dst).map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// Writes `adapter` (GGUF naming) as a GGUF LoRA adapter of `architecture`, F32, the way
/// convert_lora_to_gguf.py does. One alpha serves the file: a pair whose scale is not
/// `alpha / r` (per-module alphas, rsLoRA) has the difference folded into its B.
pub fn write(adapter: &AdapterFile, architecture: &str, out: &Path) -> Result<u64, AdapterError> {
    let fail = |reason: String| AdapterError::Io { path: out.to_path_buf(), reason };
    if adapter.naming != Naming::Gguf {
        return Err(fail("the adapter's names are not GGUF names (map it onto a GGUF base first)".into()));
    }
    let first = adapter.pairs.first().ok_or_else(|| fail("an adapter without pairs".into()))?;
    let alpha = first.scale * first.rank as f32;
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", MetadataValue::String(architecture.to_string()));
    w.set_metadata("general.type", MetadataValue::String("adapter".into()));
    w.set_metadata("general.name", MetadataValue::String(adapter.name.clone()));
    w.set_metadata("adapter.type", MetadataValue::String("lora".into()));
    w.set_metadata("adapter.lora.alpha", MetadataValue::F32(alpha));
    for p in &adapter.pairs {
        let fold = p.scale * p.rank as f32 / alpha;
        let b: Vec<f32> = if fold == 1.0 { p.b.clone() } else { p.b.iter().map(|v| v * fold).collect() };
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let shape_a = vec![p.cols as u64, p.rank as u64];
        let shape_b = vec![p.rank as u64, p.rows as u64];
        w.add_tensor(format!("{}.lora_a", p.target), shape_a, GgmlType::F32, bytes(&p.a))
            .map_err(|e| fail(e.to_string()))?;
        w.add_tensor(format!("{}.lora_b", p.target), shape_b, GgmlType::F32, bytes(&b))
            .map_err(|e| fail(e.to_string()))?;
    }
    w.write_file(out).map_err(|e| fail(e.to_string()))
}
