//! Chat templates rendered in a child process with hard limits.
//!
//! A template is code from whoever published the model. Inside owl's process it is bounded
//! by minijinja's fuel, recursion and output limits (docs/SECURITY.md), but one shape of
//! template escapes them: minijinja keeps `list + list` lazy and materializes a 33-deep
//! chain without charging fuel, so a loop that doubles a list makes the renderer copy 2^33
//! elements. To contain that and anything like it, every render runs in a child: this same
//! binary started as `owl __render-template`, with its address space capped
//! ([`MEMORY_LIMIT`], `RLIMIT_AS`) and its CPU time capped ([`CPU_SECONDS`], `RLIMIT_CPU`),
//! reading one JSON request on stdin and writing one JSON reply on stdout. A child that the
//! kernel stops is an error naming the limit, and owl goes on. Starting the child costs a
//! few milliseconds a turn.

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use owl_tokenizer::{ChatMessage, ChatTemplate, TemplateOrigin};

/// The hidden first argument that makes the binary a renderer.
pub const SUBCOMMAND: &str = "__render-template";

/// Address space of the renderer: the binary, minijinja and a 16 MiB prompt fit many times.
pub const MEMORY_LIMIT: u64 = 1 << 30;

/// CPU seconds of one render; the fuel limit ends any template that is not pathological in
/// well under a second.
pub const CPU_SECONDS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    source: String,
    bos_token: String,
    eos_token: String,
    messages: Vec<ChatMessage>,
    /// OpenAI's `tools` array, as the template sees it (`none` when absent).
    #[serde(default)]
    tools: Option<serde_json::Value>,
    add_generation_prompt: bool,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Text(String),
    Error(String),
}

/// Renders `messages` through `template` in a limited child process.
pub fn render(
    template: &ChatTemplate,
    messages: &[ChatMessage],
    tools: Option<&serde_json::Value>,
    add_generation_prompt: bool,
) -> anyhow::Result<String> {
    let request = Request {
        source: template.source().to_string(),
        bos_token: template.bos_token().to_string(),
        eos_token: template.eos_token().to_string(),
        messages: messages.to_vec(),
        tools: tools.cloned(),
        add_generation_prompt,
    };
    // The running binary itself, even when the file on disk was replaced since it started
    // (an upgrade under a running server): Linux's /proc/self/exe is that inode.
    let proc_exe = std::path::Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().context("locating the owl binary to render the chat template")?
    };
    let mut command = Command::new(exe);
    command.arg(SUBCOMMAND).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    limit_child(&mut command);
    let mut child = command.spawn().context("starting the chat template renderer")?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("renderer has no stdin"))?;
    // The request is written from a thread: a child that dies early must not block us.
    let body = serde_json::to_vec(&request)?;
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut out).context("reading the chat template renderer")?;
    }
    let status = child.wait().context("waiting for the chat template renderer")?;
    let _ = writer.join();
    if !status.success() {
        bail!(
            "chat template failed: rendering was stopped by its limits ({} s of CPU, {} MiB of memory): {}",
            CPU_SECONDS,
            MEMORY_LIMIT >> 20,
            describe_status(&status)
        );
    }
    match serde_json::from_slice::<Reply>(&out).context("the chat template renderer's reply")? {
        Reply::Text(text) => Ok(text),
        Reply::Error(message) => Err(anyhow!(message)),
    }
}

/// The child's side: one request on stdin, one reply on stdout.
pub fn serve() -> ExitCode {
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return ExitCode::FAILURE;
    }
    let reply = match serde_json::from_slice::<Request>(&input) {
        Err(e) => Reply::Error(format!("bad render request: {e}")),
        Ok(r) => match ChatTemplate::with_origin(&r.source, &r.bos_token, &r.eos_token, TemplateOrigin::User)
            .and_then(|t| t.render(&r.messages, r.tools.as_ref(), r.add_generation_prompt))
        {
            Ok(text) => Reply::Text(text),
            Err(e) => Reply::Error(e.to_string()),
        },
    };
    let mut stdout = std::io::stdout().lock();
    let written =
        serde_json::to_writer(&mut stdout, &reply).map_err(std::io::Error::from).and_then(|()| stdout.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(unix)]
fn limit_child(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls setrlimit, which is
    // async-signal-safe, on a stack value, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            let set = |resource, limit: u64| {
                let value = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: limit as libc::rlim_t };
                if libc::setrlimit(resource, &value) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            set(libc::RLIMIT_AS, MEMORY_LIMIT)?;
            set(libc::RLIMIT_CPU, CPU_SECONDS)
        });
    }
}

#[cfg(not(unix))]
fn limit_child(_command: &mut Command) {}

fn describe_status(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        match status.signal() {
            Some(libc::SIGXCPU) | Some(libc::SIGKILL) => return "out of CPU time".to_string(),
            Some(libc::SIGABRT) | Some(libc::SIGSEGV) => return "out of memory or stack".to_string(),
            Some(s) => return format!("signal {s}"),
            None => {}
        }
    }
    format!("{status}")
}
