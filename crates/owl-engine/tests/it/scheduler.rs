//! The continuous-batching scheduler on the smallest demo model: concurrent greedy replies
//! equal the same requests run one at a time (and through a `Session`), bit for bit; a
//! full queue refuses; a cancelled sequence frees its slot for the next request within one
//! step; repeated prefixes are reused, also across slots.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

use owl_engine::{
    EngineError, GenerateParams, ModelRunner, SamplingParams, Scheduler, SchedulerConfig, SchedulerEvent, SeqId,
    SeqOutcome, SeqRequest, Session, SessionConfig, StopReason, TokenizerDecoder, Verdict,
};
use owl_models::{KvDtype, LoadOptions, Model};
use owl_tokenizer::Tokenizer;

fn smollm2(max_batch_tokens: usize) -> (Model, Tokenizer) {
    demo("smollm2", max_batch_tokens)
}

fn demo(name: &str, max_batch_tokens: usize) -> (Model, Tokenizer) {
    let path = owl_test::demo_model(name);
    let model = Model::load_gguf(&path, &LoadOptions { threads: 2, max_batch_tokens }).expect("model");
    let gguf = owl_formats::gguf::GgufFile::open(&path).expect("gguf");
    (model, Tokenizer::from_gguf(&gguf).expect("tokenizer"))
}

fn scheduler(model: Model, slots: usize, budget: usize, queue: usize) -> Scheduler<ModelRunner> {
    let runner = ModelRunner::with_slots(model, slots, 256, KvDtype::F16).expect("cache");
    Scheduler::new(runner, SchedulerConfig { max_batch_tokens: budget, max_queue: queue }).expect("scheduler")
}

fn params(max_tokens: usize, seed: Option<u64>) -> GenerateParams {
    let sampling = match seed {
        None => SamplingParams::greedy(),
        Some(seed) => SamplingParams { seed: Some(seed), temperature: 0.9, ..SamplingParams::default() },
    };
    GenerateParams { sampling, max_tokens: Some(max_tokens), ..GenerateParams::default() }
}

/// Steps until every sequence ended; returns the outcomes by id.
/// One step; the sequences it finished, with why.
fn finished_in_one_step(s: &mut Scheduler<ModelRunner>) -> Vec<(SeqId, StopReason)> {
    let mut ended = Vec::new();
    s.step(|e| {
        if let SchedulerEvent::Finished { seq, outcome } = e {
            ended.push((seq, outcome.stop_reason.clone()));
        }
        Verdict::Continue
    })
    .unwrap();
    ended
}

fn drain(s: &mut Scheduler<ModelRunner>) -> HashMap<SeqId, SeqOutcome> {
    let mut done = HashMap::new();
    while s.has_work() {
        s.step(|event| {
            if let SchedulerEvent::Finished { seq, outcome } = event {
                done.insert(seq, outcome.clone());
            }
            Verdict::Continue
        })
        .expect("step");
    }
    done
}

/// Prompts of many lengths: a shared system prefix, a one-token and a two-token prompt.
fn prompts(tokenizer: &Tokenizer) -> Vec<Vec<u32>> {
    let system = "You are a helpful assistant who answers in one short paragraph. ";
    let mut out: Vec<Vec<u32>> = [
        "What is the capital of France?",
        "Name three prime numbers.",
        "Why is the sky blue?",
        "Write a haiku about owls.",
        "How do bees make honey?",
    ]
    .iter()
    .map(|q| tokenizer.encode(&format!("{system}{q}"), true, false).expect("encode"))
    .collect();
    out.push(tokenizer.encode("Once upon a time, in a small village by the sea, there lived", true, false).unwrap());
    out.push(out[0][..1].to_vec());
    out.push(out[1][..2].to_vec());
    out
}

#[test]
fn concurrent_replies_equal_one_at_a_time_bit_for_bit() {
    let (model, tokenizer) = smollm2(48);
    let prompts = prompts(&tokenizer);
    let n = 14;
    let request = |i: usize| {
        let seed = (i % 3 == 2).then_some(1000 + i as u64);
        SeqRequest { prompt: prompts[i].clone(), params: params(n, seed) }
    };

    // One at a time through a 4-slot scheduler.
    let mut s = scheduler(model, 4, 48, 16);
    let mut alone = Vec::new();
    for i in 0..prompts.len() {
        let id = s.submit(request(i)).expect("submit");
        let mut done = drain(&mut s);
        alone.push(done.remove(&id).expect("finished"));
    }
    let model = s.into_model().into_model();

    // All at once: queued beyond the 4 slots, prompts chunked within a 48-token budget
    // beside the decode steps of others.
    let mut s = scheduler(model, 4, 48, 16);
    let ids: Vec<SeqId> = (0..prompts.len()).map(|i| s.submit(request(i)).expect("submit")).collect();
    assert_eq!(s.queued(), prompts.len());
    let mut done = drain(&mut s);
    for (i, id) in ids.iter().enumerate() {
        let together = done.remove(id).expect("finished");
        assert_eq!(together.ids.len(), n, "prompt {i}: {:?}", together.stop_reason);
        assert_eq!(together.ids, alone[i].ids, "prompt {i}: concurrent and alone differ");
        if let Some(seed) = request(i).params.sampling.seed {
            assert_eq!((together.seed, alone[i].seed), (seed, seed));
        }
    }
    let stats = s.stats();
    assert_eq!(stats.finished, prompts.len() as u64);
    assert!(stats.cached_prompt_tokens > 0, "the shared system prompt is reused: {stats:?}");
    let model = s.into_model().into_model();

    // And through a Session (a one-slot scheduler, other chunking).
    let runner = ModelRunner::new(model, 256, KvDtype::F16).expect("cache");
    let mut session = Session::new(runner, SessionConfig { n_batch: 12 }).expect("session");
    for (i, prompt) in prompts.iter().enumerate() {
        let mut dec = TokenizerDecoder::new(&tokenizer, false);
        let cancel = AtomicBool::new(false);
        let g = session.generate(prompt, &request(i).params, &mut dec, &cancel, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(g.ids, alone[i].ids, "prompt {i}: session and scheduler differ");
    }
}

#[test]
fn queue_limit_cancellation_and_prefix_reuse_across_slots() {
    let (model, tokenizer) = smollm2(64);
    let prompts = prompts(&tokenizer);
    let mut s = scheduler(model, 2, 64, 1);

    // Two running, one waiting, the fourth refused.
    let a = s.submit(SeqRequest { prompt: prompts[0].clone(), params: params(200, None) }).unwrap();
    s.step(|_| Verdict::Continue).unwrap();
    let b = s.submit(SeqRequest { prompt: prompts[5].clone(), params: params(200, None) }).unwrap();
    s.step(|_| Verdict::Continue).unwrap();
    assert_eq!((s.active(), s.queued()), (2, 0));
    let c = s.submit(SeqRequest { prompt: prompts[1].clone(), params: params(3, None) }).unwrap();
    let full = s.submit(SeqRequest { prompt: prompts[2].clone(), params: params(3, None) });
    assert!(matches!(full, Err(EngineError::QueueFull { waiting: 1 })), "{full:?}");
    for _ in 0..4 {
        s.step(|_| Verdict::Continue).unwrap();
    }
    // c shares the system prompt with a, which is running: its prefix is copied over when
    // it gets b's slot. b is cancelled; within one step b ends and c runs.
    assert!(s.cancel(b));
    let ended = finished_in_one_step(&mut s);
    assert_eq!(ended, vec![(b, StopReason::Cancelled)]);
    assert_eq!((s.active(), s.queued()), (2, 0));
    let before = s.stats();
    let mut done = HashMap::new();
    // A client that goes away mid-stream: stopping a's stream from the callback ends it too.
    while s.has_work() {
        s.step(|e| match e {
            SchedulerEvent::Finished { seq, outcome } => {
                done.insert(seq, outcome.clone());
                Verdict::Continue
            }
            SchedulerEvent::Token { seq, .. } if seq == a => Verdict::Stop(StopReason::Cancelled),
            _ => Verdict::Continue,
        })
        .unwrap();
    }
    assert_eq!(done[&a].stop_reason, StopReason::Cancelled);
    assert_eq!(done[&c].ids.len(), 3);
    let shared = prompts[0].iter().zip(&prompts[1]).take_while(|(x, y)| x == y).count();
    assert!(shared > 8, "the prompts share the system prompt");
    assert_eq!(done[&c].timings.cached_tokens, shared, "c reused a's prefix from the other slot");
    assert_eq!(s.stats().cached_prompt_tokens - before.cached_prompt_tokens, 0, "counted at admission");
    assert!(!s.cancel(a), "a finished sequence is unknown");

    // The same prompt again reuses all but its last two tokens.
    let c_ids = done[&c].ids.clone();
    let d = s.submit(SeqRequest { prompt: prompts[1].clone(), params: params(3, None) }).unwrap();
    let done = drain(&mut s);
    assert_eq!(done[&d].timings.cached_tokens, prompts[1].len() - 2);
    assert_eq!(done[&d].ids, c_ids, "a reused prefix changes nothing");
    assert!(s.stats().prefix_hit_rate() > 0.0);

    // Bad requests are refused before anything runs.
    let empty = s.submit(SeqRequest { prompt: vec![], params: params(3, None) });
    assert!(matches!(empty, Err(EngineError::EmptyPrompt)));
    let long = s.submit(SeqRequest { prompt: vec![1; 300], params: params(3, None) });
    assert!(matches!(long, Err(EngineError::PromptTooLong { prompt_tokens: 300, n_ctx: 256 })), "{long:?}");
    let oov = s.submit(SeqRequest { prompt: vec![1, u32::MAX], params: params(3, None) });
    assert!(matches!(oov, Err(EngineError::TokenOutOfRange { .. })));

    // Shutting down: the waiting request leaves at once, the running ones end in one step.
    let e = s.submit(SeqRequest { prompt: prompts[2].clone(), params: params(200, None) }).unwrap();
    let f = s.submit(SeqRequest { prompt: prompts[3].clone(), params: params(200, None) }).unwrap();
    s.step(|_| Verdict::Continue).unwrap();
    let g = s.submit(SeqRequest { prompt: prompts[4].clone(), params: params(200, None) }).unwrap();
    assert_eq!((s.active(), s.queued()), (2, 1));
    assert_eq!(s.cancel_all(), vec![g]);
    let mut ended = finished_in_one_step(&mut s);
    ended.sort_by_key(|(seq, _)| *seq);
    assert_eq!(ended, vec![(e, StopReason::Cancelled), (f, StopReason::Cancelled)]);
    assert!(!s.has_work());
}

/// An embedding is the L2-normalised mean of the final-norm hidden states, as the model's
/// own forward pass reports them (`Stage::FinalNorm`), and leaves the slots usable.
#[test]
fn embeddings_are_normalised_mean_final_hidden_states() {
    let (model, tokenizer) = smollm2(16);
    let text = "Embeddings pool the last hidden states of every token of this sentence, which is long enough.";
    let tokens = tokenizer.encode(text, true, false).unwrap();
    assert!(tokens.len() > 16, "more tokens than one forward call holds");
    let (mut reference, _) = smollm2(64);
    let mut kv = reference.new_kv_cache(1, 256, KvDtype::F16).unwrap();
    let mut batch = owl_models::Batch::new();
    batch.push_sequence(0, 0, &tokens, true);
    let h = reference.config().hidden_size;
    let mut logits = vec![0.0; tokens.len() * reference.vocab_size()];
    let mut want = vec![0f64; h];
    reference
        .forward_inspect(&batch, &mut kv, &mut logits, &mut |stage, x| {
            if stage == owl_models::Stage::FinalNorm {
                for row in x.chunks_exact(h) {
                    want.iter_mut().zip(row).for_each(|(w, &v)| *w += f64::from(v));
                }
            }
        })
        .unwrap();
    let norm = want.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut s = scheduler(model, 2, 16, 4);
    let got = s.embed(&tokens, None).unwrap().expect("a free slot");
    assert_eq!(got.len(), h);
    let err = got.iter().zip(&want).map(|(&g, &w)| (f64::from(g) - w / norm).abs()).fold(0.0, f64::max);
    assert!(err < 2e-4, "max difference {err}");
    assert!(matches!(s.embed(&[], None), Err(EngineError::EmptyPrompt)));
    // Generation still works after it.
    s.submit(SeqRequest { prompt: tokens[..5].to_vec(), params: params(2, None) }).unwrap();
    let done = drain(&mut s);
    assert_eq!(done.values().next().unwrap().ids.len(), 2);
}

/// Aggregate decode rate with 1, 4 and 8 sequences at once (a measurement, not a check):
/// `cargo test -p owl-engine --test it aggregate_decode_rate -- --ignored --nocapture`;
/// `OWL_BENCH_MODEL=gemma3` (a demo model's name) measures another model than smollm2.
#[test]
#[ignore]
fn aggregate_decode_rate() {
    let name = std::env::var("OWL_BENCH_MODEL").unwrap_or_else(|_| "smollm2".into());
    let (mut model, tokenizer) = demo(&name, 512);
    let prompt = tokenizer.encode("Tell me a long story about a dragon.", true, false).unwrap();
    for parallel in [1, 4, 8] {
        let mut s = scheduler(model, parallel, 512, 64);
        for _ in 0..parallel {
            s.submit(SeqRequest { prompt: prompt.clone(), params: params(64, None) }).unwrap();
        }
        // Prefill first, then time the decode steps only.
        while s.stats().generated_tokens < parallel as u64 {
            s.step(|_| Verdict::Continue).unwrap();
        }
        let (t0, g0) = (std::time::Instant::now(), s.stats().generated_tokens);
        drain(&mut s);
        let rate = (s.stats().generated_tokens - g0) as f64 / t0.elapsed().as_secs_f64();
        println!("{name} parallel {parallel}: {rate:.1} tokens/s aggregate");
        model = s.into_model().into_model();
    }
}

/// A random rank-4 adapter on every q and v projection of `model` (a llama GGUF), strong
/// enough to change greedy replies.
fn random_adapter(model: &Model) -> std::sync::Arc<owl_models::LoraSet> {
    use owl_models::{LoraAdapter, LoraMatrix, LoraSet};
    let file = model.file().expect("loaded from a file");
    let mut state = 7u64;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    };
    let mut matrices = HashMap::new();
    for (name, &[rows, cols]) in &file.matrices {
        if name.ends_with("attn_q.weight") || name.ends_with("attn_v.weight") {
            let a = (0..4 * cols).map(|_| next()).collect();
            let b = (0..rows * 4).map(|_| next()).collect();
            matrices.insert(name.clone(), LoraMatrix::new(rows, cols, 4, a, b, 2.0).expect("pair"));
        }
    }
    assert!(matrices.len() >= 2);
    let adapter = std::sync::Arc::new(LoraAdapter::new("random", matrices));
    std::sync::Arc::new(LoraSet::new(vec![(adapter, 1.0)]))
}

/// Sequences with and without an adapter run in the same steps, each as it would alone; a
/// cached prefix is reused only under the adapters it was computed with.
#[test]
fn adapters_per_request_and_prefix_reuse_under_the_same_adapters() {
    let (model, tokenizer) = smollm2(64);
    let lora = random_adapter(&model);
    let prompt = prompts(&tokenizer)[0].clone();
    let with = |lora: Option<std::sync::Arc<owl_models::LoraSet>>| SeqRequest {
        prompt: prompt.clone(),
        params: GenerateParams { lora, ..params(8, None) },
    };
    let mut s = scheduler(model, 2, 64, 4);
    // Alone, one after the other: base, adapted, adapted again (its prefix reused).
    let mut alone = Vec::new();
    for req in [with(None), with(Some(lora.clone())), with(Some(lora.clone()))] {
        let before = s.stats().cached_prompt_tokens;
        let id = s.submit(req).expect("submit");
        let out = drain(&mut s).remove(&id).expect("finished");
        alone.push((out.ids, s.stats().cached_prompt_tokens - before));
    }
    assert_ne!(alone[0].0, alone[1].0, "the adapter changes the reply");
    assert_eq!(alone[1].0, alone[2].0);
    // The first adapted request found only the base's cache: nothing reused; the second
    // reused the first's prompt.
    assert_eq!(alone[1].1, 0, "a base prefix was reused under an adapter");
    assert_eq!(alone[2].1, prompt.len() as u64 - 2);
    // Together in one batch.
    s.clear_cache();
    let a = s.submit(with(None)).expect("submit");
    let b = s.submit(with(Some(lora))).expect("submit");
    let mut done = drain(&mut s);
    assert_eq!(done.remove(&a).expect("a").ids, alone[0].0);
    assert_eq!(done.remove(&b).expect("b").ids, alone[1].0);
}
