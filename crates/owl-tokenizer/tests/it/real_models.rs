//! Exact ids against ../shared/fixtures/real_models (transformers' GGUF tokenizers, which
//! the fixture notes agree with llama.cpp on all 30 of its prompts).

use crate::support::{diff, fixture_dir, ids, tokenizer, MODELS};

#[test]
fn reference_ids_and_tokens_match_exactly() {
    for model in MODELS {
        let tok = tokenizer(model);
        let reference = owl_test::fixture_json(&format!("{}/reference.json", fixture_dir(model)));
        let prompts = reference["prompts"].as_array().expect("prompts");
        assert!(!prompts.is_empty());
        for p in prompts {
            let text = p["prompt"].as_str().expect("prompt");
            let with = tok.encode(text, true, true).unwrap();
            let want = ids(&p["input_ids"]);
            assert_eq!(with, want, "{model} {text:?} with default specials: {}", diff(&with, &want, tok));
            let without = tok.encode(text, false, true).unwrap();
            let want = ids(&p["input_ids_without_special_tokens"]);
            assert_eq!(without, want, "{model} {text:?} without specials: {}", diff(&without, &want, tok));
            let pieces: Vec<&str> = with.iter().map(|&i| tok.piece(i).expect("piece")).collect();
            let want_pieces: Vec<&str> = p["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            assert_eq!(pieces, want_pieces, "{model} {text:?} pieces");
            assert_eq!(tok.decode(&without, false).unwrap(), text, "{model} round trip");
        }
    }
}

#[test]
fn special_ids_match_the_fixture() {
    for model in MODELS {
        let tok = tokenizer(model);
        let reference = owl_test::fixture_json(&format!("{}/reference.json", fixture_dir(model)));
        let t = &reference["tokenizer"];
        assert_eq!(tok.bos_id(), t["bos_token_id"].as_u64().map(|v| v as u32), "{model} bos");
        assert_eq!(tok.eos_id(), t["eos_token_id"].as_u64().map(|v| v as u32), "{model} eos");
        assert_eq!(tok.vocab_size() as u64, t["vocab_size_tokenizer"].as_u64().unwrap(), "{model} vocab size");
        for eos in ids(&reference["eos_ids"]) {
            assert!(tok.is_eog(eos), "{model}: eos {eos} not end-of-generation");
            assert!(tok.is_special(eos), "{model}: eos {eos} not special");
        }
    }
    // llama.cpp's end-of-generation set: eos plus the well-known turn-end tokens
    let piece_set = |m: &str| -> Vec<&str> {
        let tok = tokenizer(m);
        tok.eog_ids().iter().map(|&i| tok.piece(i).unwrap()).collect()
    };
    assert_eq!(
        piece_set("qwen2.5-coder"),
        ["<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
    );
    assert_eq!(piece_set("smollm2"), ["<|endoftext|>", "<|im_end|>", "<reponame>"]);
    assert_eq!(piece_set("gemma3"), ["<eos>", "<end_of_turn>"]);
}

/// Build times, printed (run with `--nocapture --test-threads=1` for clean numbers): the
/// fastest of three builds from the already-read vocabulary, and reading the vocabulary from
/// the GGUF file. Asserted only loosely, as the machine is shared.
#[test]
fn build_times_are_reported() {
    for model in MODELS {
        let vocab = crate::support::vocab(model);
        let best = (0..3)
            .map(|_| {
                let start = std::time::Instant::now();
                let tok = owl_tokenizer::Tokenizer::from_gguf_vocab(vocab).unwrap();
                let t = start.elapsed();
                drop(tok);
                t
            })
            .min()
            .unwrap();
        let path = owl_test::demo_model(model);
        let gguf = owl_formats::gguf::GgufFile::open(&path).unwrap();
        let start = std::time::Instant::now();
        let read = owl_tokenizer::GgufVocab::from_gguf(&gguf).unwrap();
        let read_time = start.elapsed();
        eprintln!(
            "{model}: {} tokens; tokenizer built in {best:?} (best of 3), vocabulary read in {read_time:?}",
            read.tokens.len()
        );
        assert!(best.as_secs_f64() < 30.0, "{model} took {best:?}");
    }
}
