//! What a MODEL argument names: a GGUF file, a Hugging Face model directory, a single
//! safetensors file, or a demo model name resolved through the local cache.
//!
//! An existing path always wins over a name, so a directory called `smollm2` in the current
//! directory is that directory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::demo_models;

/// A resolved MODEL argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file.
    Gguf(PathBuf),
    /// safetensors weights: `dir` holds config.json / tokenizer files (when present),
    /// `weights` is the directory itself or one .safetensors file in it.
    Safetensors { dir: PathBuf, weights: PathBuf },
}

/// Resolves a MODEL argument; fetches a demo model on first use.
pub fn resolve(arg: &OsStr) -> anyhow::Result<ModelSource> {
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(ModelSource::Safetensors { dir: path.to_path_buf(), weights: path.to_path_buf() });
    }
    if path.exists() {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            return Ok(ModelSource::Safetensors { dir, weights: path.to_path_buf() });
        }
        return Ok(ModelSource::Gguf(path.to_path_buf()));
    }
    if let Some(model) = arg.to_str().and_then(demo_models::find) {
        return Ok(ModelSource::Gguf(demo_models::ensure(model)?));
    }
    let hint = match arg.to_str().and_then(demo_models::suggest) {
        Some(name) => format!("; did you mean '{name}'?"),
        None => String::new(),
    };
    bail!(
        "{}: no such file or directory, and not a known model name{hint} (known: {})",
        path.display(),
        demo_models::known_names()
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
            "no-such-model: no such file or directory, and not a known model name (known: smollm2, gemma3, qwen2.5-coder)"
        );
    }
}
