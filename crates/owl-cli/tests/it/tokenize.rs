//! `owl tokenize` / `owl detokenize` on the demo models, against the shared fixtures' ids.

#![allow(clippy::unwrap_used)]

use crate::support::{assert_one_line_error, owl, owl_json};

fn fixture_prompt(dir: &str) -> (String, Vec<u64>, Vec<u64>, Vec<String>) {
    let reference = owl_test::fixture_json(&format!("real_models/{dir}/reference.json"));
    let p = &reference["prompts"][0];
    let ids = |k: &str| p[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>();
    let tokens = p["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    (p["prompt"].as_str().unwrap().to_string(), ids("input_ids"), ids("input_ids_without_special_tokens"), tokens)
}

#[test]
fn tokenize_matches_the_fixture_ids() {
    for (model, dir) in [("gemma3", "gemma3-270m-q4_k_m"), ("smollm2", "smollm2-135m-instruct-q4_1")] {
        let (prompt, with, without, tokens) = fixture_prompt(dir);
        let out = owl_json(["tokenize", model, prompt.as_str(), "--json"]);
        let ids: Vec<u64> = out["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ids, with, "{model}");
        let pieces: Vec<&str> = out["pieces"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(pieces, tokens, "{model}");
        let out = owl_json(["tokenize", model, prompt.as_str(), "--json", "--no-bos"]);
        let ids: Vec<u64> = out["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ids, without, "{model} --no-bos");
        // plain output: the ids on one line
        let run = owl(["tokenize", model, prompt.as_str()]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let plain: Vec<u64> = run.stdout.split_whitespace().map(|s| s.parse().unwrap()).collect();
        assert_eq!(plain, with);
    }
}

#[test]
fn special_tokens_and_detokenize() {
    let out = owl_json(["tokenize", "smollm2", "<|im_end|>", "--json", "--no-bos"]);
    assert_eq!(out["ids"], serde_json::json!([2]));
    let out = owl_json(["tokenize", "smollm2", "<|im_end|>", "--json", "--no-special"]);
    assert!(out["ids"].as_array().unwrap().len() > 1, "{out}");

    let run = owl(["detokenize", "smollm2", "504", "3575", "282", "4649", "314", "2"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "The capital of France is<|im_end|>\n");
    let run = owl(["detokenize", "smollm2", "[504, 3575]", "--skip-special"]);
    assert_eq!(run.stdout, "The capital\n");

    let err = assert_one_line_error(&owl(["detokenize", "smollm2", "49152"]));
    assert!(err.contains("49152") && err.contains("out of range"), "{err}");
    let err = assert_one_line_error(&owl(["detokenize", "smollm2", "abc"]));
    assert!(err.contains("`abc`"), "{err}");
}

/// A GGUF whose token strings are not all UTF-8 (owl-tokenizer's vocab_valid corpus) loads
/// as llama.cpp loads it; its raw tokens detokenize to their bytes, and text round-trips
/// through the byte tokens (issue #19).
#[test]
fn non_utf8_token_strings_load_and_round_trip() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../owl-tokenizer/tests/corpus/vocab_valid/non_utf8_tokens.gguf");
    let file = file.to_str().unwrap();
    let raw = owl(["detokenize", file, "265", "266"]);
    assert_eq!(raw.code, Some(0), "{}", raw.stderr);
    assert_eq!(raw.stdout.trim_end(), "€");
    for text in ["€ x", "naïve café ☕"] {
        let ids = owl(["tokenize", file, text, "--no-bos"]);
        assert_eq!(ids.code, Some(0), "{}", ids.stderr);
        let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
        assert!(ids.iter().all(|id| !["265", "266", "267"].contains(id)), "{ids:?}");
        let mut args = vec!["detokenize", file];
        args.extend(&ids);
        let back = owl(args);
        assert_eq!(back.code, Some(0), "{}", back.stderr);
        assert_eq!(back.stdout.strip_suffix('\n').unwrap_or(&back.stdout), text);
        let again = owl(["tokenize", file, &back.stdout[..back.stdout.len() - 1], "--no-bos"]);
        assert_eq!(again.stdout.split_whitespace().collect::<Vec<_>>(), ids, "{text:?} round-trips");
    }
}
