//! Running the built `owl` binary.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// The result of one `owl` run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `owl ARGS...` with extra environment variables.
pub fn owl_env<I, S>(args: I, env: &[(&str, &OsStr)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_owl"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output { status, stdout, stderr } = cmd.output().expect("run owl");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
    }
}

/// Runs `owl ARGS...`.
pub fn owl<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    owl_env(args, &[])
}

/// Runs `owl ARGS...`, asserts success and parses stdout as JSON.
pub fn owl_json<I, S>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let run = owl(args);
    assert_eq!(run.code, Some(0), "owl failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout))
}

/// Asserts a failed run with exactly one `error: ` line on stderr; returns that line.
#[track_caller]
pub fn assert_one_line_error(run: &Run) -> String {
    assert_ne!(run.code, Some(0), "expected failure; stdout:\n{}", run.stdout);
    assert!(run.code.is_some(), "killed by a signal");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr should be one line, got:\n{}", run.stderr);
    assert!(lines[0].starts_with("error: "), "stderr: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "stderr: {}", run.stderr);
    assert!(run.stdout.is_empty(), "stdout should be empty, got:\n{}", run.stdout);
    lines[0].to_string()
}
