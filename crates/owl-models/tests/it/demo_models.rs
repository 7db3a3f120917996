//! The three demo GGUF models (quantized weights kept quantized, quantized activations in
//! the kernels) against transformers' float32 forward over the dequantized weights
//! (`../shared/fixtures/real_models`). At the last prompt position: top-1 identical (a swap
//! of the reference's top two counts where they are within 0.1 nats), at least 8 of the
//! top-10 shared, and log-probs of the shared tokens within 0.75. The greedy continuation
//! is reported, and must agree up to the first step whose reference margin is below 0.5.

use owl_models::{Batch, KvDtype, LoadOptions, Model};
use serde_json::Value;

use crate::common::argmax;

fn log_softmax_f64(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z: f64 = logits.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
    logits.iter().map(|&x| x as f64 - z).collect()
}

fn top_k(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(k);
    idx
}

fn as_ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn check_model(name: &str, fixture: &str) {
    let path = owl_test::demo_model(name);
    let options = LoadOptions { threads: 2, max_batch_tokens: 64 };
    let t0 = std::time::Instant::now();
    let mut model = Model::load_gguf(&path, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
    let load_s = t0.elapsed().as_secs_f64();
    let vocab = model.vocab_size();
    let reference = owl_test::fixture_json(&format!("real_models/{fixture}/reference.json"));
    let last_logits =
        owl_test::load_safetensors_f32(&owl_test::fixture(&format!("real_models/{fixture}/last_logits.safetensors")));
    for p in reference["prompts"].as_array().expect("prompts") {
        let key = p["key"].as_str().expect("key");
        let prompt = as_ids(&p["input_ids"]);
        let mut kv = model.new_kv_cache(1, 256, KvDtype::F16).expect("cache");
        let mut batch = Batch::new();
        batch.push_sequence(0, 0, &prompt, false);
        let mut logits = vec![0.0; vocab];
        let t0 = std::time::Instant::now();
        model.forward(&batch, &mut kv, &mut logits).unwrap_or_else(|e| panic!("{name}/{key}: {e}"));
        let prefill_s = t0.elapsed().as_secs_f64();

        let lp = log_softmax_f64(&logits);
        let ours = top_k(&lp, 10);
        let last = &p["last_position"];
        let ref_ids: Vec<usize> = as_ids(&last["top_ids"]).iter().map(|&i| i as usize).collect();
        let ref_lp: Vec<f64> =
            last["top_logprobs"].as_array().expect("lp").iter().map(|x| x.as_f64().expect("f")).collect();
        let top1_ok = ours[0] == ref_ids[0] || (ours[0] == ref_ids[1] && ref_lp[0] - ref_lp[1] <= 0.1);
        let shared: Vec<usize> = ours.iter().copied().filter(|i| ref_ids[..10].contains(i)).collect();
        let worst_lp = shared
            .iter()
            .map(|&i| {
                let j = ref_ids.iter().position(|&r| r == i).expect("shared id");
                (lp[i] - ref_lp[j]).abs()
            })
            .fold(0.0, f64::max);
        let ref_full = &last_logits[&format!("{key}.last_logits")].data;
        let logit_err = logits.iter().zip(ref_full).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);

        // Greedy continuation through the cache.
        let want = as_ids(&p["greedy"]["ids"]);
        let margins: Vec<f64> = p["greedy"]["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["top1_minus_top2_logit"].as_f64().expect("m"))
            .collect();
        let mut agree = 0;
        let mut next = argmax(&logits) as u32;
        let t0 = std::time::Instant::now();
        for (i, &w) in want.iter().enumerate() {
            if next != w {
                break;
            }
            agree += 1;
            batch.clear();
            batch.push(next, 0, prompt.len() + i, true);
            model.forward(&batch, &mut kv, &mut logits).expect("decode");
            next = argmax(&logits) as u32;
        }
        let decode_tok_s = agree as f64 / t0.elapsed().as_secs_f64();
        let must_agree = margins.iter().position(|&m| m < 0.5).unwrap_or(margins.len());
        println!(
            "{name:14} {key:8} load {load_s:.2}s prefill({} tok) {prefill_s:.3}s | top1 {} (ours {} ref {}) | top10 shared {}/10 | \
             max |dlogprob| {worst_lp:.3} | max |dlogit| {logit_err:.3} | greedy {agree}/24 agree (required {must_agree}), {decode_tok_s:.1} tok/s",
            prompt.len(),
            if top1_ok { "ok" } else { "DIFFERS" },
            ours[0],
            ref_ids[0],
            shared.len()
        );
        assert!(top1_ok, "{name}/{key}: top-1 {} vs reference {:?}", ours[0], &ref_ids[..2]);
        assert!(shared.len() >= 8, "{name}/{key}: only {} of the top-10 shared", shared.len());
        assert!(worst_lp <= 0.75, "{name}/{key}: log-prob differs by {worst_lp}");
        assert!(agree >= must_agree, "{name}/{key}: greedy diverged at step {agree}, margins {margins:?}");
    }
}

#[test]
fn smollm2_q4_1_matches_reference() {
    check_model("smollm2", "smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_270m_q4_k_m_matches_reference() {
    check_model("gemma3", "gemma3-270m-q4_k_m");
}

#[test]
fn qwen25_coder_05b_matches_reference() {
    check_model("qwen2.5-coder", "qwen2.5-coder-0.5b-instruct");
}
