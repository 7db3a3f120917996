//! The engine on the three demo GGUF models (owl-models forward, owl-tokenizer decoding)
//! against transformers' float32 reference (`../shared/fixtures/real_models`).
//!
//! The demo models are quantized and the reference ran their dequantized weights in f32,
//! so greedy continuations must agree up to the first step whose reference top1-top2 logit
//! margin is below [`NEAR_TIE`] (the tolerance owl-models' own demo test uses), not beyond.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use owl_engine::{
    perplexity, run_bench, BenchParams, EogSet, Event, GenerateParams, ModelRunner, PerplexityParams, SamplingParams,
    Session, SessionConfig, StopReason, TokenizerDecoder,
};
use owl_formats::gguf::GgufFile;
use owl_models::{ActivationPrecision, KvDtype, LoadOptions, Model};
use owl_tokenizer::Tokenizer;
use serde_json::Value;

const NEAR_TIE: f64 = 0.5;

const MODELS: [(&str, &str); 3] = [
    ("smollm2", "smollm2-135m-instruct-q4_1"),
    ("gemma3", "gemma3-270m-q4_k_m"),
    ("qwen2.5-coder", "qwen2.5-coder-0.5b-instruct"),
];

fn load(path: &Path, max_batch_tokens: usize) -> (Model, Tokenizer) {
    let options = LoadOptions { threads: 2, max_batch_tokens };
    let model = Model::load_gguf(path, &options).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let gguf = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (model, tokenizer)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams { sampling: SamplingParams::greedy(), max_tokens: Some(n), ..GenerateParams::default() }
}

/// Default numerics (activations quantized to 8 bits, as llama.cpp does): the rounding of
/// the activations moves log-probabilities by 0.2–1.0 nats on these small models, so
/// greedy paths may part where the reference margin is under [`NEAR_TIE`] (SmolLM2's `en`
/// prompt flips at a step with margin 0.22).
#[test]
fn greedy_continuations_agree_with_the_reference_up_to_the_first_near_tie() {
    greedy_agreement(ActivationPrecision::Quantized, NEAR_TIE);
}

/// Float32 activations against the dequantized weights (the reference's own numerics):
/// the criterion — identical up to the first step whose reference margin is under
/// 0.2 nats, and at least 16 tokens on most prompts.
#[test]
fn greedy_continuations_with_f32_activations_agree_up_to_the_first_0_2_tie() {
    let agreed = greedy_agreement(ActivationPrecision::F32, 0.2);
    let long = agreed.iter().filter(|&&n| n >= 16).count();
    assert!(2 * long > agreed.len(), "only {long} of {} prompts agree for 16 tokens: {agreed:?}", agreed.len());
}

/// Runs every reference prompt greedily and checks agreement up to the first step whose
/// reference margin is below `near_tie`; returns the agreed length per prompt.
fn greedy_agreement(precision: ActivationPrecision, near_tie: f64) -> Vec<usize> {
    let mut agreed_all = Vec::new();
    for (name, fixture) in MODELS {
        // Prefill chunks of 12 tokens (session) split into model batches of 8 (runner), so
        // that both splitting paths run, with the logits row in a second runner batch.
        let (mut model, tokenizer) = load(&owl_test::demo_model(name), 8);
        model.set_activation_precision(precision);
        let runner = ModelRunner::new(model, 256, KvDtype::F16).expect("cache");
        let mut session = Session::new(runner, SessionConfig { n_batch: 12 }).expect("session");
        let reference = owl_test::fixture_json(&format!("real_models/{fixture}/reference.json"));
        for p in reference["prompts"].as_array().expect("prompts") {
            let key = p["key"].as_str().expect("key");
            let prompt = ids(&p["input_ids"]);
            let text = p["prompt"].as_str().expect("prompt");
            assert_eq!(tokenizer.encode(text, true, true).expect("encode"), prompt, "{name}/{key}: tokenizer");
            let want = ids(&p["greedy"]["ids"]);
            let margins: Vec<f64> = p["greedy"]["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .map(|s| s["top1_minus_top2_logit"].as_f64().expect("margin"))
                .collect();
            let must_agree = margins.iter().position(|&m| m < near_tie).unwrap_or(want.len());

            let mut dec = TokenizerDecoder::new(&tokenizer, false);
            let mut pieces = Vec::new();
            let started = std::time::Instant::now();
            // Reference: EOS does not stop generation.
            let g = session
                .generate(&prompt, &greedy(want.len()), &mut dec, &AtomicBool::new(false), |ev| {
                    if let Event::Token(t) = ev {
                        pieces.push(t.text.clone());
                    }
                    ControlFlow::Continue(())
                })
                .unwrap_or_else(|e| panic!("{name}/{key}: {e}"));
            let secs = started.elapsed().as_secs_f64();
            let agreed = g.ids.iter().zip(&want).take_while(|(a, b)| a == b).count();
            eprintln!(
                "{name}/{key} ({precision:?}): {agreed}/{} greedy tokens agree (must: {must_agree}); {:.1} tok/s decode, {:.2}s",
                want.len(),
                g.timings.gen_tokens_per_s(),
                secs
            );
            assert!(agreed >= must_agree, "{name}/{key}: diverged at {agreed}: {:?} vs {:?}", g.ids, want);
            // The streamed text of the agreed tokens is the start of the reference text
            // (leading spaces of a continuation included).
            let ref_text = p["greedy"]["text"].as_str().expect("text");
            let ours: String = pieces[..agreed].concat();
            assert!(ref_text.starts_with(&ours), "{name}/{key}: {ours:?} vs {ref_text:?}");
            if agreed == want.len() {
                assert_eq!(g.text, ref_text, "{name}/{key}");
            }
            assert!(agreed == 0 || !ours.is_empty());
            agreed_all.push(agreed);
        }
    }
    agreed_all
}

#[test]
fn chat_turns_reuse_the_cache_and_match_a_fresh_session() {
    let (model, tokenizer) = load(&owl_test::demo_model("smollm2"), 64);
    let fresh_model =
        Model::load_gguf(&owl_test::demo_model("smollm2"), &LoadOptions { threads: 2, max_batch_tokens: 64 })
            .expect("load");
    let mut session =
        Session::new(ModelRunner::new(model, 512, KvDtype::F16).expect("cache"), SessionConfig::default())
            .expect("session");
    let mut fresh =
        Session::new(ModelRunner::new(fresh_model, 512, KvDtype::F16).expect("cache"), SessionConfig::default())
            .expect("session");
    let mut dec = TokenizerDecoder::new(&tokenizer, true);
    let cancel = AtomicBool::new(false);
    let mut params = greedy(12);
    params.eog = EogSet::new(tokenizer.eog_ids().iter().copied());

    let turn1 = tokenizer
        .encode("<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n", true, true)
        .expect("encode");
    let r1 = session.generate(&turn1, &params, &mut dec, &cancel, |_| ControlFlow::Continue(())).expect("turn 1");
    let mut turn2 = turn1.clone();
    turn2.extend_from_slice(&r1.ids);
    turn2.extend(
        tokenizer
            .encode("<|im_end|>\n<|im_start|>user\nAnother one.<|im_end|>\n<|im_start|>assistant\n", false, true)
            .expect("encode"),
    );
    let r2 = session.generate(&turn2, &params, &mut dec, &cancel, |_| ControlFlow::Continue(())).expect("turn 2");
    assert!(r2.timings.cached_tokens >= turn1.len(), "{:?}", r2.timings);
    assert_eq!(r2.timings.cached_tokens + r2.timings.prompt_tokens, turn2.len());
    let f2 = fresh.generate(&turn2, &params, &mut dec, &cancel, |_| ControlFlow::Continue(())).expect("fresh");
    assert_eq!(f2.timings.cached_tokens, 0);
    assert_eq!(r2.ids, f2.ids, "reply after cache reuse: {:?} vs fresh {:?}", r2.text, f2.text);
    eprintln!(
        "turn 1: {:?} ({:?}); turn 2: {:?}, {} of {} prompt tokens reused",
        r1.text,
        r1.stop_reason,
        r2.text,
        r2.timings.cached_tokens,
        turn2.len()
    );
}

#[test]
fn stop_strings_and_end_of_generation_on_a_real_model() {
    let (model, tokenizer) = load(&owl_test::demo_model("smollm2"), 64);
    let mut session =
        Session::new(ModelRunner::new(model, 256, KvDtype::F16).expect("cache"), SessionConfig::default())
            .expect("session");
    let mut dec = TokenizerDecoder::new(&tokenizer, true);
    let cancel = AtomicBool::new(false);
    // Reference continuation of "The capital of France is": " Paris.\n\nThe answer is: ..."
    let prompt = tokenizer.encode("The capital of France is", true, true).expect("encode");
    let mut params = greedy(24);
    params.stop = vec![".\n".into()];
    let mut streamed = String::new();
    let g = session
        .generate(&prompt, &params, &mut dec, &cancel, |ev| {
            if let Event::Text(t) = ev {
                streamed.push_str(t);
            }
            ControlFlow::Continue(())
        })
        .expect("generate");
    assert_eq!(g.text, " Paris");
    assert_eq!(streamed, " Paris");
    assert_eq!(g.stop_reason, StopReason::Stop { index: 0, text: ".\n".into() });

    // A chat reply ends on <|im_end|> (an EOG id from the GGUF metadata), which is not part
    // of the text. The assistant turn is given a complete answer so that the end is certain.
    let mut params = greedy(200);
    params.eog = EogSet::new(tokenizer.eog_ids().iter().copied());
    let chat = tokenizer
        .encode(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n\
             The capital of France is Paris.",
            true,
            true,
        )
        .expect("encode");
    let g = session.generate(&chat, &params, &mut dec, &cancel, |_| ControlFlow::Continue(())).expect("generate");
    assert!(matches!(g.stop_reason, StopReason::Eog { .. }), "{:?}: {:?}", g.stop_reason, g.text);
    assert!(!g.text.contains("<|im_end|>"), "{:?}", g.text);
    assert!(tokenizer.eog_ids().contains(&2), "<|im_end|> is an EOG id: {:?}", tokenizer.eog_ids());
}

/// A paragraph of plain English (written for this test).
const TEXT: &str = "The river runs through the middle of the old town. In the morning, people walk along \
the water to the market, where farmers sell bread, cheese, apples and fresh vegetables. Children play near \
the bridge while their parents talk with friends. In the afternoon the streets are quiet, and most shops \
close for a few hours. When the sun goes down, the town comes back to life: families eat dinner outside, \
musicians play in the square, and the lights of the houses shine on the river. Visitors often say that \
the town feels like a small world of its own, where time moves more slowly than in the big cities. Many \
of them come back every summer to enjoy the food, the music and the friendly people who live there.";

#[test]
fn perplexity_is_finite_and_plausible() {
    // Model batches of 16: the scored half of each 64-token window needs two calls with
    // logits for every row.
    let (mut model, tokenizer) = load(&owl_test::demo_model("smollm2"), 16);
    let tokens = tokenizer.encode(TEXT, true, true).expect("encode");
    let bos = if tokenizer.adds_bos() { tokenizer.bos_id() } else { None };
    let mut runner = ModelRunner::new(&mut model, 64, KvDtype::F16).expect("cache");
    let r = perplexity(&mut runner, &tokens, &PerplexityParams::new(64, bos), &AtomicBool::new(false), |_| {})
        .expect("perplexity");
    eprintln!(
        "smollm2 perplexity over {} tokens, ctx 64: {:.3} +/- {:.3} ({} chunks, {} scored)",
        tokens.len(),
        r.ppl,
        r.ppl_stderr,
        r.chunks,
        r.tokens
    );
    assert_eq!(r.chunks, tokens.len() / 64);
    assert_eq!(r.tokens, r.chunks * 31);
    // Plain English with 32+ tokens of context: a 135M instruct model is far better than
    // chance (vocabulary 49152) and cannot be perfect.
    assert!(r.ppl.is_finite() && r.ppl > 1.5 && r.ppl < 60.0, "{}", r.ppl);
    // The same with whole half-windows per call: the split changes nothing beyond rounding.
    let (mut whole, _) = load(&owl_test::demo_model("smollm2"), 64);
    let mut whole_runner = ModelRunner::new(&mut whole, 64, KvDtype::F16).expect("cache");
    let w = perplexity(&mut whole_runner, &tokens, &PerplexityParams::new(64, bos), &AtomicBool::new(false), |_| {})
        .expect("perplexity");
    eprintln!("same with model batches of 64: {:.4} (vs {:.4})", w.ppl, r.ppl);
    assert!((w.ppl - r.ppl).abs() < 1e-3 * r.ppl, "{} vs {}", w.ppl, r.ppl);
    // Shuffled text is much less predictable.
    let mut shuffled = tokens.clone();
    let mut rng = owl_engine::rng::Xoshiro256StarStar::seed_from_u64(1);
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let s = perplexity(&mut runner, &shuffled, &PerplexityParams::new(64, bos), &AtomicBool::new(false), |_| {})
        .expect("perplexity");
    eprintln!("shuffled: {:.3}", s.ppl);
    assert!(s.ppl > 3.0 * r.ppl, "{} vs {}", s.ppl, r.ppl);
}

#[test]
fn bench_runs_on_a_real_model() {
    let (model, _) = load(&owl_test::demo_model("smollm2"), 64);
    let mut runner = ModelRunner::new(model, 128, KvDtype::F16).expect("cache");
    let params = BenchParams {
        n_prompt: vec![32],
        n_gen: vec![8],
        repetitions: 2,
        n_batch: 64,
        bos: Some(1),
        warmup: true,
        threads: 2,
        n_depth: vec![0, 48],
    };
    let results = run_bench(&mut runner, &params, &AtomicBool::new(false), |r| {
        eprintln!("smollm2 {}: {:.1} +/- {:.1} tok/s", r.test, r.tokens_per_s, r.stddev)
    })
    .expect("bench");
    let names: Vec<&str> = results.iter().map(|r| r.test.as_str()).collect();
    assert_eq!(names, ["pp32", "tg8", "pp32 @ d48", "tg8 @ d48"]);
    assert!(results.iter().all(|r| r.tokens_per_s > 1.0 && r.tokens_per_s.is_finite()));
}
