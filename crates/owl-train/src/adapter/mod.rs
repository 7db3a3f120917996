//! LoRA adapter files, mapped onto a loaded base model.
//!
//! An [`AdapterFile`] is what a file says: low-rank pairs named in its own format's naming
//! (PEFT: transformers module names; GGUF: llama.cpp tensor names). [`AdapterFile::bind`]
//! checks it against a base [`Model`] and gives the [`LoraAdapter`] the forward pass applies:
//!
//! - **architecture**: a GGUF adapter names the architecture it was made for;
//! - **base model**: PEFT's `base_model_name_or_path` must name this model (by path, or by
//!   name against the GGUF `general.*` names, `_name_or_path`, the file or directory name),
//!   unless [`Lineage::ShapesOnly`] says the user vouches for it;
//! - **tensors**: every pair must modify a projection the base holds, with its shape.

mod gguf;
pub mod names;
mod peft;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use owl_convert::arch::Arch;
use owl_convert::tensor_names::Heads;
use owl_models::weights::SourceKind;
use owl_models::{LoraAdapter, LoraMatrix, LoraSet, Model, ModelFile};

use crate::error::AdapterError;
use names::RowOrder;
pub(crate) use peft::{to_f32, write_atomic, write_safetensors};

/// How a file names the base tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// transformers' weight names (`model.layers.0.self_attn.q_proj.weight`).
    Hf,
    /// llama.cpp's GGUF names (`blk.0.attn_q.weight`), q/k rows in its order.
    Gguf,
}

/// One low-rank pair as stored: `ΔW = scale · B A` for the base tensor `target`.
#[derive(Debug, Clone)]
pub struct RawPair {
    pub target: String,
    pub rows: usize,
    pub cols: usize,
    pub rank: usize,
    /// `[rank][cols]`.
    pub a: Vec<f32>,
    /// `[rows][rank]`.
    pub b: Vec<f32>,
    pub scale: f32,
}

/// An adapter as read from its files.
#[derive(Debug, Clone)]
pub struct AdapterFile {
    /// The PEFT directory or the GGUF file.
    pub path: PathBuf,
    /// What requests and logs call it.
    pub name: String,
    pub naming: Naming,
    pub pairs: Vec<RawPair>,
    /// GGUF `general.architecture` of a GGUF adapter.
    pub base_architecture: Option<String>,
    /// PEFT `base_model_name_or_path` (GGUF: `general.base_model.0.*`).
    pub base_model: Option<String>,
    /// The file's `lora_alpha` (per-module scales are in the pairs).
    pub alpha: f32,
}

/// What an adapter is checked against and mapped onto: the base's file (names, matrix
/// shapes), its architecture as the file names it, and its head counts (q/k row order).
#[derive(Debug, Clone)]
pub struct Base {
    pub file: ModelFile,
    pub architecture: String,
    pub heads: Heads,
}

impl Base {
    /// A loaded model (`None`: not loaded from a file).
    pub fn of_model(model: &Model) -> Option<Base> {
        let cfg = model.config();
        Some(Base {
            file: model.file()?.clone(),
            architecture: cfg.architecture.clone(),
            heads: Heads { n_heads: cfg.n_heads, n_kv_heads: cfg.n_kv_heads },
        })
    }

    /// A GGUF model file, from its metadata and tensor list alone.
    pub fn of_gguf(path: &Path) -> Result<Base, AdapterError> {
        let format = |reason: String| AdapterError::Format { path: path.to_path_buf(), reason };
        let gguf = owl_formats::gguf::GgufFile::open(path).map_err(|e| format(e.to_string()))?;
        let architecture = gguf.architecture().ok_or_else(|| format("no general.architecture".into()))?.to_string();
        let n_heads = gguf.get_u64(&format!("{architecture}.attention.head_count")).unwrap_or(0) as usize;
        let n_kv_heads =
            gguf.get_u64(&format!("{architecture}.attention.head_count_kv")).map_or(n_heads, |n| n as usize);
        Ok(Base { file: ModelFile::of_gguf(path, &gguf), architecture, heads: Heads { n_heads, n_kv_heads } })
    }
}

/// How strictly an adapter's base is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lineage {
    /// Architecture, shapes and the base model's name.
    #[default]
    Strict,
    /// Architecture and shapes only: the user vouches that the adapter fits this base
    /// (e.g. a re-quantized or renamed copy of the model it was trained on).
    ShapesOnly,
}

impl AdapterFile {
    /// Reads a PEFT adapter directory or a GGUF adapter file; `name` defaults to the
    /// directory's or file's name.
    pub fn open(path: &Path, name: Option<&str>) -> Result<AdapterFile, AdapterError> {
        let default_name = || {
            let stem = if path.is_dir() { path.file_name() } else { path.file_stem() };
            stem.map_or_else(|| "adapter".to_string(), |s| s.to_string_lossy().into_owned())
        };
        let name = name.map_or_else(default_name, str::to_string);
        if path.is_dir() {
            if !path.join(peft::CONFIG).is_file() {
                return Err(AdapterError::Io {
                    path: path.to_path_buf(),
                    reason: format!("no {} here: not a PEFT adapter directory", peft::CONFIG),
                });
            }
            return peft::read(path, name);
        }
        if !path.is_file() {
            return Err(AdapterError::Io { path: path.to_path_buf(), reason: "no such file or directory".into() });
        }
        gguf::read(path, name)
    }

    /// Checks the adapter against `model` (see the module docs) and maps it onto the base's
    /// tensors.
    pub fn bind(&self, model: &Model, lineage: Lineage) -> Result<LoraAdapter, AdapterError> {
        let base = Base::of_model(model).ok_or_else(|| AdapterError::Lineage {
            path: self.path.clone(),
            reason: "the base model was not loaded from a file".into(),
        })?;
        self.bind_to(&base, lineage)
    }

    /// [`AdapterFile::bind`] against a base described without loading it.
    pub fn bind_to(&self, base: &Base, lineage: Lineage) -> Result<LoraAdapter, AdapterError> {
        let file = &base.file;
        let base_arch = base_arch(file, &base.architecture);
        self.check_architecture(base_arch)?;
        if lineage == Lineage::Strict {
            self.check_base_name(file)?;
        }
        let heads = base.heads;
        let mut problems = Vec::new();
        let mut matrices = HashMap::with_capacity(self.pairs.len());
        for p in &self.pairs {
            match self.bind_pair(p, file, base_arch, heads) {
                Ok((target, m)) => {
                    matrices.insert(target, m);
                }
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            return Err(AdapterError::Shapes { path: self.path.clone(), problems });
        }
        Ok(LoraAdapter::new(self.name.clone(), matrices))
    }

    fn bind_pair(
        &self,
        p: &RawPair,
        file: &ModelFile,
        arch: Option<Arch>,
        heads: Heads,
    ) -> Result<(String, LoraMatrix), String> {
        let need_arch = || arch.ok_or_else(|| "owl cannot map names for this architecture".to_string());
        let (target, order) = match (self.naming, file.kind) {
            (Naming::Hf, SourceKind::Hf) | (Naming::Gguf, SourceKind::Gguf) => (p.target.clone(), RowOrder::Keep),
            (Naming::Hf, SourceKind::Gguf) => {
                names::hf_to_gguf(need_arch()?, heads, &p.target).map_err(|e| format!("{}: {e}", p.target))?
            }
            (Naming::Gguf, SourceKind::Hf) => {
                names::gguf_to_hf(need_arch()?, heads, &p.target, file.matrices.keys().map(String::as_str))
                    .ok_or_else(|| format!("{}: the base holds no such tensor", p.target))?
            }
        };
        if names::is_embedding(&target) {
            return Err(format!("{}: adapters on the token embedding are not supported", p.target));
        }
        let Some(&[rows, cols]) = file.matrices.get(&target) else {
            let head = target == "lm_head.weight" || target == "output.weight";
            return Err(if head && file.tied_head {
                format!("{}: the base's output head is its embedding (tied), which owl does not adapt", p.target)
            } else {
                format!("{}: the base holds no such matrix ({target})", p.target)
            });
        };
        if (rows, cols) != (p.rows, p.cols) {
            return Err(format!(
                "{}: changes a {}x{} matrix, the base's {target} is {rows}x{cols}",
                p.target, p.rows, p.cols
            ));
        }
        let b = order.apply(&p.b, p.rows, p.rank).map_err(|e| format!("{}: {e}", p.target))?;
        let m =
            LoraMatrix::new(rows, cols, p.rank, p.a.clone(), b, p.scale).map_err(|e| format!("{}: {e}", p.target))?;
        Ok((target, m))
    }

    fn check_architecture(&self, base: Option<Arch>) -> Result<(), AdapterError> {
        let Some(want) = &self.base_architecture else { return Ok(()) };
        match base.map(Arch::gguf_name) {
            Some(have) if have == want => Ok(()),
            Some(have) => Err(AdapterError::Lineage {
                path: self.path.clone(),
                reason: format!("it adapts a {want} model, the base is {have}"),
            }),
            None => Err(AdapterError::Lineage {
                path: self.path.clone(),
                reason: format!("it adapts a {want} model, and owl cannot tell this base's GGUF architecture"),
            }),
        }
    }

    fn check_base_name(&self, file: &ModelFile) -> Result<(), AdapterError> {
        let Some(base) = self.base_model.as_deref().filter(|b| !b.trim().is_empty()) else { return Ok(()) };
        // A path (relative to the adapter) that exists must be this model.
        let as_path = if Path::new(base).is_absolute() { PathBuf::from(base) } else { self.dir().join(base) };
        if let (Ok(a), Ok(b)) = (as_path.canonicalize(), file.path.canonicalize()) {
            if a == b || b.parent() == Some(a.as_path()) {
                return Ok(());
            }
        }
        let want = normalize(base.trim_end_matches('/').rsplit('/').next().unwrap_or(base));
        let fits = |name: &String| {
            let have = normalize(name.trim_end_matches('/').rsplit('/').next().unwrap_or(name));
            !want.is_empty() && !have.is_empty() && (have.contains(&want) || want.contains(&have))
        };
        if file.names.is_empty() || file.names.iter().any(fits) {
            return Ok(());
        }
        Err(AdapterError::Lineage {
            path: self.path.clone(),
            reason: format!(
                "base_model_name_or_path is {base:?}, the base calls itself {}; if the adapter fits anyway \
                 (a converted or re-quantized copy), say so with --lora-any-base",
                file.names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
            ),
        })
    }

    /// The directory relative paths in the adapter's config are taken from.
    fn dir(&self) -> PathBuf {
        if self.path.is_dir() {
            self.path.clone()
        } else {
            self.path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        }
    }

    /// This adapter in llama.cpp's naming for a GGUF of `arch` with `heads` (what
    /// convert_lora_to_gguf.py does to a PEFT adapter): names mapped, q/k rows of B reordered.
    pub fn to_gguf_naming(&self, arch: Arch, heads: Heads) -> Result<AdapterFile, AdapterError> {
        if self.naming == Naming::Gguf {
            return Ok(self.clone());
        }
        let mut problems = Vec::new();
        let mut pairs = Vec::with_capacity(self.pairs.len());
        for p in &self.pairs {
            let mapped = names::hf_to_gguf(arch, heads, &p.target)
                .and_then(|(target, order)| Ok(RawPair { target, b: order.apply(&p.b, p.rows, p.rank)?, ..p.clone() }));
            match mapped {
                Ok(pair) => pairs.push(pair),
                Err(e) => problems.push(format!("{}: {e}", p.target)),
            }
        }
        if !problems.is_empty() {
            return Err(AdapterError::Shapes { path: self.path.clone(), problems });
        }
        Ok(AdapterFile {
            naming: Naming::Gguf,
            pairs,
            base_architecture: Some(arch.gguf_name().to_string()),
            ..self.clone()
        })
    }

    /// Trained pairs (named as `base` names its tensors) as an adapter in transformers'
    /// naming, ready for [`AdapterFile::write_peft`]: on a GGUF base the names are mapped
    /// back and B's q/k rows returned to transformers' order.
    pub fn from_trained(
        params: &crate::train::LoraParams,
        base: &Base,
        name: &str,
        base_model: Option<String>,
    ) -> Result<AdapterFile, AdapterError> {
        let arch = base_arch(&base.file, &base.architecture);
        let mut problems = Vec::new();
        let mut pairs = Vec::with_capacity(params.pairs.len());
        for p in &params.pairs {
            let (target, order) = match base.file.kind {
                SourceKind::Hf => (p.target.clone(), RowOrder::Keep),
                SourceKind::Gguf => match arch.and_then(|a| names::gguf_to_hf_name(a, base.heads, &p.target)) {
                    Some(found) => found,
                    None => {
                        problems.push(format!("{}: no transformers name for it", p.target));
                        continue;
                    }
                },
            };
            match order.apply(&p.b, p.rows, p.rank) {
                Ok(b) => pairs.push(RawPair {
                    target,
                    rows: p.rows,
                    cols: p.cols,
                    rank: p.rank,
                    a: p.a.clone(),
                    b,
                    scale: p.scale,
                }),
                Err(e) => problems.push(format!("{}: {e}", p.target)),
            }
        }
        if !problems.is_empty() {
            return Err(AdapterError::Shapes { path: base.file.path.clone(), problems });
        }
        let alpha = pairs.first().map_or(0.0, |p| p.scale * p.rank as f32);
        Ok(AdapterFile {
            path: base.file.path.clone(),
            name: name.to_string(),
            naming: Naming::Hf,
            pairs,
            base_architecture: None,
            base_model,
            alpha,
        })
    }

    /// Writes this adapter as a PEFT adapter directory (`adapter_config.json` +
    /// `adapter_model.safetensors`, F32). It must be in transformers naming.
    pub fn write_peft(&self, dir: &Path) -> Result<(), AdapterError> {
        peft::write(self, dir)
    }

    /// Writes this adapter as a GGUF LoRA adapter (llama.cpp's format), F32, atomically.
    /// It must be in GGUF naming ([`AdapterFile::to_gguf_naming`]).
    pub fn write_gguf(&self, out: &Path) -> Result<u64, AdapterError> {
        let arch = self.base_architecture.as_deref().ok_or_else(|| AdapterError::Io {
            path: out.to_path_buf(),
            reason: "the adapter does not say which architecture it adapts".into(),
        })?;
        gguf::write(self, arch, out)
    }
}

/// The converter's architecture of a base: from GGUF `general.architecture` or HF
/// `model_type`.
fn base_arch(file: &ModelFile, architecture: &str) -> Option<Arch> {
    match file.kind {
        SourceKind::Gguf => Arch::from_gguf_name(architecture),
        SourceKind::Hf => Arch::from_model_type(architecture).ok(),
    }
}

/// Lower-case letters and digits only: "SmolLM2-135M-Instruct" and "SmolLM2 135M Instruct"
/// are the same name.
fn normalize(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// One `--lora` argument: `[NAME=]PATH[:SCALE]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    pub name: Option<String>,
    pub path: PathBuf,
    pub scale: f32,
}

impl std::str::FromStr for AdapterSpec {
    type Err = AdapterError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| AdapterError::Spec { spec: spec.to_string(), reason: reason.to_string() };
        let (name, rest) = match spec.split_once('=') {
            Some((n, r)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), r),
            _ => (None, spec),
        };
        // A trailing ":NUMBER" is the scale; a path may hold other colons.
        let (path, scale) = match rest.rsplit_once(':') {
            Some((p, s)) if s.parse::<f32>().is_ok() => {
                let scale: f32 = s.parse().map_err(|_| bad("the scale is not a number"))?;
                (p, scale)
            }
            _ => (rest, 1.0),
        };
        if path.is_empty() {
            return Err(bad("no adapter path"));
        }
        if !scale.is_finite() {
            return Err(bad("the scale must be a finite number"));
        }
        if let Some(n) = &name {
            if n.contains('+') || n.chars().any(char::is_whitespace) {
                return Err(bad("an adapter name may not hold '+' or spaces"));
            }
        }
        Ok(AdapterSpec { name, path: PathBuf::from(path), scale })
    }
}

/// Reads and binds every adapter of `specs` to `model`, for sequences that run with all of
/// them (`--lora A --lora B:0.5`).
pub fn load_lora_set(specs: &[AdapterSpec], model: &Model, lineage: Lineage) -> Result<LoraSet, AdapterError> {
    let mut entries = Vec::with_capacity(specs.len());
    for spec in specs {
        let file = AdapterFile::open(&spec.path, spec.name.as_deref())?;
        entries.push((Arc::new(file.bind(model, lineage)?), spec.scale));
    }
    Ok(LoraSet::new(entries))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_name_path_and_scale() {
        let s: AdapterSpec = "ada/pter:0.5".parse().unwrap();
        assert_eq!((s.name, s.path, s.scale), (None, PathBuf::from("ada/pter"), 0.5));
        let s: AdapterSpec = "sql=/tmp/a:b/x".parse().unwrap();
        assert_eq!((s.name.as_deref(), s.path, s.scale), (Some("sql"), PathBuf::from("/tmp/a:b/x"), 1.0));
        let s: AdapterSpec = "./x=y/z:-1".parse().unwrap();
        assert_eq!((s.name, s.path, s.scale), (None, PathBuf::from("./x=y/z"), -1.0));
        assert!("".parse::<AdapterSpec>().is_err());
        assert!("a=:2".parse::<AdapterSpec>().is_err());
        assert!("a+b=dir".parse::<AdapterSpec>().is_err());
        assert!("dir:inf".parse::<AdapterSpec>().is_err());
    }

    #[test]
    fn names_compare_without_punctuation_or_case() {
        assert_eq!(normalize("HuggingFaceTB/SmolLM2-135M-Instruct"), "huggingfacetbsmollm2135minstruct");
        assert_eq!(normalize("SmolLM2 135M Instruct"), "smollm2135minstruct");
    }
}
