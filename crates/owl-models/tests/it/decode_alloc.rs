//! The hot decode path allocates nothing: after one warm-up step, single-token decode
//! steps make no allocation on the calling thread (a pool of one thread runs every kernel
//! inline, so everything the step does is counted).

use owl_models::{Batch, KvDtype, LoadOptions, Model};

use crate::alloc_counter::count_allocations;
use crate::common::*;

fn decode_allocations(model: &mut Model, prompt: &[u32]) -> usize {
    let vocab = model.vocab_size();
    let mut kv = model.new_kv_cache(1, 128, KvDtype::F16).unwrap();
    let mut logits = prompt_logits(model, &mut kv, 0, prompt);
    let mut next = argmax(&logits[(prompt.len() - 1) * vocab..]) as u32;
    let mut batch = Batch::with_capacity(1);
    logits.truncate(vocab);
    let mut step = |model: &mut Model, logits: &mut Vec<f32>, next: &mut u32| {
        let pos = kv.seq_len(0);
        batch.clear();
        batch.push(*next, 0, pos, true);
        model.forward(&batch, &mut kv, logits).unwrap();
        *next = argmax(logits) as u32;
    };
    step(model, &mut logits, &mut next); // warm-up: lazy kernel tables, pool scratch
    let ((), n) = count_allocations(|| {
        for _ in 0..8 {
            step(model, &mut logits, &mut next);
        }
    });
    n
}

#[test]
fn single_token_decode_allocates_nothing() {
    for variant in ["gemma3", "phi3_longrope_long", "qwen2"] {
        let dir = variant_dir(variant);
        let mut model = Model::load_hf_dir(&dir, &LoadOptions { threads: 1, max_batch_tokens: 32 }).unwrap();
        let prompt = ids(&reference(variant)["input_ids"]);
        let n = decode_allocations(&mut model, &prompt);
        assert_eq!(n, 0, "{variant}: {n} allocations in 8 decode steps");
    }
}

#[test]
fn quantized_decode_allocates_nothing() {
    let path = owl_test::demo_model("smollm2");
    let mut model = Model::load_gguf(&path, &LoadOptions { threads: 1, max_batch_tokens: 16 }).unwrap();
    let n = decode_allocations(&mut model, &[504, 3575, 282, 4649, 314]);
    assert_eq!(n, 0, "smollm2: {n} allocations in 8 decode steps");
}
