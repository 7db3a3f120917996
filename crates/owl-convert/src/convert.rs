//! `owl convert`: a Hugging Face model directory to one GGUF file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use owl_formats::gguf::{GgmlType, GgufWriter, TensorData};
use owl_formats::hf_config::HfConfig;
use owl_formats::safetensors::SafetensorsModel;

use crate::arch::Arch;
use crate::error::ConvertError;
use crate::file_type::FileType;
use crate::metadata::Metadata;
use crate::mix::MixTensor;
use crate::plan::{self, PlannedTensor};
use crate::progress::Progress;
use crate::quantize::{mix_model, QUANTIZATION_VERSION};
use crate::{hparams, mix, provenance, stream};

use crate::vocab;

#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub file_type: FileType,
    /// Write the weights without tokenizer metadata (the directory has no tokenizer).
    pub no_tokenizer: bool,
    /// The `tokenizer.ggml.pre` to write for a BPE tokenizer whose pre-tokenizer llama.cpp's
    /// table does not recognise (without it that is an error naming the hash).
    pub tokenizer_pre: Option<String>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { file_type: FileType::F16, no_tokenizer: false, tokenizer_pre: None }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    pub path: PathBuf,
    pub architecture: &'static str,
    pub tensors: usize,
    pub bytes: u64,
    /// Tensors per element type.
    pub types: BTreeMap<String, usize>,
}

/// Converts the model directory `dir` to `out` (written atomically).
pub fn convert(
    dir: &Path,
    out: &Path,
    options: &ConvertOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<ConvertSummary, ConvertError> {
    let config_path = dir.join("config.json");
    let raw_text = std::fs::read_to_string(&config_path).map_err(|source| ConvertError::Io {
        action: "read",
        path: config_path.clone(),
        source,
    })?;
    let raw: serde_json::Value = serde_json::from_str(&raw_text)
        .map_err(|e| ConvertError::field("config.json", format!("invalid JSON: {e}")))?;
    let cfg = HfConfig::from_value(&raw)?;
    let arch = Arch::from_model_type(&cfg.model_type)?;
    let st = SafetensorsModel::open(dir)?;
    let mut planned = plan::plan(arch, &cfg, &st)?;

    let mut meta = Metadata::default();
    meta.string("general.architecture", arch.gguf_name());
    // ModelBase.prepare_metadata: general.type and the model card's general.* keys between
    // general.architecture (written when the GGUFWriter is made) and the hyper-parameters.
    let count = provenance::parameter_count(&planned);
    meta.entries.extend(provenance::metadata(dir, &raw, &count).entries);
    hparams::write(&mut meta, arch, &cfg, &raw, options.file_type, &planned)?;
    // TextModel.prepare_metadata: the tokenizer after the hyper-parameters and
    // general.quantization_version (llama-quantize later moves that key and
    // general.file_type to the end).
    let vocab = if options.no_tokenizer {
        Metadata::default()
    } else {
        vocab::metadata(dir, arch, &raw, options.tokenizer_pre.as_deref())?
    };
    let ft = options.file_type;
    let types = if mix::converter_type(ft, "blk.0.attn_q.weight", &[32, 32]).is_some() {
        meta.u32("general.quantization_version", QUANTIZATION_VERSION as usize);
        meta.entries.extend(vocab.entries);
        planned.iter().map(|t| mix::converter_type(ft, &t.name, &t.shape).unwrap_or(GgmlType::F16)).collect()
    } else {
        // As llama.cpp users make these files: convert to F16, then llama-quantize, which
        // reorders the tensors and moves these two keys to the end.
        planned.sort_by(|a, b| mix::quantize_order(&a.name, &b.name));
        meta.entries.extend(vocab.entries);
        mixed_types(ft, arch, &mut meta, &planned)
    };
    let mut writer = GgufWriter::new();
    for (k, v) in meta.entries {
        writer.set_metadata(k, v);
    }

    let total: u64 = planned.iter().zip(&types).map(|(t, ty)| ty.bytes_for(t.n_elements() as u64).unwrap_or(0)).sum();
    progress(Progress::Start { tensors: planned.len(), bytes: total });
    let mut summary_types: BTreeMap<String, usize> = BTreeMap::new();
    for (index, (t, &ty)) in planned.iter().zip(&types).enumerate() {
        *summary_types.entry(ty.name().to_string()).or_default() += 1;
        let shape: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        let st = &st;
        let bytes = ty.bytes_for(t.n_elements() as u64).unwrap_or(0);
        let produce = move |w: &mut dyn std::io::Write| {
            progress(Progress::Tensor { index, name: &t.name, ggml_type: ty.name(), bytes });
            stream::write_tensor(st, t, ty, w)
        };
        writer.add_tensor(t.name.clone(), shape, ty, TensorData::Stream(Box::new(produce)))?;
    }
    let bytes = writer.write_file(out)?;
    Ok(ConvertSummary {
        path: out.to_path_buf(),
        architecture: arch.gguf_name(),
        tensors: planned.len(),
        bytes,
        types: summary_types,
    })
}

/// llama-quantize's types over an F16 conversion; the metadata gets llama-quantize's tail.
fn mixed_types(ft: FileType, arch: Arch, meta: &mut Metadata, planned: &[PlannedTensor]) -> Vec<GgmlType> {
    let lookup = |k: &str| meta.entries.iter().find(|(key, _)| key == k).and_then(|(_, v)| v.as_u64());
    let model = mix_model(&lookup, arch.gguf_name(), false);
    let shapes: Vec<Vec<u64>> = planned.iter().map(|t| t.shape.iter().rev().map(|&d| d as u64).collect()).collect();
    let tensors: Vec<MixTensor<'_>> =
        planned.iter().zip(&shapes).map(|(t, ne)| MixTensor { name: &t.name, ne }).collect();
    let chosen = mix::quantize_types(ft, &model, &tensors);
    let types = planned
        .iter()
        .zip(chosen)
        .map(|(t, c)| c.or_else(|| mix::converter_type(FileType::F16, &t.name, &t.shape)).unwrap_or(GgmlType::F16))
        .collect();
    meta.remove("general.file_type");
    meta.u32("general.quantization_version", QUANTIZATION_VERSION as usize);
    meta.u32("general.file_type", ft.llama_ftype() as usize);
    types
}
