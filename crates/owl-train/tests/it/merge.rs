//! `merge`: the adapter baked into the weights gives peft's `merge_and_unload` logits.

use std::path::Path;

use owl_convert::arch::Arch;
use owl_convert::tensor_names::Heads;
use owl_convert::{convert, ConvertOptions, FileType};
use owl_formats::gguf::{GgmlType, GgufFile};
use owl_train::{merge, AdapterFile, AdapterSpec, Lineage, MergeError, MergeOptions};

use crate::{base_dir, gguf_base, load, logits, lora_dir, max_abs, reference};

const TOL: f32 = 1e-4;

fn spec(path: &Path, scale: f32) -> AdapterSpec {
    AdapterSpec { name: None, path: path.to_path_buf(), scale }
}

fn type_of(path: &Path, tensor: &str) -> GgmlType {
    let f = GgufFile::open(path).unwrap();
    f.tensors().iter().find(|t| t.name == tensor).unwrap().ggml_type
}

#[test]
fn merged_weights_give_the_merged_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let want = reference("logits_merged");
    // From the safetensors directory: converted (F32, exact), merged, kept F32.
    let out = tmp.path().join("merged.gguf");
    let summary = merge(&base_dir(), &[spec(&lora_dir(), 1.0)], &out, &MergeOptions::default(), &|_| {}).unwrap();
    assert_eq!(summary.types.keys().collect::<Vec<_>>(), ["F32"]);
    let err = max_abs(&logits(&mut load(&out), None), &want);
    assert!(err < TOL, "merged from the directory: logits differ by {err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "the temporary base is gone");

    // From a GGUF base, with the adapter as a GGUF adapter in two halves.
    let gguf = gguf_base(tmp.path());
    let adapter = tmp.path().join("lora.gguf");
    let peft = AdapterFile::open(&lora_dir(), None).unwrap();
    peft.to_gguf_naming(Arch::Llama, Heads { n_heads: 4, n_kv_heads: 2 }).unwrap().write_gguf(&adapter).unwrap();
    let out = tmp.path().join("merged2.gguf");
    merge(&gguf, &[spec(&adapter, 0.5), spec(&lora_dir(), 0.5)], &out, &MergeOptions::default(), &|_| {}).unwrap();
    let err = max_abs(&logits(&mut load(&out), None), &want);
    assert!(err < TOL, "merged into the GGUF: logits differ by {err}");
}

/// A quantized base stays in its types (edited tensors requantized, the rest copied), or
/// takes a mix with `--type`.
#[test]
fn quantized_bases_keep_their_types() {
    let tmp = tempfile::tempdir().unwrap();
    let q8 = tmp.path().join("llama.q8_0.gguf");
    let options = ConvertOptions { file_type: FileType::Q8_0, no_tokenizer: true, tokenizer_pre: None };
    convert(&base_dir(), &q8, &options, &|_| {}).unwrap();
    let out = tmp.path().join("merged-q8.gguf");
    let summary = merge(&q8, &[spec(&lora_dir(), 1.0)], &out, &MergeOptions::default(), &|_| {}).unwrap();
    for t in ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "token_embd.weight"] {
        assert_eq!(type_of(&out, t), type_of(&q8, t), "{t}");
    }
    // The embedding, norms and output are not edited: copied.
    assert!(summary.copied > 0 && summary.copied < summary.tensors, "{summary:?}");
    // Q8_0 rounding of the merged weights: about what Q8_0 costs the base with the adapter
    // applied unmerged (measured: 0.057 merged, 0.059 unmerged; the adapter moves logits by
    // up to 2.27).
    let mut q8_model = load(&q8);
    let set = crate::set_of(&q8_model, &AdapterFile::open(&lora_dir(), None).unwrap(), 1.0);
    let unmerged = logits(&mut q8_model, Some(set));
    let unmerged_err = max_abs(&unmerged, &reference("logits_lora"));
    let err = max_abs(&logits(&mut load(&out), None), &reference("logits_merged"));
    assert!(
        err < 2.0 * unmerged_err.max(0.01),
        "Q8_0 merge: logits differ by {err} (unmerged on Q8_0: {unmerged_err})"
    );

    let options = MergeOptions { file_type: Some(FileType::Q8_0), ..MergeOptions::default() };
    let out = tmp.path().join("merged-to-q8.gguf");
    merge(&base_dir(), &[spec(&lora_dir(), 1.0)], &out, &options, &|_| {}).unwrap();
    assert_eq!(type_of(&out, "blk.0.attn_q.weight"), GgmlType::Q8_0);
}

#[test]
fn a_misfit_adapter_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged.gguf");
    let gemma = owl_test::fixture("models/gemma");
    let err = merge(&gemma, &[spec(&lora_dir(), 1.0)], &out, &MergeOptions::default(), &|_| {}).unwrap_err();
    assert!(matches!(err, MergeError::Adapter(_)), "{err}");
    let options = MergeOptions { lineage: Lineage::ShapesOnly, ..MergeOptions::default() };
    let err = merge(&gemma, &[spec(&lora_dir(), 1.0)], &out, &options, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("16x64"), "{err}");
    assert!(matches!(merge(&gemma, &[], &out, &options, &|_| {}), Err(MergeError::NoAdapter)));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing left behind");
}
