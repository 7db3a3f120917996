//! The hostile chat-template corpus (tests/corpus/templates, listed with what each stands
//! for in INDEX.tsv): every template must end in a clear error within the default render
//! limits — compile-time refusal, an undefined name, no loader, fuel, recursion depth or
//! output size — in bounded time, and none may touch a file. Cases whose expectation starts
//! with `sandbox:` escape minijinja's own limits and are stopped by the limits of the
//! process owl renders templates in; crates/owl-cli/tests/it/corpus.rs runs those.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use owl_tokenizer::{ChatMessage, ChatTemplate};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/templates")
}

/// (file, what it stands for, expected error fragment) from INDEX.tsv.
pub fn hostile_templates() -> Vec<(String, String, String)> {
    let index = std::fs::read_to_string(corpus_dir().join("INDEX.tsv")).expect("INDEX.tsv");
    index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 3, "INDEX.tsv line: {l}");
            (cols[0].to_string(), cols[1].to_string(), cols[2].to_string())
        })
        .collect()
}

#[test]
fn every_hostile_template_ends_in_a_clear_error() {
    let cases = hostile_templates();
    let mut listed: Vec<&str> = cases.iter().map(|(f, _, _)| f.as_str()).collect();
    listed.sort_unstable();
    let mut present: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jinja"))
        .collect();
    present.sort_unstable();
    assert_eq!(listed, present, "every template is listed in INDEX.tsv, and only those");

    let marker = Path::new("/tmp/owl-template-pwned");
    let _ = std::fs::remove_file(marker);
    let messages = [ChatMessage::system("You are helpful."), ChatMessage::user("Hi")];
    for (file, stands_for, expect) in &cases {
        // Contained only by the renderer process's limits: the owl-cli corpus test runs it.
        if expect.starts_with("sandbox:") {
            continue;
        }
        let source = std::fs::read_to_string(corpus_dir().join(file)).expect("template");
        let started = Instant::now();
        let outcome = ChatTemplate::new(&source, "<s>", "</s>").and_then(|t| t.render(&messages, None, true));
        let elapsed = started.elapsed();
        let err = match outcome {
            Ok(text) => panic!("{file} ({stands_for}) rendered {} bytes instead of failing", text.len()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expect.as_str()), "{file} ({stands_for}): {err}");
        assert!(!err.contains('\n'), "{file}: the error is one line: {err}");
        // The limits stop each case quickly; generous for a loaded 2-core CI machine.
        assert!(elapsed < Duration::from_secs(30), "{file}: took {elapsed:?}");
    }
    assert!(!marker.exists(), "a template reached the file system");
}
