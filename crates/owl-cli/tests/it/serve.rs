//! `owl serve` driven by the official `openai`, `ollama` and `anthropic` Python clients (installed by
//! scripts/api_clients/setup.sh into a cached venv; a failed install fails the test):
//! chat streamed and not, logprobs, completions, models, every error case, 32 concurrent
//! streams identical to the same requests one at a time, and a cancelled stream's slot
//! going to the next request. Ends each server with SIGTERM and expects a clean exit; with
//! streams open, SIGTERM ends them with a final chunk after the grace period.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) const KEY: &str = "test-key-123";

/// The venv's python, made on first use.
fn client_python() -> PathBuf {
    owl_test::setup_python("api_clients/setup.sh", "the API clients")
}

/// A running `owl serve smollm2` on a free port.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    log: mpsc::Receiver<String>,
}

impl Server {
    pub(crate) fn start(extra: &[&str]) -> Server {
        Server::start_model("smollm2", &[&["-c", "1024"], extra].concat())
    }

    /// `owl serve MODEL` with `extra` flags (which set `-c`).
    fn start_model(model: &str, extra: &[&str]) -> Server {
        Server::start_models(&[model], extra)
    }

    /// `owl serve MODEL...` with `extra` flags (which set `-c`).
    pub(crate) fn start_models(models: &[&str], extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_owl"))
            .arg("serve")
            .args(models)
            .args(["--port", "0", "--api-key", KEY, "-t", "2"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start owl serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let url = loop {
            let line = log.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("no address: {seen:?}"));
            if let Some(rest) = line.split(" on http://").nth(1) {
                break format!("http://{}", rest.split_whitespace().next().expect("address"));
            }
            seen.push(line);
        };
        Server { child, url, log }
    }

    fn run_checks(&self, python: &Path, checks: &[&str]) {
        self.run_script_with(python, "openai_checks.py", checks, checks);
    }

    /// Runs tests/clients/SCRIPT with the server's URL and key; it must report `NAME: ok`,
    /// NAME its name without `_checks.py`.
    fn run_script(&self, python: &Path, script: &str, args: &[&str]) {
        self.run_script_with(python, script, args, &[]);
    }

    /// Runs tests/clients/SCRIPT with the server's URL and key, and ARGS; each of CHECKS (or,
    /// with none, the script's name without `_checks.py`) must report `NAME: ok`.
    fn run_script_with(&self, python: &Path, script: &str, args: &[&str], checks: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(script);
        let out = Command::new(python).arg(&script).arg(&self.url).arg(KEY).args(args).output().expect("python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{checks:?} failed:\n{stdout}\n{stderr}\nserver: {:?}",
            self.log.try_iter().collect::<Vec<_>>()
        );
        let name = script.file_name().and_then(|n| n.to_str()).unwrap_or("").trim_end_matches("_checks.py").to_string();
        let expected: Vec<String> =
            if checks.is_empty() { vec![name] } else { checks.iter().map(|c| c.to_string()).collect() };
        for check in expected {
            assert!(stdout.contains(&format!("{check}: ok")), "{stdout}");
        }
        eprint!("{stdout}");
    }

    /// What the server logged so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// SIGTERM: the server stops accepting and exits 0.
    pub(crate) fn stop(mut self) {
        // SAFETY: kill(2) with a pid we own and a valid signal.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "owl serve exited with {status}: {:?}", self.log.try_iter().collect::<Vec<_>>());
    }
}

#[test]
fn openai_client_basics_errors_and_concurrency() {
    let python = client_python();
    let server = Server::start(&["--parallel", "8"]);
    server.run_checks(&python, &["basics", "structured", "errors", "concurrency"]);
    server.stop();
}

/// A two-turn tool conversation (forced, then `auto`), streamed calls, `none`, and Ollama's
/// tool calls, with qwen2.5-coder (tests/clients/tools_checks.py).
#[test]
fn tool_calls_through_the_openai_and_ollama_clients() {
    let python = client_python();
    let server = Server::start_model("qwen2.5-coder", &["--parallel", "2", "-c", "2048"]);
    server.run_script(&python, "tools_checks.py", &["qwen2.5-coder"]);
    server.stop();
}

/// Issue #14's volume check: on every demo model, 50 objects for each of 5 schemas at
/// temperature 0 and 1, each parsed and validated with `jsonschema`
/// (tests/clients/structured_checks.py), 8 at a time.
#[test]
fn structured_output_validates_on_every_demo_model() {
    let python = client_python();
    // gemma3's demo build is the base model (no chat template): its schema goes through
    // /v1/completions.
    for (model, route) in [("smollm2", "chat"), ("gemma3", "completions"), ("qwen2.5-coder", "chat")] {
        let server = Server::start_model(model, &["--parallel", "8", "-c", "1024"]);
        server.run_script(&python, "structured_checks.py", &[model, route]);
        server.stop();
    }
}

#[test]
fn ollama_and_anthropic_clients() {
    let python = client_python();
    let server = Server::start(&["--parallel", "2"]);
    server.run_script(&python, "ollama_checks.py", &[]);
    server.run_script(&python, "anthropic_checks.py", &[]);
    server.stop();
}

#[test]
fn a_cancelled_stream_frees_its_slot() {
    let python = client_python();
    let server = Server::start(&["--parallel", "1", "--queue", "0"]);
    server.run_checks(&python, &["cancel"]);
    server.stop();
}

/// SIGTERM with replies in flight: after `--shutdown-grace` each open stream ends with its
/// final chunk, the waiting request gets 503, and the server exits 0.
#[test]
fn sigterm_ends_open_streams_with_a_final_chunk() {
    let python = client_python();
    let mut server = Server::start(&["--parallel", "2", "--queue", "4", "--shutdown-grace", "1"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/shutdown_checks.py");
    let mut checks =
        Command::new(&python).arg(&script).arg(&server.url).arg(KEY).stdout(Stdio::piped()).spawn().expect("python");
    let mut stdout = BufReader::new(checks.stdout.take().expect("stdout"));
    let mut line = String::new();
    while line.trim() != "streaming" {
        line.clear();
        let n = stdout.read_line(&mut line).expect("read");
        assert!(n > 0, "the checks ended before the streams were open: {:?}", checks.wait());
    }
    let signalled = std::time::Instant::now();
    // SAFETY: kill(2) with a pid we own and a valid signal.
    assert_eq!(unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) }, 0);
    let status = server.child.wait().expect("wait");
    let took = signalled.elapsed();
    assert!(status.success(), "owl serve exited with {status}: {:?}", server.log.try_iter().collect::<Vec<_>>());
    // The grace (1 s) and one step: far below the 5 s allowed for the final chunks.
    assert!(took < Duration::from_secs(5), "the shutdown took {took:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
    assert!(checks.wait().expect("wait").success(), "{rest}");
    assert!(rest.contains("shutdown: ok"), "{rest}");
    eprint!("{rest}");
}

/// A bounded soak: 2,000 requests of every route, streamed and not, with disconnects and bad
/// requests mixed in (tests/clients/soak_checks.py). The server's RSS after all of them is
/// within 5 % of its RSS after the first 100.
#[test]
fn soak_keeps_memory_flat() {
    let python = client_python();
    let server = Server::start(&["--parallel", "8", "--max-body-bytes", "65536"]);
    let pid = server.child.id().to_string();
    server.run_script(&python, "soak_checks.py", &[&pid]);
    server.stop();
}
