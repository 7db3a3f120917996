//! Opening model files: a GGUF file or a Hugging Face directory (`config.json` +
//! safetensors), through the registry to a family, to a [`Model`].

use std::path::Path;
use std::sync::Arc;

use owl_formats::gguf::{GgmlType, GgufFile};
use owl_formats::hf_config::HfConfig;
use owl_formats::safetensors::{Dtype, SafetensorsModel};
use owl_kernels::BlockFormat;

use crate::config::GgufMeta;
use crate::error::ModelError;
use crate::model::{LoadOptions, Model, ModelFile};
use crate::registry::{self, Source};
use crate::weights::{Binder, SourceKind, StoredTensor, TensorSet, WeightBytes};

/// The kernel format of a GGUF element type (`None`: not computable here).
pub fn block_format(t: GgmlType) -> Option<BlockFormat> {
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

/// The kernel format of a safetensors dtype (`None`: not computable here).
fn dtype_format(d: Dtype) -> Option<BlockFormat> {
    match d {
        Dtype::F32 => Some(BlockFormat::F32),
        Dtype::F16 => Some(BlockFormat::F16),
        Dtype::BF16 => Some(BlockFormat::BF16),
        _ => None,
    }
}

impl Model {
    /// Loads a GGUF file, or a Hugging Face model directory.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Model, ModelError> {
        if path.is_dir() {
            Model::load_hf_dir(path, options)
        } else {
            Model::load_gguf(path, options)
        }
    }

    /// Loads a GGUF file; quantized weights stay quantized, mapped from the file.
    pub fn load_gguf(path: &Path, options: &LoadOptions) -> Result<Model, ModelError> {
        // No piece of this model's decode copies shares a chunk with another load's (one
        // that failed half way included): each model frees its own memory.
        crate::decode_arena::seal();
        let file =
            Arc::new(GgufFile::open(path).map_err(|source| ModelError::Gguf { path: path.to_path_buf(), source })?);
        let mut set = TensorSet::default();
        for info in file.tensors() {
            let bytes = WeightBytes::view(&file, |f| f.tensor_data(info));
            let shape = info.shape.iter().rev().map(|&d| d as usize).collect();
            let format = block_format(info.ggml_type);
            let t = StoredTensor { format, type_name: info.ggml_type.name().to_string(), shape, bytes };
            set.tensors.insert(info.name.clone(), t);
        }
        let meta = GgufMeta::new(&file)?;
        let family = registry::for_gguf_architecture(meta.arch())?;
        let mut binder = Binder::new(SourceKind::Gguf, &set);
        let parts = (family.build)(&Source::Gguf(&meta), &mut binder)?;
        binder.finish(family.name)?;
        let tied = parts.config.tied_embeddings;
        let model = Model::assemble(parts, options);
        crate::decode_arena::seal();
        let mut model = model?;
        let mut described = ModelFile::of_gguf(path, &file);
        described.tied_head |= tied;
        model.set_file(described);
        Ok(model)
    }

    /// Loads `dir/config.json` and the directory's safetensors.
    pub fn load_hf_dir(dir: &Path, options: &LoadOptions) -> Result<Model, ModelError> {
        let config = HfConfig::from_model_dir(dir)?;
        Model::load_hf(dir, &config, options)
    }

    /// Loads the safetensors of `dir` with an already parsed config. F16/BF16 weights stay
    /// in their format (the kernels compute with them directly); 1-D tensors become f32.
    pub fn load_hf(dir: &Path, config: &HfConfig, options: &LoadOptions) -> Result<Model, ModelError> {
        crate::decode_arena::seal();
        let family = registry::for_hf_model_type(&config.model_type)?;
        let st = Arc::new(SafetensorsModel::open(dir)?);
        let mut set = TensorSet::default();
        for view in st.tensors() {
            let name = view.name.to_string();
            let bytes = WeightBytes::view(&st, |s| s.tensor(&name).map_or(&[][..], |v| v.data));
            let t = StoredTensor {
                format: dtype_format(view.dtype),
                type_name: view.dtype.name().to_string(),
                shape: view.shape.to_vec(),
                bytes,
            };
            set.tensors.insert(name, t);
        }
        let mut binder = Binder::new(SourceKind::Hf, &set);
        binder.ignore_where(|name| name.ends_with(".rotary_emb.inv_freq"));
        let parts = (family.build)(&Source::Hf(config), &mut binder)?;
        binder.finish(family.name)?;
        let tied_head = parts.config.tied_embeddings || !set.tensors.contains_key("lm_head.weight");
        let model = Model::assemble(parts, options);
        crate::decode_arena::seal();
        let mut model = model?;
        let mut names: Vec<String> = name_or_path(dir).into_iter().collect();
        let dir_name = dir.canonicalize().ok().and_then(|d| d.file_name().map(|s| s.to_string_lossy().into_owned()));
        names.extend(dir_name);
        model.set_file(ModelFile {
            kind: SourceKind::Hf,
            path: dir.to_path_buf(),
            names,
            matrices: matrices(&set),
            tied_head,
        });
        Ok(model)
    }
}

/// The 2-D tensors of a file and their shapes.
fn matrices(set: &TensorSet) -> std::collections::BTreeMap<String, [usize; 2]> {
    set.tensors.iter().filter(|(_, t)| t.shape.len() == 2).map(|(n, t)| (n.clone(), [t.shape[0], t.shape[1]])).collect()
}

/// `_name_or_path` of `dir/config.json`, where transformers recorded where the model came
/// from (a Hub id, usually).
fn name_or_path(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("_name_or_path")?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

impl ModelFile {
    /// What a GGUF file says about the model in it, without loading the model.
    pub fn of_gguf(path: &Path, file: &GgufFile) -> ModelFile {
        let general = |k: &str| file.get_str(&format!("general.{k}")).map(str::to_string);
        let mut names: Vec<String> = [general("name"), general("basename")].into_iter().flatten().collect();
        if let Some(base) = general("basename") {
            let parts = [Some(base), general("size_label"), general("finetune")];
            names.push(parts.into_iter().flatten().collect::<Vec<_>>().join("-"));
        }
        names.extend(path.file_stem().map(|s| s.to_string_lossy().into_owned()));
        let matrices = file
            .tensors()
            .iter()
            .filter(|t| t.shape.len() == 2)
            .map(|t| (t.name.clone(), [t.shape[1] as usize, t.shape[0] as usize]))
            .collect();
        let tied_head = !file.tensors().iter().any(|t| t.name == "output.weight");
        ModelFile { kind: SourceKind::Gguf, path: path.to_path_buf(), names, matrices, tied_head }
    }
}
