//! Pre-tokenizer families on a real vocabulary: the Qwen2.5 vocabulary run with each
//! `tokenizer.ggml.pre` split, and the Gemma 3 vocabulary run as a Llama/Phi-3 style
//! SentencePiece tokenizer (score-ranked derived merges, prefix space), against the same
//! constructions in transformers/tokenizers (tests/data/pre_variants.json, spm_llama_style.json).

use owl_tokenizer::Tokenizer;

use crate::support::{corpus, data, diff, ids, vocab};

#[test]
fn every_pre_tokenizer_family_matches_the_reference() {
    let texts = corpus();
    let reference = data("pre_variants.json");
    let variants = reference["variants"].as_object().expect("variants");
    for required in ["default", "llama-bpe", "qwen2", "smollm", "deepseek-llm", "deepseek-v3", "tekken", "gpt-4o"] {
        assert!(variants.contains_key(required), "reference data lacks {required}");
    }
    for (pre, variant) in variants {
        let mut v = vocab("qwen2.5-coder").clone();
        v.pre = Some(pre.clone());
        let tok = Tokenizer::from_gguf_vocab(&v).unwrap_or_else(|e| panic!("{pre}: {e}"));
        for (text, want) in texts.iter().zip(variant["ids"].as_array().unwrap()) {
            let want = ids(want);
            let ours = tok.encode(text, false, true).unwrap();
            assert_eq!(ours, want, "pre {pre} on {text:?}: {}", diff(&ours, &want, &tok));
        }
    }
}

#[test]
fn sentencepiece_with_score_merges_and_prefix_space_matches_the_reference() {
    let reference = data("spm_llama_style.json");
    let mut v = vocab("gemma3").clone();
    v.architecture = "phi3".into();
    v.add_space_prefix = Some(true);
    let tok = Tokenizer::from_gguf_vocab(&v).unwrap();
    assert!(tok.description().contains("prefix space"), "{}", tok.description());
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        if want.iter().any(|&i| i as usize >= v.tokens.len()) {
            // transformers appended LlamaTokenizer's default `<s>` to this foreign vocabulary
            continue;
        }
        let ours = tok.encode(text, false, true).unwrap();
        assert_eq!(ours, want, "{text:?}: {}", diff(&ours, &want, &tok));
        assert_eq!(tok.decode(&ours, false).unwrap(), case["decoded"].as_str().unwrap(), "decode {text:?}");
    }
    // the prefix space: added to the text, removed again when decoding
    let hello = tok.encode("Hello", false, true).unwrap();
    assert_eq!(tok.piece(hello[0]), Some("▁Hello"));
    assert_eq!(tok.decode(&hello, false).unwrap(), "Hello");
    assert_eq!(tok.encode("Hello", true, true).unwrap()[0], 2, "BOS by default for SentencePiece");
}
