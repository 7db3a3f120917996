//! Errors of model loading and the forward pass. Every variant names what is wrong: the
//! config field, the tensor, the batch entry.

use std::path::PathBuf;

use owl_formats::gguf::GgufError;
use owl_formats::hf_config::HfConfigError;
use owl_formats::safetensors::SafetensorsError;
use owl_kernels::KernelError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", path.display())]
    Gguf {
        path: PathBuf,
        #[source]
        source: GgufError,
    },
    #[error(transparent)]
    HfConfig(#[from] HfConfigError),
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// The file names an architecture no family here implements.
    #[error("unsupported architecture {name:?} (from {origin}); supported: {supported}")]
    UnsupportedArchitecture { name: String, origin: &'static str, supported: String },
    /// A hyperparameter is missing, malformed or out of range.
    #[error("config `{field}`: {reason}")]
    Config { field: String, reason: String },
    /// A file's tensors do not fit the architecture: every problem at once.
    #[error("{family} weights do not fit the architecture:{}", list_problems(missing, unexpected, problems))]
    Weights { family: &'static str, missing: Vec<String>, unexpected: Vec<String>, problems: Vec<String> },
    /// A malformed batch.
    #[error("batch entry {index}: {reason}")]
    Batch { index: usize, reason: String },
    /// A KV cache that cannot serve the request.
    #[error("kv cache: {0}")]
    Kv(String),
    /// An allocation larger than the memory this process may still take.
    #[error("{what} needs {} but {} of memory is available", bytes_text(*needed), bytes_text(*available))]
    OutOfMemory { what: String, needed: u64, available: u64 },
    /// An output buffer of the wrong size.
    #[error("{what}: expected {expected} values, got {got}")]
    OutputLength { what: &'static str, expected: usize, got: usize },
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Bytes for a message: decimal units, as `ls -h --si` and llama.cpp print them (the same
/// text as the CLI's sizes, so a message reads alike whichever layer wrote it).
fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes == u64::MAX {
        // What an overflowing size computation reports.
        return "more than 16 EB".to_string();
    }
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

impl ModelError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Config { field: field.into(), reason: reason.into() }
    }

    pub(crate) fn batch(index: usize, reason: impl Into<String>) -> Self {
        ModelError::Batch { index, reason: reason.into() }
    }
}

fn list_problems(missing: &[String], unexpected: &[String], problems: &[String]) -> String {
    let mut s = String::new();
    let mut section = |title: &str, items: &[String]| {
        if items.is_empty() {
            return;
        }
        const SHOWN: usize = 40;
        s.push_str(&format!("\n  {title} ({}):", items.len()));
        for name in items.iter().take(SHOWN) {
            s.push_str("\n    ");
            s.push_str(name);
        }
        if items.len() > SHOWN {
            s.push_str(&format!("\n    ... and {} more", items.len() - SHOWN));
        }
    };
    section("missing tensors", missing);
    section("unexpected tensors", unexpected);
    section("problems", problems);
    s
}
