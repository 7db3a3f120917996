//! The hard-case corpus (tests/data/corpus.json) against transformers' ids and decodes for
//! the same GGUF files (tests/data/expected_<model>.json).

use crate::support::{corpus, data, diff, ids, tokenizer, MODELS};

/// Exact ids for every corpus string, three ways (default specials, none, special-token text
/// as plain text). Where transformers' GGUF conversion uses another pre-tokenizer than the
/// model's own tokenizer.json (SmolLM2: transformers has no `smollm` entry and skips the
/// digit split that the original and llama.cpp do), the reference records the original's ids
/// too (`*_original_pre`) and owl must give those.
#[test]
fn corpus_ids_match_transformers() {
    let texts = corpus();
    for model in MODELS {
        let tok = tokenizer(model);
        let expected = data(&format!("expected_{model}.json"));
        let cases = expected["cases"].as_array().expect("cases");
        assert_eq!(cases.len(), texts.len(), "{model}: regenerate expected data for the current corpus");
        let mut original_pre_cases = 0;
        for (case, text) in cases.iter().zip(&texts) {
            assert_eq!(case["text"].as_str(), Some(text.as_str()), "{model}: corpus and expected data disagree");
            for (key, add, parse) in [
                ("ids", true, true),
                ("ids_without_special_tokens", false, true),
                ("ids_special_as_text", false, false),
            ] {
                let ours = tok.encode(text, add, parse).unwrap();
                let want = match case.get(format!("{key}_original_pre")) {
                    Some(original) => {
                        original_pre_cases += 1;
                        ids(original)
                    }
                    None => ids(&case[key]),
                };
                assert_eq!(ours, want, "{model} {key} {text:?}: {}", diff(&ours, &want, tok));
            }
        }
        eprintln!("{model}: {original_pre_cases} id lists follow the model's original pre-tokenizer");
        if model != "smollm2" {
            assert_eq!(original_pre_cases, 0);
        }
    }
}

#[test]
fn corpus_decodes_match_transformers_and_round_trip() {
    let texts = corpus();
    for model in MODELS {
        let tok = tokenizer(model);
        let expected = data(&format!("expected_{model}.json"));
        let mut lossless = 0;
        for (case, text) in expected["cases"].as_array().unwrap().iter().zip(&texts) {
            let plain = ids(&case["ids_without_special_tokens"]);
            let decoded = tok.decode(&plain, false).unwrap();
            assert_eq!(decoded, case["decoded"].as_str().unwrap(), "{model} decode {text:?}");
            let with = ids(&case["ids"]);
            assert_eq!(
                tok.decode(&with, true).unwrap(),
                case["decoded_skip_special"].as_str().unwrap(),
                "{model} decode skipping specials {text:?}"
            );
            let as_text = ids(&case["ids_special_as_text"]);
            assert_eq!(
                tok.decode(&as_text, false).unwrap(),
                case["decoded_special_as_text"].as_str().unwrap(),
                "{model} decode of special-looking text {text:?}"
            );
            // decode(encode(text)) == text wherever the reference tokenizer is lossless
            if case["lossless"].as_bool() == Some(true) {
                lossless += 1;
                assert_eq!(tok.decode(&tok.encode(text, false, true).unwrap(), false).unwrap(), *text, "{model}");
                assert_eq!(tok.decode(&tok.encode(text, false, false).unwrap(), false).unwrap(), *text, "{model}");
            }
        }
        // every corpus string is lossless for these three byte-exact tokenizers
        assert_eq!(lossless, texts.len(), "{model}");
    }
}

#[test]
fn special_tokens_parse_only_when_asked() {
    let tok = tokenizer("qwen2.5-coder");
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    assert_eq!(im_end, 151645);
    assert_eq!(tok.encode("<|im_end|>", false, true).unwrap(), [im_end]);
    let as_text = tok.encode("<|im_end|>", false, false).unwrap();
    assert!(as_text.len() > 1 && !as_text.contains(&im_end));
    // user-defined tokens (type 4) match whole either way, as in llama.cpp
    let call = tok.token_to_id("<tool_call>").unwrap();
    assert!(!tok.is_special(call));
    assert_eq!(tok.encode("<tool_call>", false, false).unwrap(), [call]);
    assert_eq!(tok.decode(&[call, im_end], true).unwrap(), "<tool_call>");

    let gemma = tokenizer("gemma3");
    assert!(gemma.adds_bos());
    assert_eq!(gemma.encode("", true, true).unwrap(), [2]);
    assert_eq!(gemma.encode("<end_of_turn>", false, true).unwrap(), [106]);
    assert_eq!(gemma.decode(&[2, 106], true).unwrap(), "");
    assert_eq!(gemma.decode(&[2, 106], false).unwrap(), "<bos><end_of_turn>");
    // Gemma's whitespace pieces are respelled ▁▁... and its newline/tab tokens are added tokens
    let ids = gemma.encode("a    b\tc\n\nd", false, true).unwrap();
    let pieces: Vec<&str> = ids.iter().map(|&i| gemma.piece(i).unwrap()).collect();
    assert_eq!(pieces, ["a", "▁▁▁▁", "b", "\t", "c", "\n\n", "d"]);
}
