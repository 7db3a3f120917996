//! Resources bounded by the machine (issue #19): a context whose KV cache does not fit is a
//! clear error with the bytes needed, the bytes available and the `-c` that fits — never an
//! aborted allocation; `-c 0` is the trained context capped by memory; `-t` past the CPUs is
//! clamped with a warning.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;

use crate::support::{assert_one_line_error, owl, owl_env, owl_json};

/// The `N` of "-c N fits" in an error line.
fn fitting_ctx(line: &str) -> usize {
    let at = line.rfind("; -c ").unwrap_or_else(|| panic!("no -c suggestion: {line}"));
    line[at + 5..].trim_end_matches(" fits").parse().unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn a_context_too_large_for_memory_names_the_bytes_and_the_fitting_size() {
    for model in ["smollm2", "gemma3", "qwen2.5-coder"] {
        let run = owl(["generate", model, "Hi", "-c", "99999999", "-n", "1"]);
        assert_eq!(run.code, Some(1), "{model}: {}", run.stderr);
        let error = run.stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
        assert!(!run.stderr.contains("panicked") && !run.stderr.contains("memory allocation"), "{}", run.stderr);
        assert!(
            error.contains("a KV cache of 99999999 tokens needs ") && error.contains(" of memory is available"),
            "{error}"
        );
        let fits = fitting_ctx(error);
        assert!((256..99_999_999).contains(&fits), "{error}");
    }
    // The suggestion is right: with a 64 MiB limit the suggested context runs.
    let limit = [("OWL_MEMORY_LIMIT", OsStr::new("64M"))];
    let run = owl_env(["generate", "smollm2", "Hi", "-c", "8192", "-n", "1"], &limit);
    let fits = fitting_ctx(&assert_one_line_error(&run));
    assert!(fits > 0 && fits < 8192, "{fits}");
    let ok = owl_env(["generate", "smollm2", "Hi", "-c", &fits.to_string(), "-n", "1"], &limit);
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
}

#[test]
fn ctx_zero_is_the_trained_context_capped_by_memory() {
    let run = owl(["generate", "smollm2", "Hi", "-c", "0", "-n", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("note: --ctx-size 0: using the model's trained context of 8192 tokens"),
        "{}",
        run.stderr
    );
    let limit = [("OWL_MEMORY_LIMIT", OsStr::new("64M"))];
    let run = owl_env(["generate", "smollm2", "Hi", "-c", "0", "-n", "1"], &limit);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("but ") && run.stderr.contains(" fit in the memory available; using "),
        "{}",
        run.stderr
    );
    // Past the trained context: a warning that says what happens to positions there.
    let run = owl(["generate", "smollm2", "Hi", "-c", "9000", "-n", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("--ctx-size 9000 is more than the 8192 tokens the model was trained for; no rope scaling"),
        "{}",
        run.stderr
    );
}

#[test]
fn threads_and_max_tokens_are_bounded_with_a_word() {
    let out = owl_json(["generate", "smollm2", "Hi", "-t", "1000", "-n", "1", "--json"]);
    assert_eq!(out["ids"].as_array().unwrap().len(), 1);
    let run = owl(["generate", "smollm2", "Hi", "-t", "1000", "-n", "10000000000", "-c", "16", "--temperature", "0"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("warning: --threads 1000 is more than the "), "{}", run.stderr);
    assert!(
        run.stderr.contains("note: --max-tokens 10000000000 is more than the context of 16 tokens"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_absurd_batch_is_an_error_naming_the_scratch_bytes() {
    let run = crate::support::owl(["bench", "smollm2", "-b", "1000000000", "-p", "8", "-n", "0", "-r", "1"]);
    let line = assert_one_line_error(&run);
    assert!(
        line.contains("the activation scratch for 1000000000 tokens a forward call needs ")
            && line.contains(" of memory is available"),
        "{line}"
    );
}
