//! Log-probabilities against the real-model fixtures: transformers' float32 logits at the
//! last prompt position, with the top-20 log-softmax computed in float64 by the reference.
//! Tolerance 1e-6 (measured: see the test's output).

use owl_engine::{LogSoftmax, TopLogprobs};

const MODELS: [&str; 3] = ["smollm2-135m-instruct-q4_1", "gemma3-270m-q4_k_m", "qwen2.5-coder-0.5b-instruct"];

#[test]
fn top20_logprobs_match_the_reference() {
    let mut top = TopLogprobs::new();
    let mut out = Vec::new();
    let mut worst = 0.0f64;
    for model in MODELS {
        let reference = owl_test::fixture_json(&format!("real_models/{model}/reference.json"));
        let tensors =
            owl_test::load_safetensors_f32(&owl_test::fixture(&format!("real_models/{model}/last_logits.safetensors")));
        for prompt in reference["prompts"].as_array().unwrap() {
            let key = prompt["key"].as_str().unwrap();
            let logits = &tensors[&format!("{key}.last_logits")].data;
            let last = &prompt["last_position"];
            let want_ids: Vec<u32> =
                last["top_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let want_lp: Vec<f64> =
                last["top_logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let norm = LogSoftmax::of(logits);
            let lse = last["logsumexp"].as_f64().unwrap();
            // f32 exponentials (relative error < 2e-7) summed in f64: ~1e-7 on the normaliser.
            assert!(
                (norm.log_normalizer() - lse).abs() < 1e-6,
                "{model}/{key}: logsumexp {} vs {lse}",
                norm.log_normalizer()
            );
            top.select(logits, want_ids.len(), &norm, &mut out);
            for (i, (got, (&id, &lp))) in out.iter().zip(want_ids.iter().zip(&want_lp)).enumerate() {
                // Exact logit ties may be listed in either order by the reference's topk.
                if got.id != id {
                    assert_eq!(
                        logits[got.id as usize], logits[id as usize],
                        "{model}/{key} rank {i}: id {} vs {id}",
                        got.id
                    );
                }
                let exact = norm.logprob(logits[id as usize]);
                worst = worst.max((exact - lp).abs());
                assert!((exact - lp).abs() < 1e-6, "{model}/{key} rank {i}: {exact} vs {lp}");
                assert!((f64::from(got.logprob) - lp).abs() < 1e-5, "{model}/{key} rank {i} (f32)");
            }
        }
    }
    eprintln!("max |logprob - reference| over 6 prompts x top-20: {worst:e}");
}
