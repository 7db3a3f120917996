//! Session::generate with the fake model: greedy agreement with the model's own argmax
//! chain, seeded reproducibility, every stop condition, KV reuse, cancellation, logprobs.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use owl_engine::{
    ByteTableDecoder, ContextOverflow, EngineError, EogSet, Event, GenerateParams, Generation, LogSoftmax,
    SamplingParams, Session, SessionConfig, StopReason, TokenEvent,
};

use crate::alloc_count::allocations;
use crate::fake::{decoder, reference_greedy, FakeModel};

/// Token i decodes to `<i>`.
fn tag_decoder(vocab: usize) -> ByteTableDecoder {
    ByteTableDecoder::new((0..vocab).map(|i| format!("<{i}>").into_bytes()).collect())
}

/// A model whose greedy chain is a -> (a + 1) % vocab, with no history term.
fn successor_model(vocab: usize, n_ctx: usize) -> FakeModel {
    let mut table = vec![0.0; vocab * vocab];
    for a in 0..vocab {
        table[a * vocab + (a + 1) % vocab] = 5.0;
    }
    FakeModel::new(vocab, n_ctx, table, 0.0)
}

struct Run {
    generation: Generation,
    tokens: Vec<TokenEvent>,
    texts: Vec<String>,
}

fn run(
    session: &mut Session<FakeModel>,
    prompt: &[u32],
    params: &GenerateParams,
    dec: &mut ByteTableDecoder,
) -> Result<Run, EngineError> {
    let cancel = AtomicBool::new(false);
    let mut tokens = Vec::new();
    let mut texts = Vec::new();
    let generation = session.generate(prompt, params, dec, &cancel, |ev| {
        match ev {
            Event::Token(t) => tokens.push(t.clone()),
            Event::Text(s) => texts.push(s.to_string()),
        }
        ControlFlow::Continue(())
    })?;
    // Invariant of every run: the streamed text pieces are exactly the final text.
    assert_eq!(texts.concat(), generation.text);
    assert!(texts.iter().all(|t| !t.is_empty()), "no empty text events");
    assert_eq!(tokens.iter().map(|t| t.id).collect::<Vec<_>>(), generation.ids);
    assert_eq!(generation.timings.gen_tokens, generation.ids.len());
    Ok(Run { generation, tokens, texts })
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams { sampling: SamplingParams::greedy(), max_tokens: Some(max_tokens), ..GenerateParams::default() }
}

fn session(model: FakeModel) -> Session<FakeModel> {
    Session::new(model, SessionConfig::default()).unwrap()
}

#[test]
fn greedy_agrees_with_the_models_argmax_chain() {
    for seed in 0..5 {
        let model = FakeModel::random(24, 128, seed, 0.3);
        let prompt = [1u32, 5, 7, 5, 2];
        let want = reference_greedy(&model, &prompt, 30);
        let mut s = session(model);
        let r = run(&mut s, &prompt, &greedy(30), &mut tag_decoder(24)).unwrap();
        assert_eq!(r.generation.ids, want, "model seed {seed}");
        assert_eq!(r.generation.stop_reason, StopReason::MaxTokens);
        let text: String = want.iter().map(|i| format!("<{i}>")).collect();
        assert_eq!(r.generation.text, text);
        assert_eq!(r.generation.prompt_ids, prompt);
        assert_eq!(r.generation.timings.prompt_tokens, 5);
    }
}

#[test]
fn prefill_runs_in_chunks_with_logits_only_for_the_last_token() {
    let model = FakeModel::random(16, 64, 3, 0.2);
    let prompt: Vec<u32> = (0..11).map(|i| i % 16).collect();
    let want = reference_greedy(&model, &prompt, 4);
    let mut s = Session::new(model, SessionConfig { n_batch: 4 }).unwrap();
    let r = run(&mut s, &prompt, &greedy(4), &mut tag_decoder(16)).unwrap();
    assert_eq!(r.generation.ids, want);
    let calls = &s.model().calls;
    let shape: Vec<(usize, usize, usize)> = calls.iter().map(|c| (c.kv_len, c.tokens.len(), c.first_output)).collect();
    // 4 + 4 + 3 prompt tokens, then 3 decode steps (the 4th token is never run).
    assert_eq!(shape, vec![(0, 4, 4), (4, 4, 4), (8, 3, 2), (11, 1, 0), (12, 1, 0), (13, 1, 0)]);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let params = |seed| GenerateParams {
        sampling: SamplingParams {
            seed: Some(seed),
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: Some(40),
        ..GenerateParams::default()
    };
    let model = FakeModel::random(32, 128, 9, 0.05);
    let prompt = [3u32, 4];
    let a = run(&mut session(model.clone()), &prompt, &params(7), &mut tag_decoder(32)).unwrap();
    let b = run(&mut session(model.clone()), &prompt, &params(7), &mut tag_decoder(32)).unwrap();
    let c = run(&mut session(model.clone()), &prompt, &params(8), &mut tag_decoder(32)).unwrap();
    assert_eq!(a.generation.ids, b.generation.ids);
    assert_eq!(a.generation.seed, 7);
    assert_ne!(a.generation.ids, c.generation.ids);
    // Same session, second request with the same seed: same output (the KV reuse path).
    let mut s = session(model.clone());
    let first = run(&mut s, &prompt, &params(7), &mut tag_decoder(32)).unwrap();
    let again = run(&mut s, &prompt, &params(7), &mut tag_decoder(32)).unwrap();
    assert_eq!(first.generation.ids, again.generation.ids);
    assert_eq!(first.generation.ids, a.generation.ids);
    // No seed: a clock seed is reported, and replaying it gives the same tokens.
    let mut unseeded = params(0);
    unseeded.sampling.seed = None;
    let u = run(&mut session(model.clone()), &prompt, &unseeded, &mut tag_decoder(32)).unwrap();
    let replay = run(&mut session(model), &prompt, &params(u.generation.seed), &mut tag_decoder(32)).unwrap();
    assert_eq!(u.generation.ids, replay.generation.ids);
}

#[test]
fn end_of_generation_ids_stop_and_are_not_output() {
    // Chain from 1: 2, 3, 4, 5, 0, ...
    let mut s = session(successor_model(6, 64));
    let mut p = greedy(50);
    p.eog = EogSet::new([5, 4]);
    let r = run(&mut s, &[1], &p, &mut tag_decoder(6)).unwrap();
    assert_eq!(r.generation.ids, vec![2, 3]);
    assert_eq!(r.generation.stop_reason, StopReason::Eog { id: 4 });
    assert_eq!(r.generation.text, "<2><3>");
    p.eog = EogSet::new([5]);
    let r = run(&mut s, &[1], &p, &mut tag_decoder(6)).unwrap();
    assert_eq!(r.generation.ids, vec![2, 3, 4]);
    assert_eq!(r.generation.stop_reason, StopReason::Eog { id: 5 });
    assert_eq!(r.generation.stop_reason.finish_reason(), "stop");
}

#[test]
fn stop_strings_across_tokens_are_never_output() {
    let pieces: &[&[u8]] = &[b"Hello", b" wor", b"ld", b"</", b"s>", b" more", b"!"];
    let mut s = session(successor_model(7, 64));
    let mut p = greedy(50);
    p.stop = vec!["</s>".into()];
    // Prompt [6]: chain 0, 1, 2, 3, 4, ...
    let r = run(&mut s, &[6], &p, &mut decoder(pieces)).unwrap();
    assert_eq!(r.generation.text, "Hello world");
    assert_eq!(r.generation.stop_reason, StopReason::Stop { index: 0, text: "</s>".into() });
    assert_eq!(r.generation.ids, vec![0, 1, 2, 3, 4], "the stop's tokens were generated");
    assert_eq!(r.tokens[3].text, "</", "token events carry raw pieces");
    assert!(r.texts.iter().all(|t| !t.contains('<')), "{:?}", r.texts);
    // A stop inside and across pieces.
    p.stop = vec!["xyz".into(), "lo w".into()];
    let r = run(&mut s, &[6], &p, &mut decoder(pieces)).unwrap();
    assert_eq!(r.generation.text, "Hel");
    assert_eq!(r.generation.stop_reason, StopReason::Stop { index: 1, text: "lo w".into() });
    assert_eq!(r.generation.ids, vec![0, 1]);
    // A partial match that never completes is released at the end.
    p.stop = vec!["</x>".into()];
    p.max_tokens = Some(4);
    let r = run(&mut s, &[6], &p, &mut decoder(pieces)).unwrap();
    assert_eq!(r.generation.text, "Hello world</");
    assert_eq!(r.generation.stop_reason, StopReason::MaxTokens);
    assert_eq!(r.texts.last().map(String::as_str), Some("</"), "held text flushed last");
}

#[test]
fn split_utf8_characters_are_streamed_whole() {
    let euro = "€".as_bytes();
    let pieces: &[&[u8]] = &[b"a", &euro[..2], &euro[2..], b"b"];
    let mut s = session(successor_model(4, 16));
    let r = run(&mut s, &[3], &greedy(4), &mut decoder(pieces)).unwrap();
    assert_eq!(r.generation.text, "a€b");
    let texts: Vec<&str> = r.tokens.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, vec!["a", "", "€", "b"]);
    // Ending in the middle of a character: flushed as U+FFFD.
    let r = run(&mut s, &[3], &greedy(2), &mut decoder(pieces)).unwrap();
    assert_eq!(r.generation.text, "a\u{fffd}");
}

#[test]
fn max_tokens_zero_and_n() {
    let mut s = session(successor_model(5, 32));
    let r = run(&mut s, &[0, 1], &greedy(0), &mut tag_decoder(5)).unwrap();
    assert!(r.generation.ids.is_empty());
    assert_eq!(r.generation.stop_reason, StopReason::MaxTokens);
    assert_eq!(r.generation.stop_reason.finish_reason(), "length");
    let r = run(&mut s, &[0, 1], &greedy(3), &mut tag_decoder(5)).unwrap();
    assert_eq!(r.generation.ids, vec![2, 3, 4]);
}

#[test]
fn generation_stops_cleanly_at_the_context_limit() {
    let mut s = session(successor_model(5, 8));
    let mut p = greedy(100);
    p.max_tokens = None;
    let r = run(&mut s, &[0, 1, 2, 3, 4], &p, &mut tag_decoder(5)).unwrap();
    // 5 prompt positions + 3 generated tokens run = 8; the 4th is sampled from the last
    // logits and cannot be run: 4 tokens, then ContextFull.
    assert_eq!(r.generation.ids, vec![0, 1, 2, 3]);
    assert_eq!(r.generation.stop_reason, StopReason::ContextFull);
    assert_eq!(s.model().cache.len(), 8);
    // A prompt that fills the context exactly still yields one token.
    let r = run(&mut s, &[0, 1, 2, 3, 4, 0, 1, 2], &p, &mut tag_decoder(5)).unwrap();
    assert_eq!(r.generation.ids, vec![3]);
    assert_eq!(r.generation.stop_reason, StopReason::ContextFull);
}

#[test]
fn long_prompts_error_or_truncate_from_the_left() {
    let model = FakeModel::random(10, 8, 1, 0.4);
    let mut s = session(model.clone());
    let prompt: Vec<u32> = (0..12).map(|i| i % 10).collect();
    let e = run(&mut s, &prompt, &greedy(2), &mut tag_decoder(10)).err().unwrap();
    assert!(matches!(e, EngineError::PromptTooLong { prompt_tokens: 12, n_ctx: 8 }), "{e}");
    let mut p = greedy(2);
    p.overflow = ContextOverflow::TruncateLeft { keep_first: 1 };
    let r = run(&mut s, &prompt, &p, &mut tag_decoder(10)).unwrap();
    // Room for 2 tokens: 6 prompt tokens = the first, then the last 5.
    assert_eq!(r.generation.prompt_ids, vec![0, 7, 8, 9, 0, 1]);
    assert_eq!(r.generation.ids, reference_greedy(&model, &[0, 7, 8, 9, 0, 1], 2));
    assert!(matches!(run(&mut s, &[], &p, &mut tag_decoder(10)).err().unwrap(), EngineError::EmptyPrompt));
    let e = run(&mut s, &[1, 10], &p, &mut tag_decoder(10)).err().unwrap();
    assert!(matches!(e, EngineError::TokenOutOfRange { id: 10, vocab_size: 10, .. }), "{e}");
}

#[test]
fn kv_cache_is_reused_between_turns() {
    let model = FakeModel::random(20, 256, 5, 0.25);
    let fresh = |prompt: &[u32], n| reference_greedy(&model, prompt, n);
    let mut s = session(model.clone());
    let turn1: Vec<u32> = vec![1, 2, 3, 4, 5, 6];
    let r1 = run(&mut s, &turn1, &greedy(5), &mut tag_decoder(20)).unwrap();
    assert_eq!(r1.generation.timings.cached_tokens, 0);
    // The cache holds the prompt and all generated tokens but the last.
    let mut expect_cached = turn1.clone();
    expect_cached.extend_from_slice(&r1.generation.ids[..4]);
    assert_eq!(s.cached_tokens(), &expect_cached[..]);

    // Turn 2 extends the whole conversation: only the new suffix is run.
    let mut turn2 = turn1.clone();
    turn2.extend_from_slice(&r1.generation.ids);
    turn2.extend_from_slice(&[7, 8]);
    let before = s.model().forwarded_tokens();
    let r2 = run(&mut s, &turn2, &greedy(5), &mut tag_decoder(20)).unwrap();
    assert_eq!(r2.generation.timings.cached_tokens, 10);
    assert_eq!(r2.generation.timings.prompt_tokens, 3);
    assert_eq!(s.model().forwarded_tokens() - before, 3 + 4);
    assert_eq!(r2.generation.ids, fresh(&turn2, 5), "reuse changes nothing in the output");

    // A prompt that diverges early: the cache is cut at the divergence.
    let turn3 = vec![1, 2, 9, 9];
    let r3 = run(&mut s, &turn3, &greedy(3), &mut tag_decoder(20)).unwrap();
    assert_eq!(r3.generation.timings.cached_tokens, 2);
    assert_eq!(r3.generation.ids, fresh(&turn3, 3));

    // The same prompt again: everything but its last two tokens is reused (the rest runs as
    // one piece of two, as it would without the cache: batch invariance).
    let r4 = run(&mut s, &turn3, &greedy(3), &mut tag_decoder(20)).unwrap();
    assert_eq!(r4.generation.timings.cached_tokens, 2);
    assert_eq!(r4.generation.timings.prompt_tokens, 2);
    assert_eq!(r4.generation.ids, r3.generation.ids);

    // /clear
    s.clear_cache();
    let r5 = run(&mut s, &turn3, &greedy(3), &mut tag_decoder(20)).unwrap();
    assert_eq!(r5.generation.timings.cached_tokens, 0);
    assert_eq!(r5.generation.ids, r3.generation.ids);
}

#[test]
fn kv_reuse_with_a_cache_that_cuts_coarsely_or_not_at_all() {
    for granularity in [0usize, 4] {
        let mut model = FakeModel::random(20, 256, 6, 0.25);
        model.truncate_granularity = granularity;
        let reference = model.clone();
        let mut s = session(model);
        let turn1: Vec<u32> = (0..10).collect();
        let r1 = run(&mut s, &turn1, &greedy(4), &mut tag_decoder(20)).unwrap();
        let mut turn2 = turn1.clone();
        turn2.extend_from_slice(&r1.generation.ids);
        turn2.push(15);
        let r2 = run(&mut s, &turn2, &greedy(4), &mut tag_decoder(20)).unwrap();
        // Common prefix 13; the cache keeps 12 (multiple of 4) or 0.
        let kept = if granularity == 0 { 0 } else { 12 };
        assert_eq!(r2.generation.timings.cached_tokens, kept);
        assert_eq!(r2.generation.timings.prompt_tokens, turn2.len() - kept);
        assert_eq!(r2.generation.ids, reference_greedy(&reference, &turn2, 4));
    }
}

#[test]
fn cache_touched_behind_the_sessions_back_is_rebuilt() {
    let model = FakeModel::random(12, 64, 2, 0.3);
    let reference = model.clone();
    let mut s = session(model);
    run(&mut s, &[1, 2, 3], &greedy(3), &mut tag_decoder(12)).unwrap();
    s.model_mut().cache.push(7);
    let r = run(&mut s, &[1, 2, 3, 4], &greedy(3), &mut tag_decoder(12)).unwrap();
    assert_eq!(r.generation.timings.cached_tokens, 0);
    assert_eq!(r.generation.ids, reference_greedy(&reference, &[1, 2, 3, 4], 3));
}

#[test]
fn cancellation_flag_and_callback_break() {
    let mut s = session(successor_model(6, 64));
    let cancel = AtomicBool::new(false);
    let mut dec = tag_decoder(6);
    let mut seen = 0;
    let g = s
        .generate(&[0], &greedy(50), &mut dec, &cancel, |ev| {
            if let Event::Token(_) = ev {
                seen += 1;
                if seen == 3 {
                    cancel.store(true, Ordering::Relaxed); // what a Ctrl-C handler does
                }
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(g.ids, vec![1, 2, 3]);
    assert_eq!(g.stop_reason, StopReason::Cancelled);
    assert_eq!(g.text, "<1><2><3>");
    // Raised before the call: nothing is generated, and the session stays usable.
    let g = s.generate(&[0, 1], &greedy(50), &mut dec, &cancel, |_| ControlFlow::Continue(())).unwrap();
    assert!(g.ids.is_empty());
    assert_eq!(g.stop_reason, StopReason::Cancelled);
    cancel.store(false, Ordering::Relaxed);
    let mut n = 0;
    let g = s
        .generate(&[0, 1], &greedy(50), &mut dec, &cancel, |ev| {
            if let Event::Token(_) = ev {
                n += 1;
            }
            if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(g.ids, vec![2, 3]);
    assert_eq!(g.stop_reason, StopReason::Cancelled);
}

#[test]
fn logprobs_and_top_alternatives_are_the_full_softmax() {
    let model = FakeModel::random(40, 128, 4, 0.3);
    let reference = model.clone();
    let mut s = session(model);
    let prompt = [5u32, 6, 7];
    let mut p = greedy(8);
    p.top_logprobs = 5;
    let r = run(&mut s, &prompt, &p, &mut tag_decoder(40)).unwrap();
    let mut context = prompt.to_vec();
    for t in &r.tokens {
        let row = reference.logits_after(&context);
        let norm = LogSoftmax::of(&row);
        let lp = t.logprob.expect("logprob requested");
        assert!((f64::from(lp) - norm.logprob(row[t.id as usize])).abs() < 1e-6);
        assert_eq!(t.top.len(), 5);
        assert_eq!(t.top[0].id, t.id, "greedy picks the top token");
        assert_eq!(t.top[0].logprob, lp);
        assert!(t.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        // Independent check of the alternatives: a full sort of the row.
        let mut ids: Vec<usize> = (0..row.len()).collect();
        ids.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
        assert_eq!(t.top.iter().map(|e| e.id as usize).collect::<Vec<_>>(), ids[..5].to_vec());
        context.push(t.id);
    }
    // JSON shape of one event (CLI.md): {"id","text","logprob","top":[{"id","logprob"}]}.
    let json = serde_json::to_value(&r.tokens[0]).unwrap();
    assert!(json["id"].is_u64() && json["text"].is_string() && json["logprob"].is_f64());
    assert_eq!(json["top"].as_array().unwrap().len(), 5);
    assert!(json["top"][0]["id"].is_u64() && json["top"][0]["logprob"].is_f64());
    // Off by default: no logprob, no top.
    let r = run(&mut s, &prompt, &greedy(2), &mut tag_decoder(40)).unwrap();
    assert!(r.tokens.iter().all(|t| t.logprob.is_none() && t.top.is_empty()));
    let json = serde_json::to_value(&r.tokens[0]).unwrap();
    assert!(json.get("logprob").is_none() && json.get("top").is_none());
}

#[test]
fn repetition_penalty_sees_the_prompt() {
    // Row 1 prefers 1 (5.0) over 2 (4.0): penalty 2 on the prompt's 1 makes it 2.5.
    let mut table = vec![0.0; 9];
    table[3 + 1] = 5.0;
    table[3 + 2] = 4.0;
    let model = FakeModel::new(3, 16, table, 0.0);
    let mut s = session(model);
    let mut p = greedy(1);
    assert_eq!(run(&mut s, &[1], &p, &mut tag_decoder(3)).unwrap().generation.ids, vec![1]);
    p.sampling.repeat_penalty = 2.0;
    assert_eq!(run(&mut s, &[1], &p, &mut tag_decoder(3)).unwrap().generation.ids, vec![2]);
    p.sampling.repeat_last_n = 0;
    assert_eq!(run(&mut s, &[1], &p, &mut tag_decoder(3)).unwrap().generation.ids, vec![1]);
}

#[test]
fn model_failure_is_reported_and_the_session_recovers() {
    let mut model = FakeModel::random(10, 64, 8, 0.1);
    model.fail_at = Some(6);
    let reference = model.clone();
    let mut s = session(model);
    let e = run(&mut s, &[1, 2, 3, 4], &greedy(10), &mut tag_decoder(10)).err().unwrap();
    assert!(matches!(e, EngineError::Model { position: 6, .. }), "{e}");
    assert!(e.to_string().contains("injected failure"), "{e}");
    assert!(s.cached_tokens().is_empty());
    s.model_mut().fail_at = None;
    let r = run(&mut s, &[1, 2, 3, 4], &greedy(10), &mut tag_decoder(10)).unwrap();
    assert_eq!(r.generation.ids, reference_greedy(&reference, &[1, 2, 3, 4], 10));
}

#[test]
fn invalid_sampling_parameters_are_rejected_before_any_work() {
    let mut s = session(successor_model(4, 16));
    let mut p = greedy(3);
    p.sampling.top_p = 1.5;
    let e = run(&mut s, &[1], &p, &mut tag_decoder(4)).err().unwrap();
    assert!(e.to_string().contains("top_p"), "{e}");
    assert_eq!(s.model().calls.len(), 0);
}

#[test]
fn decoding_allocates_nothing_per_token() {
    // Warm up, then compare the allocations of a short and a long generation: the
    // difference may only come from the growth of the result's ids and text (amortised,
    // a few reallocations each), never from per-token work.
    let allocs_for = |n: usize, params: &GenerateParams| -> usize {
        let mut model = FakeModel::random(300, 4096, 12, 0.0);
        model.record_calls = false;
        let mut s = session(model);
        let mut dec = tag_decoder(300);
        let cancel = AtomicBool::new(false);
        let mut p = params.clone();
        p.max_tokens = Some(8);
        s.generate(&[1, 2, 3], &p, &mut dec, &cancel, |_| ControlFlow::Continue(())).unwrap();
        p.max_tokens = Some(n);
        let before = allocations();
        let g = s.generate(&[1, 2, 3], &p, &mut dec, &cancel, |_| ControlFlow::Continue(())).unwrap();
        let used = allocations() - before;
        assert_eq!(g.ids.len(), n);
        used
    };
    let sampled = GenerateParams {
        sampling: SamplingParams {
            seed: Some(1),
            repeat_penalty: 1.1,
            presence_penalty: 0.1,
            top_k: 0,
            top_p: 0.9,
            min_p: 0.01,
            ..SamplingParams::default()
        },
        stop: vec!["never appears".into(), "<<".into()],
        top_logprobs: 5,
        ..GenerateParams::default()
    };
    for params in [greedy(0), sampled] {
        let short = allocs_for(50, &params);
        let long = allocs_for(1000, &params);
        assert!(long <= short + 16, "{long} allocations for 1000 tokens vs {short} for 50");
    }
}
