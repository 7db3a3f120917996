use serde::Serialize;

/// What a pull reports as it goes; `owl pull --json` prints one a line, a terminal gets
/// progress bars. Download events are throttled by the store (a few a second per file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// Looking a source up (index page, repository listing).
    Resolving { source: String },
    /// Another process is pulling the same file; this one waits for it.
    Waiting { file: String },
    /// Bytes of a file so far (`completed` starts above 0 when a download resumes).
    Download { file: String, completed: u64, total: Option<u64> },
    /// Checking a file's sha256.
    Verifying { file: String },
    /// A file is in the store (downloaded now, or already there).
    Stored { file: String, digest: String, size: u64, cached: bool },
    /// The manifest is written: the model can be used.
    Done { name: String, digest: String, size: u64, path: String },
}
