//! Failures end with one `error: ` line and a non-zero status; a closed stdout is success.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{assert_one_line_error, owl};

#[test]
fn missing_path() {
    let line = assert_one_line_error(&owl(["inspect", "/nonexistent"]));
    assert_eq!(
        line,
        "error: /nonexistent: no such file or directory, and not a name in the store or the catalog (`owl list` shows the store, `owl catalog` the names owl can pull)"
    );
}

#[test]
fn garbage_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let garbage = tmp.path().join("garbage.gguf");
    let mut bytes = b"\x7fELF".to_vec();
    bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    std::fs::write(&garbage, &bytes).expect("write");
    let line = assert_one_line_error(&owl([std::ffi::OsStr::new("inspect"), garbage.as_os_str()]));
    assert!(line.starts_with(&format!("error: {}: not a GGUF file", garbage.display())), "{line}");

    // A GGUF cut short after its magic and version.
    let truncated = tmp.path().join("truncated.gguf");
    std::fs::write(&truncated, b"GGUF\x03\x00\x00\x00\x05").expect("write");
    let line = assert_one_line_error(&owl([std::ffi::OsStr::new("inspect"), truncated.as_os_str()]));
    assert!(line.contains("truncated GGUF"), "{line}");

    let st = tmp.path().join("bad.safetensors");
    let mut f = std::fs::File::create(&st).expect("create");
    f.write_all(&1_000_000u64.to_le_bytes()).expect("write");
    f.write_all(b"{}").expect("write");
    drop(f);
    let line = assert_one_line_error(&owl([std::ffi::OsStr::new("inspect"), st.as_os_str()]));
    assert_eq!(line, format!("error: {}: header length 1000000 runs past the end of the 10-byte file", st.display()));

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let line = assert_one_line_error(&owl([std::ffi::OsStr::new("inspect"), empty.as_os_str()]));
    assert_eq!(
        line,
        format!("error: {} has neither model.safetensors nor model.safetensors.index.json", empty.display())
    );
}

#[test]
fn bad_command_lines() {
    let run = owl(["inspect"]);
    assert_eq!(run.code, Some(2));
    assert_eq!(
        assert_one_line_error(&run),
        "error: the following required arguments were not provided: <MODEL> (usage: owl inspect <MODEL>)"
    );
    let run = owl(["inspect", "x", "--bogus"]);
    assert_eq!(run.code, Some(2));
    assert!(assert_one_line_error(&run).starts_with("error: unexpected argument '--bogus' found"));
    let run = owl(Vec::<&str>::new());
    assert_eq!(run.code, Some(2));
    assert_one_line_error(&run);
    let run = owl(["frobnicate"]);
    assert_eq!(run.code, Some(2));
    assert_one_line_error(&run);
    let run = owl(["inspect", "--help"]);
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("--tensors") && run.stdout.contains("--json"), "{}", run.stdout);
}

#[test]
fn closed_stdout_is_success() {
    let path = owl_test::demo_model("qwen2.5-coder");
    let mut child = Command::new(env!("CARGO_BIN_EXE_owl"))
        .arg("inspect")
        .arg(&path)
        .arg("--tensors")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn owl");
    // Close the read end before owl writes anything: every write gets EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("error") && !stderr.contains("panicked"), "stderr: {stderr}");
}
