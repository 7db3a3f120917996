//! The command line as a newcomer meets it (issue #21): one flag vocabulary, errors that
//! name the flag typed, output that loses nothing, context notices, stdin prompts, bench
//! columns and help text. Each test runs the built binary on smollm2 with tiny settings.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{assert_one_line_error, owl, owl_json};

const PROMPT: &str = "The capital of France is";

fn greedy_json(extra: &[&str]) -> Value {
    let mut args = vec!["generate", "smollm2", PROMPT, "--temperature", "0", "--json"];
    args.extend_from_slice(extra);
    owl_json(args)
}

fn ids(v: &Value) -> Vec<u64> {
    v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// Runs `owl ARGS` with `input` on stdin (a pipe, not a terminal).
fn owl_stdin(args: &[&str], input: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// Runs `command` on a pseudo-terminal (util-linux `script`), feeding `input`; returns
/// everything the terminal showed.
fn on_terminal(command: &str, input: &str) -> (bool, String) {
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` is needed for the terminal tests");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).replace('\r', ""))
}

#[test]
fn ctx_size_is_one_flag_with_ctx_as_its_alias() {
    for flag in ["-c", "--ctx-size", "--ctx"] {
        let out = greedy_json(&[flag, "8", "-n", "-1"]);
        // 8 positions: the prompt's 5 tokens, then the context fills.
        assert_eq!(out["prompt_ids"].as_array().unwrap().len() + ids(&out).len(), 8 + 1, "{flag}: {out}");
        assert_eq!(out["finish_reason"], "length", "{flag}");
    }
    let text = std::env::temp_dir().join("owl-interface-ppl.txt");
    std::fs::write(&text, "word ".repeat(400)).unwrap();
    for flag in ["-c", "--ctx-size", "--ctx"] {
        let run = owl(["perplexity", "smollm2", text.to_str().unwrap(), flag, "64", "--chunks", "1", "--json"]);
        assert_eq!(run.code, Some(0), "{flag}: {}", run.stderr);
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(v["chunks"], 1, "{flag}");
        // llama-perplexity scores the second half of each window but its first token.
        assert_eq!(v["tokens"], 31, "{flag}");
    }
}

#[test]
fn minus_one_means_no_limit_and_a_random_seed() {
    // -n -1: until the context is full (no end-of-text in 12 positions for this prompt).
    let out = greedy_json(&["-n", "-1", "-c", "12"]);
    assert_eq!(out["finish_reason"], "length");
    assert_eq!(ids(&out).len(), 12 + 1 - out["prompt_ids"].as_array().unwrap().len());
    // --seed -1 draws a seed, reported as a string (a u64 is past JSON's exact 2^53).
    let a = owl_json(["generate", "smollm2", PROMPT, "-n", "1", "--seed", "-1", "--json"]);
    let b = owl_json(["generate", "smollm2", PROMPT, "-n", "1", "--seed", "-1", "--json"]);
    let (sa, sb) = (a["seed"].as_str().unwrap(), b["seed"].as_str().unwrap());
    assert!(sa.parse::<u64>().is_ok() && sb.parse::<u64>().is_ok(), "{sa} {sb}");
    assert_ne!(sa, sb, "two random seeds");
    let max = owl_json(["generate", "smollm2", PROMPT, "-n", "1", "--seed", "18446744073709551615", "--json"]);
    assert_eq!(max["seed"], "18446744073709551615");

    let line = assert_one_line_error(&owl(["generate", "smollm2", PROMPT, "-n", "-2"]));
    assert!(line.contains("'--max-tokens <N>'") && line.contains("-1 for no limit"), "{line}");
    let line = assert_one_line_error(&owl(["generate", "smollm2", PROMPT, "--seed", "-7"]));
    assert!(line.contains("'--seed <N>'") && line.contains("-1 for a random seed"), "{line}");
}

#[test]
fn one_line_errors_keep_clap_suggestions() {
    let run = owl(["generate", "smollm2", PROMPT, "--temprature", "0"]);
    assert_eq!(run.code, Some(2));
    let line = assert_one_line_error(&run);
    assert!(line.contains("tip: a similar argument exists: '--temperature'"), "{line}");
    // clap lists every close subcommand ("'convert', 'generate'" once convert exists), so only
    // the tip and the intended name are pinned.
    let line = assert_one_line_error(&owl(["generat", "smollm2"]));
    assert!(line.contains("tip: ") && line.contains("'generate'"), "{line}");
}

#[test]
fn model_names_ignore_case_and_near_misses_get_a_suggestion() {
    let lower = owl(["tokenize", "smollm2", "Hello"]);
    let upper = owl(["tokenize", "SMOLLM2", "Hello"]);
    assert_eq!(lower.code, Some(0), "{}", lower.stderr);
    assert_eq!(upper.code, Some(0), "{}", upper.stderr);
    assert_eq!(lower.stdout, upper.stdout);
    let line = assert_one_line_error(&owl(["tokenize", "smolm2", "Hello"]));
    assert!(line.contains("did you mean 'smollm2'?"), "{line}");
    let line = assert_one_line_error(&owl(["tokenize", "Qwen-Coder", "Hello"]));
    assert!(line.contains("did you mean 'qwen2.5-coder'?"), "{line}");
    let line = assert_one_line_error(&owl(["tokenize", "llama", "Hello"]));
    assert!(!line.contains("did you mean"), "{line}");
}

#[test]
fn bad_values_name_the_flag_before_any_output() {
    for (flag, value, says) in [
        ("--top-p", "1.5", "must be in [0, 1]"),
        ("--min-p", "-0.1", "must be in [0, 1]"),
        ("--temperature", "-1", "at least 0"),
        ("--repeat-penalty", "0", "greater than 0"),
        ("--presence-penalty", "nan", "finite"),
        ("--threads", "0", "at least 1"),
        ("--stop", "", "must not be empty"),
    ] {
        let run = owl(["generate", "smollm2", PROMPT, flag, value]);
        assert_eq!(run.code, Some(2), "{flag} {value}");
        let line = assert_one_line_error(&run);
        assert!(line.contains(&format!("for '{flag} <")) && line.contains(says), "{flag}: {line}");
        assert!(!line.contains('_'), "internal field names leak: {line}");
    }
    // perplexity checks its window before reading or loading anything.
    let run = owl(["perplexity", "smollm2", "/nonexistent.txt", "-c", "1"]);
    let line = assert_one_line_error(&run);
    assert!(line.contains("'--ctx-size <N>'"), "{line}");
    let run = owl(["bench", "smollm2", "-r", "0"]);
    assert!(assert_one_line_error(&run).contains("'--repetitions <N>'"));
}

#[test]
fn top_p_zero_keeps_the_most_likely_token_as_llama_cpp_does() {
    let greedy = greedy_json(&["-n", "6"]);
    let top_p0 = owl_json([
        "generate",
        "smollm2",
        PROMPT,
        "--temperature",
        "1",
        "--top-p",
        "0",
        "-n",
        "6",
        "--seed",
        "3",
        "--json",
    ]);
    assert_eq!(ids(&top_p0), ids(&greedy));
}

#[test]
fn top_logprobs_in_text_mode_print_a_table() {
    let run = owl(["generate", "smollm2", PROMPT, "--temperature", "0", "-n", "4", "--top-logprobs", "3"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines.iter().position(|l| l.contains("logprob") && l.ends_with("top 3")).unwrap();
    let rows = &lines[header + 1..];
    assert_eq!(rows.len(), 4, "{}", run.stdout);
    assert!(rows[0].trim_start().starts_with("1  \" Paris\""), "{}", run.stdout);
    assert_eq!(rows[0].matches(" | ").count(), 2, "three alternatives: {}", rows[0]);
    // The text comes first, as without the flag.
    let plain = owl(["generate", "smollm2", PROMPT, "--temperature", "0", "-n", "4"]);
    assert!(run.stdout.starts_with(&plain.stdout), "{}\nvs\n{}", run.stdout, plain.stdout);

    let run = owl(["run", "smollm2", "Say hi", "--temperature", "0", "-n", "3", "--top-logprobs", "2"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines.iter().position(|l| l.ends_with("top 2")).unwrap();
    assert_eq!(lines.len() - header - 1, 3, "{}", run.stdout);
}

#[test]
fn tokens_carry_text_and_bytes_that_concatenate_exactly() {
    // Byte-level BPE splits the emoji into three tokens: two with no text yet.
    let out = owl_json([
        "generate",
        "smollm2",
        "Pizza emoji: 🍕",
        "--temperature",
        "0",
        "-n",
        "3",
        "--json",
        "--top-logprobs",
        "2",
    ]);
    let tokens = out["tokens"].as_array().unwrap();
    let bytes: Vec<u8> =
        tokens.iter().flat_map(|t| t["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8)).collect();
    assert_eq!(String::from_utf8(bytes).unwrap(), out["text"].as_str().unwrap());
    assert!(
        tokens.iter().any(|t| t["text"] == "" && !t["bytes"].as_array().unwrap().is_empty()),
        "a token that splits a character: {out}"
    );
    for t in tokens {
        for e in t["top"].as_array().unwrap() {
            assert!(e["text"].is_string() && e["bytes"].is_array(), "{e}");
        }
    }
    // Cut inside a character: the text ends in U+FFFD, the bytes say exactly what came.
    let cut = owl_json(["generate", "smollm2", "Pizza emoji: 🍕", "--temperature", "0", "-n", "2", "--json"]);
    assert!(cut["text"].as_str().unwrap().ends_with('\u{FFFD}'), "{cut}");
    let bytes: Vec<u64> = cut["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()))
        .collect();
    assert_eq!(bytes, [0xf0, 0x9f, 0x8d], "{cut}");

    let top = greedy_json(&["-n", "1", "--top-logprobs", "2"]);
    let first = &top["tokens"][0]["top"][0];
    assert_eq!(first["text"], " Paris");
    assert_eq!(first["bytes"], serde_json::json!([32, 80, 97, 114, 105, 115]));
}

#[test]
fn stop_understands_escapes() {
    let free = greedy_json(&["-n", "6"]);
    let text = free["text"].as_str().unwrap();
    let newline = text.find('\n').expect("the greedy reply has a newline");
    let stopped = greedy_json(&["-n", "6", "--stop", r"\n"]);
    assert_eq!(stopped["text"].as_str().unwrap(), &text[..newline]);
    assert_eq!(stopped["finish_reason"], "stop");
}

#[test]
fn broken_pipes_exit_quietly_on_every_command() {
    for args in [
        vec!["tensor", "smollm2", "token_embd.weight", "--format", "json"],
        vec!["inspect", "smollm2", "--tensors"],
        vec!["inspect", "smollm2", "--json"],
        vec!["tokenize", "smollm2", "Hello world", "--json"],
        vec!["detokenize", "smollm2", "19556"],
        vec!["generate", "smollm2", PROMPT, "-n", "2", "--json"],
        vec!["bench", "smollm2", "-p", "4", "-n", "0", "-r", "1", "--json"],
        vec!["generate", "smollm2", PROMPT, "-n", "2", "--top-logprobs", "2"],
        vec!["run", "smollm2", "Say hi", "-n", "2"],
        vec![
            "perplexity",
            "smollm2",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"),
            "-c",
            "64",
            "--chunks",
            "1",
            "--json",
        ],
        vec!["--help"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_owl"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("error") && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_full_context_is_said_and_the_fix_named() {
    // One-shot: the reply fills an 40-token context.
    let run =
        owl(["run", "smollm2", "Write a long story about a dragon.", "--temperature", "0", "-c", "40", "-n", "-1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("the reply was cut off: the context of 40 tokens is full")
            && run.stderr.contains("-c/--ctx-size"),
        "{}",
        run.stderr
    );
    // A prompt that does not fit: the error names -c and --truncate.
    let line = assert_one_line_error(&owl(["run", "smollm2", &"word ".repeat(60), "-c", "32"]));
    assert!(line.contains("-c/--ctx-size") && line.contains("--truncate"), "{line}");
    let line = assert_one_line_error(&owl(["generate", "smollm2", &"word ".repeat(60), "-c", "32"]));
    assert!(line.contains("-c/--ctx-size") && line.contains("--truncate"), "{line}");

    // In a session, the next turn no longer fits: /clear is offered, and the session goes on.
    let owl = env!("CARGO_BIN_EXE_owl");
    let (ok, shown) = on_terminal(
        &format!("{owl} run smollm2 --temperature 0 -c 48 -n -1"),
        "Write a long story about a dragon.\nAnd another one.\n/bye\n",
    );
    assert!(ok, "{shown}");
    assert!(shown.contains("/clear to start over"), "{shown}");
    assert!(shown.contains("error: the conversation has"), "{shown}");
    assert!(shown.contains("--truncate"), "{shown}");
}

#[test]
fn generate_reads_the_prompt_from_stdin() {
    let arg = greedy_json(&["-n", "3"]);
    for args in [
        vec!["generate", "smollm2", "-", "--temperature", "0", "-n", "3", "--json"],
        vec!["generate", "smollm2", "--temperature", "0", "-n", "3", "--json"],
    ] {
        let (code, stdout, stderr) = owl_stdin(&args, PROMPT);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        let v: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["prompt_ids"], arg["prompt_ids"], "{args:?}");
        assert_eq!(ids(&v), ids(&arg));
    }
    let (code, _, stderr) = owl_stdin(&["generate", "smollm2", "-n", "3"], "");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("the prompt read from stdin is empty"), "{stderr}");
}

#[test]
fn bench_names_the_file_and_what_ran_with_progress_on_a_terminal_only() {
    let rows = owl_json(["bench", "smollm2", "-p", "8", "-n", "2", "-r", "1", "-t", "1", "--json"]);
    for r in rows.as_array().unwrap() {
        assert_eq!(r["model"], "SmolLM2-135M-Instruct.Q4_1.gguf", "{r}");
        assert_eq!(r["size"], 98_362_432);
        assert_eq!(r["params"], 134_515_008);
        assert!(["avx2", "avx2+avx512vnni", "neon", "scalar"].contains(&r["isa"].as_str().unwrap()), "{r}");
        assert_eq!(r["threads"], 1);
    }
    let run = owl(["bench", "smollm2", "-p", "8", "-n", "0", "-r", "1", "-t", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains("[1/1]"), "no progress off a terminal: {}", run.stderr);
    let row = run.stdout.lines().nth(2).unwrap();
    assert!(row.starts_with("| SmolLM2-135M-Instruct.Q4_1.gguf | 98.36 MB | 134.52 M | "), "{row}");
    assert!(row.contains(" | 1 | pp8 | "), "{row}");

    let owl = env!("CARGO_BIN_EXE_owl");
    let (ok, shown) = on_terminal(&format!("{owl} bench smollm2 -p 8 -n 0 -r 1 -t 1"), "");
    assert!(ok, "{shown}");
    assert!(shown.contains("[1/1] pp8 with 1 thread: 1 warm-up + 1 runs..."), "{shown}");
}

#[test]
fn help_says_what_owl_is_and_describes_model_once() {
    let run = owl(["--help"]);
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.starts_with("owl runs open-weight language models"), "{}", run.stdout);
    assert!(run.stdout.contains("a base model: use 'owl generate'"), "{}", run.stdout);
    // The MODEL description, whitespace normalised (clap lays short and long help out
    // differently): from its first words to the end of the sentence.
    let model_help = |command: &str| -> String {
        let help = owl([command, "--help"]).stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        let start = help.find("<MODEL> A ").unwrap_or_else(|| panic!("{command}: {help}")) + "<MODEL> ".len();
        let end = start + help[start..].find("')").unwrap_or_else(|| panic!("{command}: {help}")) + 2;
        help[start..end].to_string()
    };
    let first = model_help("run");
    assert!(first.starts_with("A .gguf file") && first.contains("a store name such as smollm2"), "{first}");
    for command in ["generate", "bench", "perplexity", "inspect", "tensor", "tokenize", "detokenize"] {
        assert_eq!(model_help(command), first, "{command}");
    }
}
