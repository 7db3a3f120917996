//! Shared helpers: loading fixture variants, running prompts, argmax.

use std::collections::HashMap;
use std::path::PathBuf;

use owl_formats::hf_config::HfConfig;
use owl_models::{Batch, KvCache, KvDtype, LoadOptions, Model};
use owl_test::FixtureTensor;

/// The dense variants of `../shared/fixtures/models`.
pub const DENSE_VARIANTS: [&str; 14] = [
    "llama",
    "llama3_rope",
    "llama_tied",
    "mistral",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_rope_scaling",
    "qwen2",
    "qwen3",
    "phi3",
    "phi3_partial_rotary",
    "phi3_longrope",
    "phi3_longrope_long",
];

pub fn variant_dir(variant: &str) -> PathBuf {
    owl_test::fixture(&format!("models/{variant}"))
}

pub fn load_variant(variant: &str, config_file: &str, max_batch_tokens: usize) -> Model {
    let dir = variant_dir(variant);
    let config = HfConfig::from_file(&dir.join(config_file)).unwrap_or_else(|e| panic!("{variant}/{config_file}: {e}"));
    let options = LoadOptions { threads: 2, max_batch_tokens };
    Model::load_hf(&dir, &config, &options).unwrap_or_else(|e| panic!("{variant}: {e}"))
}

pub fn reference(variant: &str) -> HashMap<String, FixtureTensor> {
    owl_test::load_safetensors_f32(&variant_dir(variant).join("reference.safetensors"))
}

pub fn ids(t: &FixtureTensor) -> Vec<u32> {
    t.ints.as_ref().expect("integer tensor").iter().map(|&i| i as u32).collect()
}

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Logits of every position of `tokens` fed as one sequence (slot `seq`) in one call.
pub fn prompt_logits(model: &mut Model, kv: &mut KvCache, seq: usize, tokens: &[u32]) -> Vec<f32> {
    let mut batch = Batch::new();
    batch.push_sequence(seq, kv.seq_len(seq), tokens, true);
    let mut logits = vec![0.0; tokens.len() * model.vocab_size()];
    model.forward(&batch, kv, &mut logits).unwrap_or_else(|e| panic!("forward: {e}"));
    logits
}

pub fn new_cache(model: &Model, n_seqs: usize, dtype: KvDtype) -> KvCache {
    model.new_kv_cache(n_seqs, 128, dtype).expect("kv cache")
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
