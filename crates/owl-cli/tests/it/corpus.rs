//! Untrusted input through the binary (issue #19): every crafted file of the loader corpora
//! and every hostile chat template ends in one `error:` line and exit status 1 — no panic,
//! no abort, no signal — while owl runs under a 2 GiB address-space limit (`ulimit -v`), so
//! that an allocation sized from the file's numbers fails the test rather than passing by
//! luck on a machine with memory to spare. docs/SECURITY.md maps each advisory to its case.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::Run;

/// 2 GiB, in the KiB `ulimit -v` counts.
const ADDRESS_SPACE_KIB: u64 = 2 * 1024 * 1024;

/// Runs `owl ARGS` under the address-space limit.
fn owl_limited(args: &[&str]) -> Run {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_owl"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The run failed cleanly: exit 1, one `error:` line (after any warnings or notes), no panic.
fn refused_cleanly(run: &Run) -> Result<String, String> {
    let error_lines: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    match (run.code, error_lines.as_slice()) {
        (Some(1), [line]) if !run.stderr.contains("panicked") && !run.stderr.contains("internal error") => {
            Ok(line.to_string())
        }
        (None, _) => Err(format!("killed by a signal; stderr: {}", run.stderr)),
        (code, _) => Err(format!("exit {code:?}; stderr: {}", run.stderr)),
    }
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

#[test]
fn the_limit_is_real() {
    // A 4 GiB allocation cannot succeed under the limit: the KV cache check sees the
    // machine's memory, the allocator then fails, and owl still reports it as an error.
    let run = owl_limited(&["generate", "smollm2", "Hi", "-c", "180000", "-n", "1"]);
    let line = refused_cleanly(&run).unwrap();
    assert!(line.contains("KV cache"), "{line}");
}

#[test]
fn every_crafted_gguf_is_refused_cleanly() {
    let corpus = files(&crate_dir("owl-formats").join("tests/corpus/gguf"), "gguf");
    assert!(corpus.len() >= 50, "{} files", corpus.len());
    let mut failures = Vec::new();
    for file in &corpus {
        let path = file.to_str().unwrap();
        for args in [vec!["inspect", path], vec!["generate", path, "Hi", "-n", "1"], vec!["tokenize", path, "Hi"]] {
            if let Err(why) = refused_cleanly(&owl_limited(&args)) {
                failures.push(format!("{args:?}: {why}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_crafted_vocabulary_is_refused_cleanly() {
    let corpus = files(&crate_dir("owl-tokenizer").join("tests/corpus/vocab"), "gguf");
    assert!(corpus.len() >= 8, "{} files", corpus.len());
    let mut failures = Vec::new();
    for file in &corpus {
        // `inspect` shows such a file (it is a study tool); whatever uses the tokenizer refuses it.
        for command in ["tokenize", "detokenize"] {
            let arg = if command == "tokenize" { "Hi" } else { "1" };
            match refused_cleanly(&owl_limited(&[command, file.to_str().unwrap(), arg])) {
                Ok(line) if line.contains("tokenizer") => {}
                Ok(line) => failures.push(format!("{command} {}: not a tokenizer error: {line}", file.display())),
                Err(why) => failures.push(format!("{command} {}: {why}", file.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_hostile_template_is_refused_cleanly() {
    let dir = crate_dir("owl-tokenizer").join("tests/corpus/templates");
    let corpus = files(&dir, "jinja");
    assert!(corpus.len() >= 20, "{} files", corpus.len());
    // Cases that only the renderer process's limits stop must say so.
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let sandboxed: Vec<&str> = index
        .lines()
        .filter(|l| l.ends_with("\tsandbox: stopped by its limits"))
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert!(!sandboxed.is_empty());
    let mut failures = Vec::new();
    for file in &corpus {
        let args = ["run", "smollm2", "Hi", "-n", "1", "--template", file.to_str().unwrap()];
        let name = file.file_name().unwrap().to_str().unwrap();
        match refused_cleanly(&owl_limited(&args)) {
            Ok(line) if sandboxed.contains(&name) && !line.contains("stopped by its limits") => {
                failures.push(format!("{name}: expected the renderer's limits: {line}"))
            }
            Ok(line) if line.contains("chat template") => {}
            Ok(line) => failures.push(format!("{name}: not a template error: {line}")),
            Err(why) => failures.push(format!("{name}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The crafted Hugging Face directories of tests/corpus/hf (INDEX.tsv says what each
/// stands for): a config.json or tokenizer.json case beside valid companions and the tiny
/// llama fixture's weights.
#[test]
fn every_crafted_hf_directory_is_refused_cleanly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/hf");
    let weights = owl_test::fixture("models/llama/model.safetensors");
    let build = |config: &Path, tokenizer: &Path| -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(config, dir.path().join("config.json")).unwrap();
        std::fs::copy(tokenizer, dir.path().join("tokenizer.json")).unwrap();
        std::fs::copy(&weights, dir.path().join("model.safetensors")).unwrap();
        dir
    };
    let (config, tokenizer) = (corpus.join("config.json"), corpus.join("tokenizer.json"));
    let valid = build(&config, &tokenizer);
    let run = owl_limited(&["generate", valid.path().to_str().unwrap(), "hello world", "-n", "2"]);
    assert_eq!(run.code, Some(0), "the valid directory runs: {}", run.stderr);

    let index = std::fs::read_to_string(corpus.join("INDEX.tsv")).unwrap();
    let cases: Vec<Vec<&str>> =
        index.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| l.split('\t').collect()).collect();
    let listed: usize = ["config", "tokenizer"].iter().map(|d| files(&corpus.join(d), "json").len()).sum();
    assert_eq!(cases.len(), listed, "every case file is in INDEX.tsv, and only those");
    let mut failures = Vec::new();
    for case in &cases {
        let [file, stands_for, expect] = case[..] else { panic!("INDEX.tsv line {case:?}") };
        let path = corpus.join(file);
        let dir = if file.starts_with("config/") { build(&path, &tokenizer) } else { build(&config, &path) };
        match refused_cleanly(&owl_limited(&["generate", dir.path().to_str().unwrap(), "hello", "-n", "1"])) {
            Ok(line) if line.contains(expect) => {}
            Ok(line) => failures.push(format!("{file} ({stands_for}): expected {expect:?} in {line}")),
            Err(why) => failures.push(format!("{file} ({stands_for}): {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_crafted_safetensors_file_is_refused_cleanly() {
    let corpus = files(&crate_dir("owl-formats").join("tests/corpus/safetensors"), "safetensors");
    assert!(corpus.len() >= 10, "{} files", corpus.len());
    let mut failures = Vec::new();
    for file in &corpus {
        let path = file.to_str().unwrap();
        for args in [vec!["inspect", path], vec!["tensor", path, "t", "--format", "json"]] {
            if let Err(why) = refused_cleanly(&owl_limited(&args)) {
                failures.push(format!("{args:?}: {why}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// CVE-2024-34359's real vector: the payload inside the model file's own chat template.
/// The model loads (inspect and generate need no template) and `run` refuses the template.
#[test]
fn a_model_file_carrying_an_ssti_template_is_refused_at_chat() {
    use owl_formats::gguf::{GgufFile, GgufWriter, MetadataValue};
    let payload = std::fs::read_to_string(
        crate_dir("owl-tokenizer").join("tests/corpus/templates/cve-2024-34359_subclasses_popen.jinja"),
    )
    .unwrap();
    let source = GgufFile::open(owl_test::demo_model("smollm2")).unwrap();
    let mut writer = GgufWriter::from_file(&source);
    writer.set_metadata("tokenizer.chat_template", MetadataValue::String(payload));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("smollm2-ssti.gguf");
    writer.write_file(&path).unwrap();
    let path = path.to_str().unwrap();

    let line = refused_cleanly(&owl_limited(&["run", path, "Hi", "-n", "1"])).unwrap();
    assert!(line.contains("chat template") && line.contains("refused"), "{line}");
    assert!(!Path::new("/tmp/owl-template-pwned").exists());
    let generate = owl_limited(&["generate", path, "Hi", "-n", "1"]);
    assert_eq!(generate.code, Some(0), "{}", generate.stderr);
}
