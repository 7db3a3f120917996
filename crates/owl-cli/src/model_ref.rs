//! What a MODEL argument names: a GGUF file, a Hugging Face model directory, a single
//! safetensors file, or a name owl-store resolves (a store name, a catalog name pulled on
//! first use, or a source).
//!
//! An existing path always wins over a name, so a directory called `smollm2` in the current
//! directory is that directory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::bail;
use owl_store::{Catalog, ModelFormat, Store};

use crate::commands::pull_progress;

/// A resolved MODEL argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file.
    Gguf(PathBuf),
    /// safetensors weights: `dir` holds config.json / tokenizer files (when present),
    /// `weights` is the directory itself or one .safetensors file in it.
    Safetensors { dir: PathBuf, weights: PathBuf },
}

/// Resolves a MODEL argument; pulls a catalog model or a source on first use.
pub fn resolve(arg: &OsStr) -> anyhow::Result<ModelSource> {
    resolve_with_label(arg).map(|(source, _)| source)
}

/// As [`resolve`], with the name reports give the model's file: its own file name, or for a
/// store model the name its manifest records (a blob's name is its digest).
pub fn resolve_with_label(arg: &OsStr) -> anyhow::Result<(ModelSource, String)> {
    let path = Path::new(arg);
    let own_name = || path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    resolve_path_or_name(arg).map(|(source, label)| (source, label.unwrap_or_else(own_name)))
}

fn resolve_path_or_name(arg: &OsStr) -> anyhow::Result<(ModelSource, Option<String>)> {
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok((ModelSource::Safetensors { dir: path.to_path_buf(), weights: path.to_path_buf() }, None));
    }
    if path.exists() {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            return Ok((ModelSource::Safetensors { dir, weights: path.to_path_buf() }, None));
        }
        return Ok((ModelSource::Gguf(path.to_path_buf()), None));
    }
    if let Some(text) = arg.to_str().filter(|t| !t.trim().is_empty()) {
        let store = Store::from_env()?;
        let progress = pull_progress::for_model_argument();
        if let Some(model) = store.resolve(text, &|e| progress.handle(e))? {
            let label = match model.manifest.format {
                ModelFormat::Gguf => model.manifest.files.first().map(|f| f.path.clone()),
                ModelFormat::Safetensors => Some(model.manifest.name.clone()),
            };
            let source = match model.manifest.format {
                ModelFormat::Gguf => ModelSource::Gguf(model.path),
                ModelFormat::Safetensors => ModelSource::Safetensors { dir: model.path.clone(), weights: model.path },
            };
            return Ok((source, label));
        }
    }
    let hint = match arg.to_str().and_then(|t| Catalog::builtin().suggest(t)) {
        Some(name) => format!("; did you mean '{name}'?"),
        None => String::new(),
    };
    bail!(
        "{}: no such file or directory, and not a name in the store or the catalog{hint} (`owl list` shows the store, `owl catalog` the names owl can pull)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_unknown_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        assert_eq!(
            resolve(dir.as_os_str()).expect("dir"),
            ModelSource::Safetensors { dir: dir.to_path_buf(), weights: dir.to_path_buf() }
        );
        let st = dir.join("adapter.safetensors");
        std::fs::write(&st, b"x").expect("write");
        assert_eq!(
            resolve(st.as_os_str()).expect("file"),
            ModelSource::Safetensors { dir: dir.to_path_buf(), weights: st.clone() }
        );
        let g = dir.join("m.bin");
        std::fs::write(&g, b"x").expect("write");
        assert_eq!(resolve(g.as_os_str()).expect("gguf"), ModelSource::Gguf(g.clone()));
        let err = resolve(OsStr::new("no-such-model")).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no-such-model: no such file or directory, and not a name in the store or the catalog (`owl list` shows the store, `owl catalog` the names owl can pull)"
        );
    }
}
