//! llama-bench-style pp/tg measurement through the trait, with the fake model.

use std::sync::atomic::AtomicBool;

use owl_engine::bench::{bench_test, mean_and_stddev};
use owl_engine::{run_bench, BenchParams, BenchTest, EngineError};

use crate::fake::FakeModel;

#[test]
fn runs_pp_and_tg_tests_like_llama_bench() {
    let mut model = FakeModel::random(30, 64, 2, 0.1);
    let params = BenchParams {
        n_prompt: vec![16, 0],
        n_gen: vec![4],
        repetitions: 3,
        n_batch: 8,
        bos: Some(1),
        warmup: true,
        threads: 2,
        n_depth: vec![0],
    };
    let mut streamed = Vec::new();
    let results = run_bench(&mut model, &params, &AtomicBool::new(false), |r| streamed.push(r.test.clone())).unwrap();
    let names: Vec<&str> = results.iter().map(|r| r.test.as_str()).collect();
    assert_eq!(names, vec!["pp16", "tg4"], "zero-sized tests are skipped");
    assert_eq!(streamed, vec!["pp16", "tg4"]);
    for r in &results {
        assert_eq!(r.samples_ns.len(), 3);
        assert_eq!(r.threads, 2);
        assert!(r.tokens_per_s > 0.0 && r.tokens_per_s.is_finite());
        let n = (r.n_prompt + r.n_gen) as f64;
        let speeds: Vec<f64> = r.samples_ns.iter().map(|&ns| n * 1e9 / ns as f64).collect();
        let (mean, sd) = mean_and_stddev(&speeds);
        assert_eq!((r.tokens_per_s, r.stddev), (mean, sd));
    }
    // pp16: warm-up + 3 runs, each two forward calls of 8 (logits for the last token only).
    // tg4: one warm-up token, then 3 runs of 4 single-token calls; every run from empty.
    let calls: Vec<(usize, usize, usize)> =
        model.calls.iter().map(|c| (c.kv_len, c.tokens.len(), c.first_output)).collect();
    let pp_run = [(0, 8, 8), (8, 8, 7)];
    let tg_run = [(0, 1, 0), (1, 1, 0), (2, 1, 0), (3, 1, 0)];
    let mut want: Vec<(usize, usize, usize)> = Vec::new();
    for _ in 0..4 {
        want.extend(pp_run);
    }
    want.push((0, 1, 0));
    for _ in 0..3 {
        want.extend(tg_run);
    }
    assert_eq!(calls, want);
    assert!(model.calls.iter().filter(|c| c.kv_len == 0).all(|c| c.tokens[0] == 1), "BOS first");
    // JSON shape (CLI.md): test, tokens_per_s, stddev, threads.
    let json = serde_json::to_value(&results[0]).unwrap();
    assert_eq!(json["test"], "pp16");
    assert!(json["tokens_per_s"].is_f64() && json["stddev"].is_f64() && json["threads"] == 2);
}

#[test]
fn bench_errors() {
    let mut model = FakeModel::random(10, 32, 2, 0.1);
    let params = BenchParams { repetitions: 1, ..BenchParams::default() };
    let e = bench_test(&mut model, BenchTest::Prompt(64), 0, &params, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(e, EngineError::ContextTooSmall { needed: 64, n_ctx: 32, .. }), "{e}");
    assert!(e.to_string().contains("pp64"), "{e}");
    let zero = BenchParams { repetitions: 0, ..BenchParams::default() };
    assert!(bench_test(&mut model, BenchTest::Generation(4), 0, &zero, &AtomicBool::new(false)).is_err());
    let e = bench_test(&mut model, BenchTest::Generation(4), 0, &params, &AtomicBool::new(true)).unwrap_err();
    assert!(matches!(e, EngineError::Cancelled));
}

#[test]
fn runs_at_a_depth_like_llama_bench_d() {
    let mut model = FakeModel::random(30, 64, 2, 0.1);
    let params = BenchParams {
        n_prompt: vec![8],
        n_gen: vec![2],
        repetitions: 2,
        n_batch: 8,
        bos: Some(1),
        warmup: true,
        threads: 1,
        n_depth: vec![20],
    };
    let results = run_bench(&mut model, &params, &AtomicBool::new(false), |_| {}).unwrap();
    let names: Vec<&str> = results.iter().map(|r| r.test.as_str()).collect();
    assert_eq!(names, ["pp8 @ d20", "tg2 @ d20"]);
    assert!(results.iter().all(|r| r.n_depth == 20));
    // Per test: the 20-token context untimed (calls of 8, no logits), then every run (the
    // warm-up too) from kv_len 20, the cache cut back to it before each.
    let calls: Vec<(usize, usize, usize)> =
        model.calls.iter().map(|c| (c.kv_len, c.tokens.len(), c.first_output)).collect();
    let context = [(0, 8, 8), (8, 8, 8), (16, 4, 4)];
    let mut want: Vec<(usize, usize, usize)> = context.to_vec();
    for _ in 0..3 {
        want.push((20, 8, 7));
    }
    want.extend(context);
    want.push((20, 1, 0));
    for _ in 0..2 {
        want.extend([(20, 1, 0), (21, 1, 0)]);
    }
    assert_eq!(calls, want);
    // BOS opens the context only; the tests' own first tokens are ordinary ids.
    assert!(model.calls.iter().all(|c| (c.kv_len == 0) == (c.tokens[0] == 1)));
    // Depth and test must fit the context together.
    let deep = BenchParams { n_depth: vec![60], ..params };
    let e = bench_test(&mut model, BenchTest::Prompt(8), 60, &deep, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(e, EngineError::ContextTooSmall { needed: 68, n_ctx: 64, .. }), "{e}");
    assert!(e.to_string().contains("pp8 @ d60"), "{e}");
}
