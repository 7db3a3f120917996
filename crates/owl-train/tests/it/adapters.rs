//! The adapter applied unmerged gives peft's logits, from either format on either base.

use std::sync::Arc;

use owl_convert::arch::Arch;
use owl_convert::tensor_names::Heads;
use owl_models::{Batch, KvDtype, LoraSet};
use owl_train::adapter::Naming;
use owl_train::{load_lora_set, AdapterFile, AdapterSpec, Lineage};

use crate::{base_dir, gguf_base, load, logits, lora_dir, max_abs, prompt, reference, set_of};

/// transformers runs the same float32 model in another order of operations: the base
/// fixture agrees with owl to ~1e-5; the adapter moves logits by up to 2.27.
const TOL: f32 = 1e-4;

#[test]
fn peft_adapter_on_the_safetensors_base_gives_peft_logits() {
    let mut model = load(&base_dir());
    let adapter = AdapterFile::open(&lora_dir(), None).unwrap();
    assert_eq!((adapter.naming, adapter.pairs.len(), adapter.name.as_str()), (Naming::Hf, 14, "lora"));
    assert!(adapter.pairs.iter().all(|p| p.rank == 4 && p.scale == 2.0));
    let set = set_of(&model, &adapter, 1.0);
    let with = logits(&mut model, Some(set));
    let want = reference("logits_lora");
    let err = max_abs(&with, &want);
    assert!(err < TOL, "adapter logits differ from peft's by {err}");
    // The same model, without the adapter, is still the base.
    let base = logits(&mut model, None);
    let err = max_abs(&base, &reference("logits_base"));
    assert!(err < TOL, "base logits differ by {err}");
    assert!(max_abs(&base, &want) > 0.5, "the adapter must move the logits");
}

#[test]
fn scales_add_and_zero_is_the_base() {
    let mut model = load(&base_dir());
    let adapter = AdapterFile::open(&lora_dir(), None).unwrap();
    let bound = Arc::new(adapter.bind(&model, Lineage::Strict).unwrap());
    // Two halves of one adapter applied together are the whole adapter.
    let halves = LoraSet::new(vec![(Arc::clone(&bound), 0.5), (Arc::clone(&bound), 0.5)]);
    let err = max_abs(&logits(&mut model, Some(Arc::new(halves))), &reference("logits_lora"));
    assert!(err < TOL, "two half-scaled copies differ from the adapter by {err}");
    let zero = LoraSet::new(vec![(bound, 0.0)]);
    let err = max_abs(&logits(&mut model, Some(Arc::new(zero))), &reference("logits_base"));
    assert!(err < TOL, "a zero scale differs from the base by {err}");
}

/// One batch holds a sequence with the adapter and one without: each gets its own logits.
#[test]
fn sequences_with_and_without_the_adapter_share_a_batch() {
    let mut model = load(&base_dir());
    let adapter = AdapterFile::open(&lora_dir(), None).unwrap();
    let set = set_of(&model, &adapter, 1.0);
    let tokens = prompt();
    let mut kv = model.new_kv_cache(2, 64, KvDtype::F32).unwrap();
    let mut batch = Batch::new();
    batch.push_sequence(0, 0, &tokens, true);
    batch.push_sequence(1, 0, &tokens, true);
    batch.set_lora(1, set);
    let v = model.vocab_size();
    let mut out = vec![0.0; 2 * tokens.len() * v];
    model.forward(&batch, &mut kv, &mut out).unwrap();
    let (base, adapted) = out.split_at(tokens.len() * v);
    assert!(max_abs(base, &reference("logits_base")) < TOL);
    assert!(max_abs(adapted, &reference("logits_lora")) < TOL);
}

/// A GGUF base keeps llama.cpp's q/k row order; a PEFT adapter's B rows follow it there, a
/// GGUF adapter's are taken back out of it on a safetensors base.
#[test]
fn both_formats_on_both_bases() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = gguf_base(tmp.path());
    let peft = AdapterFile::open(&lora_dir(), None).unwrap();
    let heads = Heads { n_heads: 4, n_kv_heads: 2 };
    let adapter_gguf = tmp.path().join("lora.gguf");
    peft.to_gguf_naming(Arch::Llama, heads).unwrap().write_gguf(&adapter_gguf).unwrap();
    let from_gguf = AdapterFile::open(&adapter_gguf, None).unwrap();
    assert_eq!(
        (from_gguf.naming, from_gguf.alpha, from_gguf.base_architecture.as_deref()),
        (Naming::Gguf, 8.0, Some("llama"))
    );
    assert!(from_gguf.pairs.iter().any(|p| p.target == "blk.1.attn_k.weight"));

    let want = reference("logits_lora");
    for (base, adapter) in [(&gguf, &peft), (&gguf, &from_gguf), (&base_dir(), &from_gguf)] {
        let mut model = load(base);
        let set = set_of(&model, adapter, 1.0);
        let err = max_abs(&logits(&mut model, Some(set)), &want);
        assert!(err < TOL, "{:?} adapter on {}: logits differ by {err}", adapter.naming, base.display());
    }
}

/// `--lora` arguments: several adapters, each with its scale.
#[test]
fn specs_load_a_set() {
    let mut model = load(&base_dir());
    let dir = lora_dir().display().to_string();
    let specs: Vec<AdapterSpec> =
        [format!("a={dir}:0.25"), format!("{dir}:0.75")].iter().map(|s| s.parse().unwrap()).collect();
    let set = load_lora_set(&specs, &model, Lineage::Strict).unwrap();
    assert_eq!(set.describe(), "a:0.25+lora:0.75");
    let err = max_abs(&logits(&mut model, Some(Arc::new(set))), &reference("logits_lora"));
    assert!(err < TOL, "0.25 + 0.75 of the adapter differs from it by {err}");
}

/// A PEFT adapter written by owl reads back to the same pairs, with per-module ranks and
/// alphas kept through `rank_pattern` / `alpha_pattern`.
#[test]
fn peft_files_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut adapter = AdapterFile::open(&lora_dir(), None).unwrap();
    // One module with its own alpha.
    let odd = adapter.pairs.iter().position(|p| p.target.ends_with("layers.1.mlp.down_proj.weight")).unwrap();
    adapter.pairs[odd].scale = 0.5;
    let out = tmp.path().join("again");
    adapter.write_peft(&out).unwrap();
    let back = AdapterFile::open(&out, None).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["alpha_pattern"], serde_json::json!({"model.layers.1.mlp.down_proj": 2.0}), "{config}");
    assert_eq!((config["r"].as_u64(), config["lora_alpha"].as_f64()), (Some(4), Some(8.0)));
    assert_eq!(back.base_model, adapter.base_model);
    let mut want = adapter.pairs.clone();
    let mut got = back.pairs.clone();
    want.sort_by(|a, b| a.target.cmp(&b.target));
    got.sort_by(|a, b| a.target.cmp(&b.target));
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!((&w.target, w.rank, w.rows, w.cols, w.scale), (&g.target, g.rank, g.rows, g.cols, g.scale));
        assert!(w.a == g.a && w.b == g.b, "{}", w.target);
    }
}
