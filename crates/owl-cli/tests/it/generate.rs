//! `owl generate` on smollm2 (the smallest demo model) against the shared fixture's
//! transformers reference: prompt ids, greedy ids up to the first near tie, logprobs.

#![allow(clippy::unwrap_used)]

use serde_json::Value;

use crate::support::{assert_one_line_error, owl, owl_json};

/// A greedy step whose reference top1-top2 logit margin is below this may legitimately
/// differ (the demo model is quantized; the reference ran it dequantized in f32).
const NEAR_TIE: f64 = 0.5;

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_json_matches_the_reference() {
    let reference = owl_test::fixture_json("real_models/smollm2-135m-instruct-q4_1/reference.json");
    let p = &reference["prompts"][0];
    let prompt = p["prompt"].as_str().unwrap();
    let want = u32s(&p["greedy"]["ids"]);
    let must_agree = p["greedy"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["top1_minus_top2_logit"].as_f64().unwrap() < NEAR_TIE)
        .unwrap_or(want.len());
    assert!(must_agree >= 3, "the fixture's first prompt should have a few clear steps");

    let out =
        owl_json(["generate", "smollm2", prompt, "--temperature", "0", "-n", "8", "--json", "--top-logprobs", "3"]);
    for key in ["model", "prompt_ids", "ids", "text", "tokens", "timings"] {
        assert!(out.get(key).is_some(), "missing {key}: {out}");
    }
    assert_eq!(out["model"], "smollm2");
    assert_eq!(u32s(&out["prompt_ids"]), u32s(&p["input_ids"]));
    let ids = u32s(&out["ids"]);
    assert_eq!(ids.len(), 8);
    assert_eq!(ids[..must_agree], want[..must_agree], "greedy ids: {ids:?} vs {want:?}");

    let tokens = out["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), ids.len());
    let mut text = String::new();
    for (t, &id) in tokens.iter().zip(&ids) {
        assert_eq!(t["id"].as_u64().unwrap() as u32, id);
        text.push_str(t["text"].as_str().unwrap());
        let logprob = t["logprob"].as_f64().unwrap();
        assert!(logprob <= 0.0 && logprob > -50.0, "{t}");
        let top = t["top"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{t}");
        let lps: Vec<f64> = top.iter().map(|x| x["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]), "top not sorted: {t}");
        assert!(lps.iter().all(|&l| l <= 0.0));
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["id"].as_u64().unwrap() as u32, id);
        assert!((lps[0] - logprob).abs() < 1e-6);
    }
    assert_eq!(out["text"].as_str().unwrap(), text);
    // The reference text starts the same way (" Paris." for this prompt).
    let want_text = p["greedy"]["text"].as_str().unwrap_or("");
    let agreed: String = tokens[..must_agree].iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert!(want_text.starts_with(&agreed), "{agreed:?} vs {want_text:?}");

    let timings = &out["timings"];
    assert_eq!(timings["prompt_tokens"].as_u64().unwrap() as usize, u32s(&p["input_ids"]).len());
    assert_eq!(timings["gen_tokens"].as_u64().unwrap(), 8);
    assert!(timings["prompt_ms"].as_f64().unwrap() > 0.0);
    assert!(timings["gen_ms"].as_f64().unwrap() > 0.0);

    // Without --top-logprobs, `top` is empty but the logprob is still there.
    let out = owl_json(["generate", "smollm2", prompt, "--temperature", "0", "-n", "2", "--json"]);
    assert_eq!(u32s(&out["ids"])[..2], want[..2]);
    for t in out["tokens"].as_array().unwrap() {
        assert_eq!(t["top"].as_array().unwrap().len(), 0);
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
    }
}

/// `--f32-activations`: the whole reference continuation, log-probabilities within 0.05
/// nats — on the prompt whose greedy path the default 8-bit activations leave at step 5.
#[test]
fn f32_activations_reproduce_the_reference_continuation() {
    let reference = owl_test::fixture_json("real_models/smollm2-135m-instruct-q4_1/reference.json");
    let p = &reference["prompts"][0];
    let want = u32s(&p["greedy"]["ids"]);
    let n = want.len().to_string();
    let out = owl_json([
        "generate",
        "smollm2",
        p["prompt"].as_str().unwrap(),
        "--temperature",
        "0",
        "-n",
        &n,
        "--json",
        "--f32-activations",
        "--top-logprobs",
        "5",
    ]);
    assert_eq!(u32s(&out["ids"]), want);
    assert_eq!(out["text"].as_str().unwrap(), p["greedy"]["text"].as_str().unwrap());
    for (step, (t, s)) in
        out["tokens"].as_array().unwrap().iter().zip(p["greedy"]["steps"].as_array().unwrap()).enumerate()
    {
        let ours: Vec<(u64, f64)> = t["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["id"].as_u64().unwrap(), x["logprob"].as_f64().unwrap()))
            .collect();
        for (id, lp) in s["top5_ids"].as_array().unwrap().iter().zip(s["top5_logprobs"].as_array().unwrap()) {
            let (id, lp) = (id.as_u64().unwrap(), lp.as_f64().unwrap());
            if let Some(&(_, o)) = ours.iter().find(|(i, _)| *i == id) {
                assert!((o - lp).abs() < 0.05, "step {step} token {id}: {o} vs {lp}");
            }
        }
    }
}

#[test]
fn seeds_reproduce_and_stop_strings_cut() {
    let sample = |seed: &str| {
        let out = owl_json([
            "generate",
            "smollm2",
            "Once upon a time",
            "--temperature",
            "1.0",
            "--top-k",
            "0",
            "--min-p",
            "0",
            "-n",
            "12",
            "--seed",
            seed,
            "--json",
        ]);
        assert_eq!(out["seed"].as_str().unwrap(), seed);
        u32s(&out["ids"])
    };
    let a = sample("42");
    assert_eq!(a, sample("42"), "same seed, same output");
    assert_ne!(a, sample("7"), "another seed, another output");

    // Greedy: " Paris.\n\nThe United States has..."; "United" must end it before the word.
    let out = owl_json([
        "generate",
        "smollm2",
        "The capital of France is",
        "--temperature",
        "0",
        "-n",
        "8",
        "--stop",
        "United",
        "--stop",
        "never-produced",
        "--json",
    ]);
    let text = out["text"].as_str().unwrap();
    assert_eq!(text, " Paris.\n\nThe ");
    assert_eq!(out["finish_reason"], "stop");
    // Plain output: the same text streamed, then a newline.
    let run =
        owl(["generate", "smollm2", "The capital of France is", "--temperature", "0", "-n", "8", "--stop", "United"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, " Paris.\n\nThe \n");
}

#[test]
fn bad_flags_and_context_overflow() {
    let err = assert_one_line_error(&owl(["generate", "smollm2", "x", "--temperature", "-1"]));
    assert!(err.contains("temperature"), "{err}");
    let err = assert_one_line_error(&owl(["generate", "smollm2", "x", "--top-p", "1.5"]));
    assert!(err.contains("'--top-p <P>'"), "{err}");
    let long = "one two three four five six seven eight nine ten";
    let err = assert_one_line_error(&owl(["generate", "smollm2", long, "-c", "6", "-n", "1"]));
    assert!(err.contains("10 tokens") && err.contains('6'), "{err}");
    // --truncate keeps the end of the prompt.
    let out =
        owl_json(["generate", "smollm2", long, "-c", "6", "-n", "1", "--truncate", "--temperature", "0", "--json"]);
    let prompt_ids = u32s(&out["prompt_ids"]);
    assert_eq!(prompt_ids.len(), 5);
    let full = owl_json(["tokenize", "smollm2", long, "--json"]);
    let full = u32s(&full["ids"]);
    assert_eq!(prompt_ids, full[full.len() - 5..]);
}

/// `--json-schema`, `--regex`, `--grammar` (GBNF): outputs follow them; bad grammars and two
/// grammars at once are one-line errors before the model runs.
#[test]
fn grammars_shape_the_output_and_bad_ones_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":"integer","minimum":1,"maximum":9}},"required":["ok","n"],"additionalProperties":false}"#,
    )
    .unwrap();
    let schema = schema.to_str().unwrap();
    for seed in ["1", "2"] {
        let out = owl_json(["generate", "smollm2", "JSON:", "--json-schema", schema, "--seed", seed, "--json"]);
        assert_eq!(out["finish_reason"], "stop", "{out}");
        let v: Value = serde_json::from_str(out["text"].as_str().unwrap()).unwrap();
        assert!(v["ok"].is_boolean() && (1..=9).contains(&v["n"].as_i64().unwrap()), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    }
    let out = owl(["generate", "smollm2", "Pick:", "--regex", "(red|green|blue)!", "--temperature", "1"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(["red!\n", "green!\n", "blue!\n"].contains(&out.stdout.as_str()), "{:?}", out.stdout);
    let gbnf = dir.path().join("g.gbnf");
    std::fs::write(&gbnf, "root ::= \"Answer: \" digit digit?\ndigit ::= [0-9]\n").unwrap();
    let out = owl(["generate", "smollm2", "Count:", "--grammar", gbnf.to_str().unwrap()]);
    let digits = out.stdout.trim_end().strip_prefix("Answer: ").unwrap_or_else(|| panic!("{:?}", out.stdout));
    assert!((1..=2).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()), "{:?}", out.stdout);

    let err = |args: &[&str]| {
        let run = owl(args);
        assert_ne!(run.code, Some(0), "{args:?} succeeded");
        assert_one_line_error(&run)
    };
    let e = err(&["generate", "smollm2", "x", "--regex", "("]);
    assert!(e.contains("invalid regular expression") && e.contains("unclosed group"), "{e}");
    let e = err(&["generate", "smollm2", "x", "--regex", "a", "--json-schema", schema]);
    assert!(e.contains("cannot be used with"), "{e}");
    std::fs::write(&gbnf, "root ::= \"a\n").unwrap();
    let e = err(&["generate", "smollm2", "x", "--grammar", gbnf.to_str().unwrap()]);
    assert!(e.contains("line 1: unterminated string"), "{e}");
    let e = err(&["generate", "smollm2", "x", "--json-schema", gbnf.to_str().unwrap()]);
    assert!(e.contains("not valid JSON"), "{e}");
}
