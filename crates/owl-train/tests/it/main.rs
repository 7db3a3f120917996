//! LoRA adapters against ../shared/fixtures/lora: a PEFT adapter (r 4, alpha 8) on the tiny
//! Llama of models/llama, with transformers + peft's logits with the adapter applied.

#![allow(clippy::unwrap_used)]

mod adapters;
mod errors;
mod merge;
mod peft;
mod speed;
mod train;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use owl_convert::{convert, ConvertOptions, FileType};
use owl_models::{Batch, KvDtype, LoadOptions, LoraSet, Model};
use owl_train::{AdapterFile, Lineage};

pub fn lora_dir() -> PathBuf {
    owl_test::fixture("lora")
}

pub fn base_dir() -> PathBuf {
    owl_test::fixture("models/llama")
}

pub fn load(path: &Path) -> Model {
    let options = LoadOptions { threads: 2, max_batch_tokens: 64 };
    Model::load(path, &options).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture tensor `name` of lora/reference.safetensors.
pub fn reference(name: &str) -> Vec<f32> {
    let r = owl_test::load_safetensors_f32(&lora_dir().join("reference.safetensors"));
    r[name].data.clone()
}

pub fn prompt() -> Vec<u32> {
    let r = owl_test::load_safetensors_f32(&lora_dir().join("reference.safetensors"));
    r["input_ids"].ints.as_ref().expect("ids").iter().map(|&i| i as u32).collect()
}

/// Logits of every prompt position, the sequence run with `lora` (or the base).
pub fn logits(model: &mut Model, lora: Option<Arc<LoraSet>>) -> Vec<f32> {
    let tokens = prompt();
    let mut kv = model.new_kv_cache(1, 64, KvDtype::F32).expect("kv cache");
    let mut batch = Batch::new();
    batch.push_sequence(0, 0, &tokens, true);
    if let Some(set) = lora {
        batch.set_lora(0, set);
    }
    let mut out = vec![0.0; tokens.len() * model.vocab_size()];
    model.forward(&batch, &mut kv, &mut out).unwrap_or_else(|e| panic!("forward: {e}"));
    out
}

pub fn set_of(model: &Model, adapter: &AdapterFile, scale: f32) -> Arc<LoraSet> {
    let bound = adapter.bind(model, Lineage::Strict).unwrap_or_else(|e| panic!("bind: {e}"));
    Arc::new(LoraSet::new(vec![(Arc::new(bound), scale)]))
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The fixture base converted to an F32 GGUF (llama.cpp's names and q/k row order).
pub fn gguf_base(dir: &Path) -> PathBuf {
    let out = dir.join("llama.f32.gguf");
    let options = ConvertOptions { file_type: FileType::F32, no_tokenizer: true, tokenizer_pre: None };
    convert(&base_dir(), &out, &options, &|_| {}).unwrap_or_else(|e| panic!("convert: {e}"));
    out
}
