use std::path::PathBuf;

/// Everything that can go wrong in the store, each naming what it was about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: HTTP {status}{hint}")]
    Status { url: String, status: u16, hint: String },
    #[error("{what}: sha256 {got}, expected {expected}; nothing was installed")]
    Digest { what: String, expected: String, got: String },
    #[error("{what}: {got} bytes, expected {expected}; nothing was installed")]
    Size { what: String, expected: u64, got: u64 },
    #[error("invalid model name '{name}': {why}")]
    Name { name: String, why: String },
    #[error("{0}")]
    NotFound(String),
    #[error("invalid source '{source_spec}': {why}")]
    Source { source_spec: String, why: String },
    #[error("{what}: {why}")]
    Data { what: String, why: String },
    #[error("{}: {why}", path.display())]
    File { path: PathBuf, why: String },
}

impl StoreError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }

    pub(crate) fn data(what: impl Into<String>, why: impl Into<String>) -> StoreError {
        StoreError::Data { what: what.into(), why: why.into() }
    }
}
