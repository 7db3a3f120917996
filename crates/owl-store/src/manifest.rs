use serde::{Deserialize, Serialize};

/// What a store name is: written once all its blobs are in place, atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    /// `name:tag`.
    pub name: String,
    /// The source it was pulled from (`pypi:…`, `hf:…`, `https://…`, `file:PATH` for imports).
    pub source: String,
    pub format: ModelFormat,
    pub files: Vec<ManifestFile>,
    /// The license as the catalog or the file's metadata states it; `None` when neither does.
    pub license: Option<String>,
    /// The catalog entry it belongs to, when there is one.
    pub catalog: Option<String>,
    /// When it was pulled (RFC 3339, UTC).
    pub pulled: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// One GGUF file.
    Gguf,
    /// A Hugging Face directory: config.json, tokenizer files, *.safetensors.
    Safetensors,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the model (`model.gguf`, `config.json`, `model-00001-of-00002.safetensors`).
    pub path: String,
    /// `sha256:HEX`.
    pub digest: String,
    pub size: u64,
}

impl ManifestFile {
    /// The hex part of the digest.
    pub fn sha256(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }
}

impl Manifest {
    pub const SCHEMA: u32 = 1;

    /// Total bytes of its files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The digest that names the model as a whole: the single file's for a GGUF, else the
    /// first safetensors file's (what `owl list` shows, like Ollama's ID column).
    pub fn digest(&self) -> &str {
        self.files
            .iter()
            .find(|f| f.path.ends_with(".gguf") || f.path.ends_with(".safetensors"))
            .or(self.files.first())
            .map_or("", |f| f.digest.as_str())
    }
}
