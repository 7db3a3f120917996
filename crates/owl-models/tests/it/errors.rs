//! Bad input is ordinary: wrong weights, unknown architectures and malformed batches give
//! errors that name the problem, never a panic.

use owl_models::{Batch, KvDtype, LoadOptions, Model, ModelError};
use safetensors::tensor::TensorView;

use crate::common::*;

/// A copy of the llama fixture with one tensor dropped, one renamed and one reshaped.
#[test]
fn weight_binding_lists_missing_unexpected_and_misshapen_tensors() {
    let src = variant_dir("llama");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, view) in st.tensors() {
        match name.as_str() {
            "model.layers.1.mlp.up_proj.weight" => {}
            "model.layers.0.self_attn.k_proj.weight" => {
                tensors.push(("model.layers.0.self_attn.k_proj.wieght".into(), view))
            }
            "model.norm.weight" => {
                let short = TensorView::new(view.dtype(), vec![32], &view.data()[..128]).unwrap();
                tensors.push((name, short));
            }
            _ => tensors.push((name, view)),
        }
    }
    safetensors::serialize_to_file(tensors, None, &dir.path().join("model.safetensors")).unwrap();

    let err = Model::load_hf_dir(dir.path(), &LoadOptions::default()).err().expect("must fail");
    let ModelError::Weights { missing, unexpected, problems, .. } = &err else { panic!("{err}") };
    assert_eq!(missing, &["model.layers.0.self_attn.k_proj.weight", "model.layers.1.mlp.up_proj.weight"]);
    assert_eq!(unexpected, &["model.layers.0.self_attn.k_proj.wieght"]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("model.norm.weight") && problems[0].contains("[32]"), "{problems:?}");
    println!("{err}");
}

#[test]
fn unknown_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(variant_dir("llama").join("config.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), text.replace("\"llama\"", "\"gpt_bigcode\"")).unwrap();
    let err = Model::load_hf_dir(dir.path(), &LoadOptions::default()).err().expect("must fail");
    assert!(matches!(err, ModelError::UnsupportedArchitecture { ref name, .. } if name == "gpt_bigcode"), "{err}");
    assert!(err.to_string().contains("llama"), "lists what is supported: {err}");
}

#[test]
fn malformed_batches_are_errors() {
    let mut model = load_variant("llama", "config.json", 8);
    let vocab = model.vocab_size();
    let mut kv = model.new_kv_cache(2, 16, KvDtype::F32).unwrap();
    let mut logits = vec![0.0; vocab];
    let mut run = |tokens: &[(u32, usize, usize)], logits: &mut [f32], kv: &mut owl_models::KvCache| {
        let mut b = Batch::new();
        for (i, &(t, s, p)) in tokens.iter().enumerate() {
            b.push(t, s, p, i + 1 == tokens.len());
        }
        model.forward(&b, kv, logits).err().map(|e| e.to_string())
    };
    // (token, sequence, position) entries, and the error text expected.
    type Case<'a> = (&'a [(u32, usize, usize)], &'a str);
    let cases: [Case<'_>; 5] = [
        (&[(1, 0, 1)], "continues at 0"),
        (&[(512, 0, 0)], "outside the vocabulary"),
        (&[(1, 2, 0)], "outside the cache"),
        (&[(1, 0, 0), (2, 0, 2)], "continues at 1"),
        (&[(1, 0, 0); 9], "max_batch_tokens"),
    ];
    for (tokens, want) in cases {
        let err = run(tokens, &mut logits, &mut kv).expect("must fail");
        assert!(err.contains(want), "{err} (wanted {want:?})");
        assert_eq!(kv.seq_len(0), 0, "a rejected batch leaves the cache as it was");
    }
    let err = run(&[(1, 0, 0)], &mut logits[..10], &mut kv).expect("must fail");
    assert!(err.contains("logits"), "{err}");
    // The context limit: 16 positions.
    for p in 0..16 {
        assert!(run(&[(1, 1, p)], &mut logits, &mut kv).is_none());
    }
    let err = run(&[(1, 1, 16)], &mut logits, &mut kv).expect("must fail");
    assert!(err.contains("beyond the context"), "{err}");
}
