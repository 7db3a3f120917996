//! Everything the binary writes: aligned key/value tables and JSON on stdout, one-line
//! errors and progress on stderr, and the human formats for sizes and counts.
//!
//! Output goes through `io::Write` and returns `io::Result`, never `println!` (which panics
//! on a closed pipe): `owl inspect m --tensors | head` must end quietly, and `main` maps a
//! `BrokenPipe` anywhere in the error chain to success, as ripgrep does.

use std::io::{self, Write};

use serde::Serialize;

/// Writes `value` as pretty JSON plus a newline on stdout.
pub fn json<T: Serialize>(value: &T) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes `key  value` rows with the keys padded to one column on stdout.
pub fn table(rows: &[(String, String)]) -> io::Result<()> {
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = io::stdout().lock();
    for (key, value) in rows {
        writeln!(out, "{key:<width$}  {value}")?;
    }
    out.flush()
}

/// Writes pre-formatted lines on stdout.
pub fn lines<I: IntoIterator<Item = String>>(lines: I) -> io::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// Progress and warnings go to stderr; a failure to write them is not worth failing for.
pub fn progress(message: &str) {
    let _ = writeln!(io::stderr().lock(), "{message}");
}

/// A warning line on stderr.
pub fn warning(message: &str) {
    progress(&format!("warning: {message}"));
}

/// A note on stderr: something the user should know that is not a problem.
pub fn note(message: &str) {
    progress(&format!("note: {message}"));
}

/// Whether the error is, somewhere in its chain, a broken pipe on output.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    // serde_json wraps the io::Error of a failed write without exposing it as a source.
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(io::ErrorKind::BrokenPipe))
    })
}

/// The error and its causes on one line, joined with ": ". A cause whose text the previous
/// message already ends with is skipped (some library errors print their source themselves),
/// and line breaks inside messages become spaces, so the result is always one line.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Bytes with a decimal unit, e.g. "98.36 MB" (as `ls -h --si` and llama.cpp report sizes).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
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

/// A count with a short scale, e.g. "134.52 M" (parameters are quoted this way).
pub fn human_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.2} K", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} B", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(98_362_432), "98.36 MB");
        assert_eq!(human_bytes(2_000_000_000_000), "2.00 TB");
        assert_eq!(human_count(139_584), "139.58 K");
        assert_eq!(human_count(134_515_008), "134.52 M");
        assert_eq!(human_count(7_241_732_096), "7.24 B");
        assert_eq!(human_count(42), "42");
    }

    #[test]
    fn error_line_joins_and_dedups() {
        let io = io::Error::new(io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let err = anyhow::Error::new(io).context("cannot open x.gguf: No such file or directory (os error 2)");
        assert_eq!(error_line(&err), "cannot open x.gguf: No such file or directory (os error 2)");
        let err = anyhow::anyhow!("inner\nsecond line").context("outer");
        assert_eq!(error_line(&err), "outer: inner second line");
    }

    #[test]
    fn broken_pipe_is_found_in_the_chain() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
        let json = serde_json::Error::io(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&anyhow::Error::new(json).context("writing")));
    }
}
