//! Perplexity with llama-perplexity's scheme, against a value computed by hand and against
//! an independent brute-force evaluation of the fake model.

use std::sync::atomic::AtomicBool;

use owl_engine::{perplexity, EngineError, LanguageModel, LogSoftmax, PerplexityParams};

use crate::fake::FakeModel;

fn no_cancel() -> AtomicBool {
    AtomicBool::new(false)
}

#[test]
fn hand_computed_two_windows_with_bos() {
    // vocab 3, history weight 0.5; rows: 0 → [0,0,0], 1 → [1,0,-1], 2 → [0,2,0].
    let table = vec![0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, 2.0, 0.0];
    let mut model = FakeModel::new(3, 16, table, 0.5);
    let tokens = [2u32, 1, 2, 0, 1, 1, 1, 2];
    // n_ctx 4: first = 2, one scored token per window (position 2 predicts position 3).
    // Window 0 = [BOS=0, 1, 2 | 0]: logits at 2 = row2 + 0.5*hist{0,1,2} = [0.5, 2.5, 0.5];
    //   target 0: nll = ln(2e^0.5 + e^2.5) - 0.5.
    // Window 1 = [BOS=0, 1, 1 | 2]: logits = row1 + 0.5*hist{0,1,1} = [1.5, 1.0, -1.0];
    //   target 2: nll = ln(e^1.5 + e^1 + e^-1) + 1.
    let nll0 = (2.0 * 0.5f64.exp() + 2.5f64.exp()).ln() - 0.5;
    let nll1 = (1.5f64.exp() + 1.0f64.exp() + (-1.0f64).exp()).ln() + 1.0;
    let want = ((nll0 + nll1) / 2.0).exp();
    assert!((want - 13.897749370019051).abs() < 1e-12, "hand value {want}");

    let mut progress = Vec::new();
    let r = perplexity(&mut model, &tokens, &PerplexityParams::new(4, Some(0)), &no_cancel(), |p| progress.push(p))
        .unwrap();
    // The softmax normaliser sums f32 exponentials (relative error < 2e-7) in f64.
    assert!((r.ppl - want).abs() < 1e-6 * want, "{} vs {want}", r.ppl);
    assert_eq!((r.chunks, r.tokens, r.input_tokens), (2, 2, 8));
    assert!((r.nll - (nll0 + nll1) / 2.0).abs() < 1e-6);
    // llama's uncertainty: sqrt((mean(nll^2) - mean^2) / (n - 1)) * ppl.
    let mean = (nll0 + nll1) / 2.0;
    let var = (nll0 * nll0 + nll1 * nll1) / 2.0 - mean * mean;
    assert!((r.ppl_stderr - var.sqrt() * want).abs() < 1e-5 * r.ppl_stderr);
    assert_eq!(progress.len(), 2);
    assert!((progress[0].ppl - nll0.exp()).abs() < 1e-6 * progress[0].ppl);
    assert_eq!(model.kv_len(), 0, "cache left empty");

    // Without BOS replacement window 0 sees [2, 1, 2]: hist {0:0, 1:1, 2:2} → different value.
    let r_no_bos = perplexity(&mut model, &tokens, &PerplexityParams::new(4, None), &no_cancel(), |_| {}).unwrap();
    let nll0_raw = (0.0f64.exp() + 2.5f64.exp() + 1.0f64.exp()).ln() - 0.0;
    let nll1_raw = (1.0f64.exp() + 1.5f64.exp() + (-1.0f64).exp()).ln() + 1.0;
    let want_no_bos = ((nll0_raw + nll1_raw) / 2.0).exp();
    assert!((r_no_bos.ppl - want_no_bos).abs() < 1e-6 * want_no_bos);
    assert!((r_no_bos.ppl - r.ppl).abs() > 0.1, "BOS replacement matters here");
}

/// The scheme written out directly: every window, every scored position, from the model's
/// definition (no KV cache, no batching).
fn brute_force(model: &FakeModel, tokens: &[u32], n_ctx: usize, bos: Option<u32>) -> (f64, usize) {
    let chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let (mut nll, mut count) = (0.0, 0);
    for c in 0..chunks {
        let mut window = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            window[0] = b;
        }
        for j in first..n_ctx - 1 {
            let row = model.logits_after(&window[..=j]);
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, |m, l| m.max(l as f64));
            let lse = max + row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
            nll += lse - row[window[j + 1] as usize] as f64;
            count += 1;
        }
    }
    ((nll / count as f64).exp(), count)
}

#[test]
fn agrees_with_brute_force_and_is_independent_of_batching() {
    let model = FakeModel::random(50, 64, 21, 0.15);
    let mut rng = owl_engine::rng::Xoshiro256StarStar::seed_from_u64(4);
    let tokens: Vec<u32> = (0..70).map(|_| rng.below(50) as u32).collect();
    let (want, count) = brute_force(&model, &tokens, 16, Some(1));
    // 70 / 16 = 4 windows (6 tail tokens dropped), 16 - 1 - 8 = 7 scored each.
    assert_eq!(count, 28);
    let mut first: Option<f64> = None;
    for n_batch in [1usize, 3, 5, 8, 16, 512] {
        let mut m = model.clone();
        let mut params = PerplexityParams::new(16, Some(1));
        params.n_batch = n_batch;
        let r = perplexity(&mut m, &tokens, &params, &no_cancel(), |_| {}).unwrap();
        assert!((r.ppl - want).abs() < 1e-6 * want, "n_batch {n_batch}: {} vs {want}", r.ppl);
        // Batching changes nothing, to the bit.
        assert_eq!(*first.get_or_insert(r.ppl), r.ppl, "n_batch {n_batch}");
        assert_eq!((r.chunks, r.tokens), (4, 28));
        // No logits are asked for in the unscored first half.
        for call in &m.calls {
            if call.kv_len + call.tokens.len() <= 8 {
                assert_eq!(call.first_output, call.tokens.len(), "{call:?}");
            } else {
                assert_eq!(call.first_output, 0, "{call:?}");
            }
            assert!(call.tokens.len() <= n_batch);
        }
        // Every window starts from an empty cache with BOS first.
        let window_starts: Vec<&Vec<u32>> = m.calls.iter().filter(|c| c.kv_len == 0).map(|c| &c.tokens).collect();
        assert_eq!(window_starts.len(), 4);
        assert!(window_starts.iter().all(|t| t[0] == 1));
    }
    let mut m = model.clone();
    let mut params = PerplexityParams::new(16, Some(1));
    params.max_chunks = Some(2);
    let r = perplexity(&mut m, &tokens, &params, &no_cancel(), |_| {}).unwrap();
    assert_eq!((r.chunks, r.tokens), (2, 14));
    let (want2, _) = brute_force(&model, &tokens[..32], 16, Some(1));
    assert!((r.ppl - want2).abs() < 1e-6 * want2);
}

#[test]
fn uniform_model_scores_the_vocabulary_size_and_a_perfect_one_scores_one() {
    let tokens: Vec<u32> = (0..64).map(|i| (i * 7 % 20) as u32).collect();
    let mut uniform = FakeModel::new(20, 32, vec![0.0; 400], 0.0);
    let r = perplexity(&mut uniform, &tokens, &PerplexityParams::new(16, None), &no_cancel(), |_| {}).unwrap();
    assert!((r.ppl - 20.0).abs() < 1e-12, "{}", r.ppl);
    // The text follows a -> a + 7 (mod 20); a model that knows it with margin 30 has
    // nll = ln(1 + 19 e^-30) per token.
    let mut table = vec![0.0; 400];
    for a in 0..20 {
        table[a * 20 + (a + 7) % 20] = 30.0;
    }
    let mut perfect = FakeModel::new(20, 32, table, 0.0);
    let r = perplexity(&mut perfect, &tokens, &PerplexityParams::new(16, None), &no_cancel(), |_| {}).unwrap();
    let want = (1.0 + 19.0 * (-30.0f64).exp()).ln().exp();
    assert!((r.ppl - want).abs() < 1e-12, "{} vs {want}", r.ppl);
}

#[test]
fn input_errors_are_named() {
    let mut model = FakeModel::random(10, 32, 1, 0.0);
    let tokens: Vec<u32> = (0..40).map(|i| i % 10).collect();
    let e = perplexity(&mut model, &tokens[..31], &PerplexityParams::new(16, None), &no_cancel(), |_| {}).unwrap_err();
    assert!(matches!(e, EngineError::NotEnoughTokens { have: 31, needed: 32, n_ctx: 16 }), "{e}");
    let e = perplexity(&mut model, &tokens, &PerplexityParams::new(64, None), &no_cancel(), |_| {}).unwrap_err();
    assert!(matches!(e, EngineError::ContextTooSmall { needed: 64, n_ctx: 32, .. }), "{e}");
    let e = perplexity(&mut model, &tokens, &PerplexityParams::new(2, None), &no_cancel(), |_| {}).unwrap_err();
    assert!(e.to_string().contains("ctx"), "{e}");
    let e = perplexity(&mut model, &tokens, &PerplexityParams::new(8, Some(10)), &no_cancel(), |_| {}).unwrap_err();
    assert!(matches!(e, EngineError::TokenOutOfRange { id: 10, .. }), "{e}");
    let cancelled = AtomicBool::new(true);
    let e = perplexity(&mut model, &tokens, &PerplexityParams::new(8, None), &cancelled, |_| {}).unwrap_err();
    assert!(matches!(e, EngineError::Cancelled));
}

#[test]
fn log_softmax_matches_llama_nll_definition() {
    // llama: nll = max + log(sum exp(l - max)) - l[tok].
    let row = [3.0f32, -1.0, 0.5, 2.0];
    let max = 3.0f64;
    let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    let nll = max + sum.ln() - 0.5;
    assert!((-LogSoftmax::of(&row).logprob(0.5) - nll).abs() < 1e-6);
}
