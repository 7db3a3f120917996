//! `owl run` on smollm2: one-shot chat replies through the chat template.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::owl;

#[test]
fn one_shot_reply_without_template_tokens() {
    let run = owl(["run", "smollm2", "Say hello", "--temperature", "0", "-n", "16"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.ends_with('\n'));
    let reply = run.stdout.trim();
    assert!(!reply.is_empty(), "empty reply");
    for marker in ["<|im_end|>", "<|im_start|>", "assistant\n", "<|endoftext|>"] {
        assert!(!reply.contains(marker), "{marker:?} in {reply:?}");
    }
    assert!(run.stderr.is_empty(), "{}", run.stderr);

    // The same message from a non-terminal stdin gives the same (greedy) reply;
    // --verbose adds the speeds on stderr.
    let mut child = Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(["run", "smollm2", "--temperature", "0", "-n", "16", "--verbose"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Say hello").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), run.stdout);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("prompt:") && stderr.contains("generation:") && stderr.contains("tokens/s"), "{stderr}");

    // A system message changes the prompt, and so (greedy, 16 tokens) the reply.
    let system =
        owl(["run", "smollm2", "Say hello", "--temperature", "0", "-n", "16", "--system", "Answer only in French."]);
    assert_eq!(system.code, Some(0), "{}", system.stderr);
    assert_ne!(system.stdout, run.stdout);
}

/// The interactive session on a pseudo-terminal (util-linux `script` runs owl on one and
/// forwards our stdin to it): two turns, the second a `"""` block that reuses the cache,
/// `/clear`, a turn that matches the first again, then Ctrl-D (end of input) leaves.
#[test]
fn interactive_session_on_a_terminal() {
    let owl = env!("CARGO_BIN_EXE_owl");
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{owl} run smollm2 --temperature 0 -n 24 --verbose"), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` is needed for the terminal test");
    child.stdin.take().unwrap().write_all(b"Say hi\n\"\"\"\nWhat is\n2+2?\n\"\"\"\n/clear\nSay hi\n/bye\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(out.status.success(), "{text}");
    // The terminal echoes our input first; owl's output follows.
    let owl_out = &text[text.find(">>> ").unwrap_or_else(|| panic!("no prompt: {text}"))..];
    let replies: Vec<&str> =
        owl_out.lines().filter_map(|l| l.strip_prefix(">>> ")).map(|l| l.trim_start_matches("... ")).collect();
    let one_shot = crate::support::owl(["run", "smollm2", "Say hi", "--temperature", "0", "-n", "24"]);
    assert_eq!(one_shot.code, Some(0), "{}", one_shot.stderr);
    let first = one_shot.stdout.trim_end();
    assert!(!first.is_empty());
    // Four turns, then the prompt that read /bye.
    assert_eq!(replies.len(), 5, "{owl_out}");
    assert_eq!(replies[4].trim(), "", "{owl_out}");
    assert_eq!(replies[0], first, "{owl_out}");
    // The multi-line turn reached the model whole: it answers the sum (as "4" or "four") or
    // restates it, whichever greedy path the kernels' rounding gives (24 tokens: at 16 the
    // 135M model can still be on its preamble).
    assert!(
        replies[1].contains('4') || replies[1].to_lowercase().contains("four") || replies[1].contains("2+2"),
        "2+2: {owl_out}"
    );
    assert_eq!(replies[2], "Cleared the conversation.");
    // After /clear the conversation starts afresh: the same reply as the first turn.
    assert_eq!(replies[3], first, "{owl_out}");
    // The second turn ran only its new tokens; the first turn's are reused.
    assert!(owl_out.contains("reused from the cache"), "{owl_out}");
    assert_eq!(owl_out.matches("reused from the cache").count(), 1, "{owl_out}");
}

/// A model without a template of its own (gemma3 is the pre-trained Gemma 3 270M) gets a
/// notice and a plain continuation, the same tokens `owl generate` gives; `--template`
/// makes it chat through a template, by name or from a file.
#[test]
fn base_models_are_named_and_templates_can_be_chosen() {
    let run = owl(["run", "gemma3", "The capital of France is", "--temperature", "0", "-n", "6"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("gemma3 has no chat template of its own: it looks like a base (pre-trained) model")
            && run.stderr.contains("'owl generate'"),
        "{}",
        run.stderr
    );
    let generate = owl(["generate", "gemma3", "The capital of France is", "--temperature", "0", "-n", "6"]);
    assert_eq!(run.stdout, generate.stdout);

    let named =
        owl(["run", "gemma3", "The capital of France is", "--temperature", "0", "-n", "6", "--template", "gemma"]);
    assert_eq!(named.code, Some(0), "{}", named.stderr);
    assert!(!named.stderr.contains("base (pre-trained)"), "{}", named.stderr);

    // A template file: the prompt is what it renders (here: the last message alone).
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain.jinja");
    std::fs::write(&file, "{{ messages[-1]['content'] }}").unwrap();
    let from_file = owl([
        "run",
        "smollm2",
        "The capital of France is",
        "--temperature",
        "0",
        "-n",
        "6",
        "--template",
        file.to_str().unwrap(),
    ]);
    let plain = owl(["generate", "smollm2", "The capital of France is", "--temperature", "0", "-n", "6"]);
    assert_eq!(from_file.code, Some(0), "{}", from_file.stderr);
    assert_eq!(from_file.stdout, plain.stdout);

    let line = crate::support::assert_one_line_error(&owl(["run", "smollm2", "Hi", "--template", "nonesuch"]));
    assert!(
        line.contains("--template nonesuch: no such file, and not a built-in template (built-in: chatml, gemma)"),
        "{line}"
    );
    std::fs::write(&file, "{% for %}").unwrap();
    let line =
        crate::support::assert_one_line_error(&owl(["run", "smollm2", "Hi", "--template", file.to_str().unwrap()]));
    assert!(line.contains("--template"), "{line}");
}
