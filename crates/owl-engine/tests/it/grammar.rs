//! Constrained decoding on the three demo models: JSON Schema, regex, Lark and translated
//! GBNF outputs always parse and match, greedy and sampled.

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use owl_engine::{
    EogSet, GenerateParams, GrammarCompiler, GrammarSpec, ModelRunner, SamplingParams, Session, SessionConfig,
    StopReason, TokenizerDecoder,
};
use owl_formats::gguf::GgufFile;
use owl_models::{KvDtype, LoadOptions, Model};
use owl_tokenizer::Tokenizer;
use serde_json::{json, Value};

const MODELS: [&str; 3] = ["smollm2", "gemma3", "qwen2.5-coder"];

struct Demo {
    session: Session<ModelRunner>,
    tokenizer: Arc<Tokenizer>,
    compiler: GrammarCompiler,
}

fn demo(name: &str) -> Demo {
    demo_with_threads(name, 2)
}

fn demo_with_threads(name: &str, threads: usize) -> Demo {
    let path = owl_test::demo_model(name);
    let model = Model::load_gguf(&path, &LoadOptions { threads, max_batch_tokens: 64 }).expect("model");
    let gguf = GgufFile::open(&path).expect("gguf");
    let tokenizer = Arc::new(Tokenizer::from_gguf(&gguf).expect("tokenizer"));
    let vocab = model.config().vocab_size;
    let runner = ModelRunner::new(model, 512, KvDtype::F16).expect("runner");
    let session = Session::new(runner, SessionConfig { n_batch: 64 }).expect("session");
    let compiler = GrammarCompiler::new(tokenizer.clone(), vocab).expect("grammar compiler");
    Demo { session, tokenizer, compiler }
}

/// The text generated for `prompt` under `spec`, and why it stopped.
fn generate(d: &mut Demo, prompt: &str, spec: &GrammarSpec, sampling: SamplingParams) -> (String, StopReason) {
    let params = GenerateParams {
        sampling,
        max_tokens: Some(160),
        eog: EogSet::new(d.tokenizer.eog_ids().iter().copied()),
        grammar: Some(d.compiler.compile(spec).expect("compile")),
        ..GenerateParams::default()
    };
    let prompt = d.tokenizer.encode(prompt, true, true).expect("encode");
    let mut decoder = TokenizerDecoder::new(&d.tokenizer, true);
    let out = d
        .session
        .generate(&prompt, &params, &mut decoder, &AtomicBool::new(false), |_| ControlFlow::Continue(()))
        .expect("generate");
    d.session.clear_cache();
    (out.text, out.stop_reason)
}

fn samplings() -> Vec<SamplingParams> {
    let mut s = vec![SamplingParams::greedy()];
    for seed in [1, 2] {
        s.push(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(seed),
            ..SamplingParams::default()
        });
    }
    s
}

/// The keywords the test schemas use: type, properties, required, additionalProperties
/// false, enum, minimum/maximum, minLength/maxLength, items, minItems/maxItems.
fn validate(v: &Value, schema: &Value, at: &str) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{at}: {what} (value {v})"));
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            return fail("not one of the enum");
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(o) = v.as_object() else { return fail("not an object") };
            let props = schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
            for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if !o.contains_key(r.as_str().unwrap_or_default()) {
                    return fail(&format!("missing required {r}"));
                }
            }
            for (k, x) in o {
                match props.get(k) {
                    Some(s) => validate(x, s, &format!("{at}.{k}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return fail(&format!("extra property {k}"))
                    }
                    None => {}
                }
            }
        }
        Some("array") => {
            let Some(a) = v.as_array() else { return fail("not an array") };
            let n = a.len() as u64;
            if schema.get("minItems").and_then(Value::as_u64).is_some_and(|m| n < m)
                || schema.get("maxItems").and_then(Value::as_u64).is_some_and(|m| n > m)
            {
                return fail("item count out of bounds");
            }
            if let Some(items) = schema.get("items") {
                for (i, x) in a.iter().enumerate() {
                    validate(x, items, &format!("{at}[{i}]"))?;
                }
            }
        }
        Some("string") => {
            let Some(s) = v.as_str() else { return fail("not a string") };
            let n = s.chars().count() as u64;
            if schema.get("minLength").and_then(Value::as_u64).is_some_and(|m| n < m)
                || schema.get("maxLength").and_then(Value::as_u64).is_some_and(|m| n > m)
            {
                return fail("length out of bounds");
            }
        }
        Some(t @ ("integer" | "number")) => {
            let Some(x) = v.as_f64() else { return fail("not a number") };
            if t == "integer" && !(v.is_i64() || v.is_u64()) {
                return fail("not an integer");
            }
            if schema.get("minimum").and_then(Value::as_f64).is_some_and(|m| x < m)
                || schema.get("maximum").and_then(Value::as_f64).is_some_and(|m| x > m)
            {
                return fail("out of bounds");
            }
        }
        Some("boolean") if !v.is_boolean() => return fail("not a boolean"),
        _ => {}
    }
    Ok(())
}

#[test]
fn json_schema_outputs_parse_and_validate_on_every_demo_model() {
    let schemas = [
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 24},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 1, "maxItems": 3}
            },
            "required": ["name", "age", "tags"],
            "additionalProperties": false
        }),
        json!({
            "type": "object",
            "properties": {
                "city": {"type": "object", "properties": {
                    "name": {"type": "string", "maxLength": 30},
                    "population": {"type": "number", "minimum": 0, "maximum": 50000000}
                }, "required": ["name", "population"], "additionalProperties": false},
                "capital": {"type": "boolean"}
            },
            "required": ["city", "capital"],
            "additionalProperties": false
        }),
    ];
    for name in MODELS {
        let mut d = demo(name);
        for schema in &schemas {
            let spec = GrammarSpec::JsonSchema { schema: schema.clone(), strict: true };
            for sampling in samplings() {
                let what = format!("{name}, t={}", sampling.temperature);
                let (text, stop) = generate(&mut d, "Here is the record as JSON:", &spec, sampling);
                assert!(
                    matches!(stop, StopReason::Grammar { error: None } | StopReason::Eog { .. }),
                    "{what}: {stop:?}: {text}"
                );
                let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text:?}"));
                validate(&v, schema, "$").unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
    }
}

/// With one forward thread on a machine of two or more cores, the scheduler computes each
/// mask on a second thread during the forward pass; the output is the same as with the
/// masks computed at sampling time (two forward threads fill a 2-core machine).
#[test]
fn masks_computed_beside_the_forward_pass_give_the_same_output() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 {
        println!("skipped: one core, so the masks are never computed beside the forward pass");
        return;
    }
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "colours": {"type": "array",
            "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3}},
        "required": ["name", "colours"],
        "additionalProperties": false
    });
    let spec = GrammarSpec::JsonSchema { schema: schema.clone(), strict: true };
    let mut beside = demo_with_threads("smollm2", 1);
    let mut reference = demo_with_threads("smollm2", cores);
    for sampling in samplings() {
        let (a, stop) = generate(&mut beside, "A painter as JSON:", &spec, sampling.clone());
        let (b, _) = generate(&mut reference, "A painter as JSON:", &spec, sampling);
        assert!(matches!(stop, StopReason::Grammar { error: None } | StopReason::Eog { .. }), "{stop:?}: {a}");
        let v: Value = serde_json::from_str(&a).unwrap_or_else(|e| panic!("{e}: {a:?}"));
        validate(&v, &schema, "$").unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn regex_lark_and_gbnf_outputs_match_on_every_demo_model() {
    let date = GrammarSpec::Regex(r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])".into());
    let lark = GrammarSpec::Lark("start: (\"yes\" | \"no\") \", \" /[a-z ]{3,20}/ \".\"\n".into());
    let gbnf =
        owl_engine::grammar::gbnf::to_lark("root ::= num (\" + \" num)? \" = \" num\nnum ::= [1-9] [0-9]{0,2}\n")
            .expect("gbnf");
    let gbnf = GrammarSpec::Lark(gbnf);
    let is_date = |t: &str| {
        let p: Vec<&str> = t.split('-').collect();
        p.len() == 3
            && p[0].len() == 4
            && matches!(&p[0][..2], "19" | "20")
            && (1..=12).contains(&p[1].parse::<u32>().unwrap_or(0))
            && p[1].len() == 2
            && (1..=31).contains(&p[2].parse::<u32>().unwrap_or(0))
            && p[2].len() == 2
    };
    let is_answer = |t: &str| {
        let Some(rest) = t.strip_prefix("yes, ").or_else(|| t.strip_prefix("no, ")) else { return false };
        let Some(words) = rest.strip_suffix('.') else { return false };
        (3..=20).contains(&words.len()) && words.bytes().all(|b| b.is_ascii_lowercase() || b == b' ')
    };
    let is_sum = |t: &str| {
        let num =
            |s: &str| !s.is_empty() && s.len() <= 3 && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
        let Some((lhs, rhs)) = t.split_once(" = ") else { return false };
        num(rhs) && lhs.split(" + ").count() <= 2 && lhs.split(" + ").all(num)
    };
    for name in MODELS {
        let mut d = demo(name);
        for sampling in samplings() {
            let what = format!("{name}, t={}", sampling.temperature);
            let (text, _) = generate(&mut d, "Today's date is", &date, sampling.clone());
            assert!(is_date(&text), "{what}: date {text:?}");
            let (text, _) = generate(&mut d, "Is the sky blue? Answer:", &lark, sampling.clone());
            assert!(is_answer(&text), "{what}: answer {text:?}");
            let (text, _) = generate(&mut d, "Arithmetic:", &gbnf, sampling);
            assert!(is_sum(&text), "{what}: sum {text:?}");
        }
    }
}

/// Bad grammars are errors that say what is wrong, before anything runs.
#[test]
fn invalid_grammars_are_clear_errors() {
    let d = demo("smollm2");
    let err = |spec: GrammarSpec| d.compiler.compile(&spec).expect_err("must not compile").to_string();
    let e = err(GrammarSpec::JsonSchema { schema: json!({"type": "array", "uniqueItems": true}), strict: true });
    assert!(e.contains("invalid JSON Schema") && e.contains("uniqueItems"), "{e}");
    assert!(d
        .compiler
        .compile(&GrammarSpec::JsonSchema { schema: json!({"type": "array", "uniqueItems": true}), strict: false })
        .is_ok());
    let e = err(GrammarSpec::JsonSchema { schema: json!([1, 2]), strict: true });
    assert!(e.contains("a schema is a JSON object"), "{e}");
    let e = err(GrammarSpec::Regex("(".into()));
    assert!(e.contains("invalid regular expression") && e.contains("unclosed group"), "{e}");
    let e = err(GrammarSpec::Lark("start: foo\n".into()));
    assert!(e.contains("invalid Lark grammar") && e.contains("foo"), "{e}");
}

/// JSON numbers end after 16 digits in a row, as llama.cpp's schema grammars bound them (a
/// small model at temperature 0 otherwise repeats a digit until `max_tokens`); digits in
/// strings and in regular expressions are not bounded.
#[test]
fn json_number_digit_runs_are_bounded() {
    let mut d = demo("smollm2");
    let one = d.tokenizer.encode("1", false, false).expect("encode");
    assert_eq!(one.len(), 1, "SmolLM2 has single-digit tokens");
    let one = one[0];
    let tokens = |text: &str| d.tokenizer.encode(text, false, false).expect("encode");
    let allows_after = |spec: GrammarSpec, prefix: &str, ones: usize| {
        let mut c = d.compiler.compile(&spec).expect("compile");
        for t in tokens(prefix).into_iter().chain(std::iter::repeat_n(one, ones)) {
            c.accept(t).unwrap_or_else(|e| panic!("{prefix} + {ones} ones: {e}"));
        }
        let mask = c.allowed().expect("mask");
        mask[one as usize / 32] & (1 << (one % 32)) != 0
    };
    let number = GrammarSpec::JsonSchema {
        schema: json!({"type": "object", "properties": {"x": {"type": "number"}, "s": {"type": "string"}}}),
        strict: true,
    };
    for (prefix, before) in [(r#"{"x": 3."#, 0), (r#"{"x": "#, 0), (r#"{"x": 2e"#, 0), (r#"{"x": -12"#, 2)] {
        assert!(allows_after(number.clone(), prefix, 15 - before), "{prefix}: the 16th digit is allowed");
        assert!(!allows_after(number.clone(), prefix, 16 - before), "{prefix}: a 17th digit is not");
    }
    assert!(allows_after(number.clone(), r#"{"s": ""#, 40), "digits in a string are not bounded");
    assert!(allows_after(GrammarSpec::Regex("[0-9]{40}".into()), "", 30), "a regex's digits are not bounded");

    // The case that needed the bound: SmolLM2, greedy, "Tell me about Paris." as a city.
    let city = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 30},
            "country": {"type": "string", "maxLength": 30},
            "population_millions": {"type": "number"}
        },
        "required": ["name", "country", "population_millions"],
        "additionalProperties": false
    });
    let prompt = "<|im_start|>user\nTell me about Paris.<|im_end|>\n<|im_start|>assistant\n";
    let spec = GrammarSpec::JsonSchema { schema: city.clone(), strict: true };
    let (text, stop) = generate(&mut d, prompt, &spec, SamplingParams::greedy());
    assert!(matches!(stop, StopReason::Grammar { error: None } | StopReason::Eog { .. }), "{stop:?}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    validate(&v, &city, "$").unwrap_or_else(|e| panic!("{e}"));
    assert!(text.split(|c: char| !c.is_ascii_digit()).all(|run| run.len() <= 16), "{text}");
}
