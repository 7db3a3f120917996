//! `owl perplexity` on smollm2 over the GPL-3 text (Debian's common-licenses).

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::Path;

use crate::support::{assert_one_line_error, owl, owl_json};

const TEXT: &str = "/usr/share/common-licenses/GPL-3";

#[test]
fn perplexity_of_a_license_text() {
    assert!(Path::new(TEXT).exists(), "{TEXT} is needed (Debian's base-files)");
    let out = owl_json(["perplexity", "smollm2", TEXT, "--ctx", "128", "--chunks", "3", "--json"]);
    let ppl = out["ppl"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0 && ppl < 100.0, "{out}");
    assert_eq!(out["chunks"], 3);
    // Each 128-token window scores tokens 65..=127: 63 of them.
    assert_eq!(out["tokens"], 3 * 63);
    let nll = out["nll"].as_f64().unwrap();
    assert!((nll.exp() - ppl).abs() < 1e-9 * ppl, "{out}");

    let run = owl(["perplexity", "smollm2", TEXT, "--ctx", "128", "--chunks", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.starts_with("Final estimate: PPL = "), "{}", run.stdout);
    assert!(run.stderr.contains("[1]"), "{}", run.stderr);

    // Too short a text for two windows is an error, not a number.
    let tmp = tempfile::tempdir().unwrap();
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "Just a few words.").unwrap();
    let err = assert_one_line_error(&owl([
        OsStr::new("perplexity"),
        OsStr::new("smollm2"),
        short.as_os_str(),
        OsStr::new("--ctx"),
        OsStr::new("128"),
    ]));
    assert!(err.contains("256") || err.contains("tokens"), "{err}");
}
