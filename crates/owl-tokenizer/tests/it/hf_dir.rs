//! Hugging Face tokenizer directories: tokenizer.json + tokenizer_config.json.

use std::path::Path;

use owl_tokenizer::{TemplateOrigin, Tokenizer};

use crate::support::{corpus, tokenizer, MODELS};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Each demo tokenizer exported as tokenizer.json and loaded back as an HF directory gives
/// the same ids, text, specials and template.
#[test]
fn exported_tokenizer_json_loads_back_identically() {
    let texts = corpus();
    for model in MODELS {
        let gguf_tok = tokenizer(model);
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "tokenizer.json", &gguf_tok.to_tokenizer_json(false).unwrap());
        let template = gguf_tok.chat_template().unwrap();
        let config = serde_json::json!({
            "bos_token": gguf_tok.bos_id().and_then(|i| gguf_tok.piece(i)),
            "eos_token": gguf_tok.eos_id().and_then(|i| gguf_tok.piece(i)),
            "chat_template": template.source(),
        });
        write(dir.path(), "tokenizer_config.json", &config.to_string());
        let hf = Tokenizer::from_hf_dir(dir.path()).unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!(hf.vocab_size(), gguf_tok.vocab_size(), "{model}");
        assert_eq!(hf.bos_id(), gguf_tok.bos_id(), "{model}");
        assert_eq!(hf.eos_id(), gguf_tok.eos_id(), "{model}");
        assert_eq!(hf.adds_bos(), gguf_tok.adds_bos(), "{model}");
        assert_eq!(hf.chat_template().unwrap().source(), template.source());
        for text in &texts {
            for (add, parse) in [(true, true), (false, true), (false, false)] {
                let ids = gguf_tok.encode(text, add, parse).unwrap();
                assert_eq!(hf.encode(text, add, parse).unwrap(), ids, "{model} {text:?} {add} {parse}");
                for skip in [false, true] {
                    assert_eq!(
                        hf.decode(&ids, skip).unwrap(),
                        gguf_tok.decode(&ids, skip).unwrap(),
                        "{model} {text:?}"
                    );
                }
            }
        }
        for id in (0..gguf_tok.vocab_size() as u32).step_by(97) {
            assert_eq!(hf.piece(id), gguf_tok.piece(id), "{model} piece {id}");
            assert_eq!(hf.is_special(id), gguf_tok.is_special(id), "{model} special {id}");
        }
    }
}

/// A small hand-written tokenizer.json with a Metaspace decoder, generation_config eos ids,
/// named chat templates and a decoder owl leaves to the engine (WordPiece).
#[test]
fn hand_written_directories() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = serde_json::json!({"<unk>": 0, "<s>": 1, "</s>": 2, "▁hello": 3, "▁world": 4, "▁": 5, "h": 6,
        "e": 7, "l": 8, "o": 9, "w": 10, "r": 11, "d": 12, "▁h": 13, "▁w": 14, "▁he": 15, "ll": 16, "▁hell": 17,
        "or": 18, "▁wor": 19, "ld": 20});
    let tokenizer_json = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 21, "content": "<|turn|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": false, "ignore_merges": false, "vocab": vocab,
            "merges": [["▁", "h"], ["▁", "w"], ["▁h", "e"], ["l", "l"], ["▁he", "ll"], ["▁hell", "o"], ["o", "r"],
                ["▁w", "or"], ["l", "d"], ["▁wor", "ld"]]}
    });
    write(dir.path(), "tokenizer.json", &tokenizer_json.to_string());
    write(dir.path(), "tokenizer_config.json", &serde_json::json!({
        "bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>",
        "chat_template": [{"name": "default", "template": "{% for m in messages %}<|turn|>{{ m.content }}{% endfor %}"},
                          {"name": "tool_use", "template": "tools"}]
    }).to_string());
    write(dir.path(), "generation_config.json", r#"{"eos_token_id": [2, 21]}"#);
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(tok.vocab_size(), 22);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert!(tok.adds_bos() && !tok.adds_eos());
    assert_eq!(tok.eog_ids(), [2, 21]);
    let ids = tok.encode("hello world<|turn|>", true, true).unwrap();
    assert_eq!(ids, [1, 3, 4, 21]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "<s> hello world<|turn|>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello world");
    assert_eq!(tok.decode(&ids[1..], true).unwrap(), "hello world");
    let mut s = tok.stream_decoder(true);
    let streamed: String = ids[1..].iter().map(|&i| s.push(i).unwrap()).collect();
    assert_eq!(streamed + &s.finish(), "hello world");
    let t = tok.chat_template().unwrap();
    assert_eq!(t.origin(), TemplateOrigin::Model);
    assert_eq!(t.render(&[owl_tokenizer::ChatMessage::user("x")], None, false).unwrap(), "<|turn|>x");

    // chat_template.jinja wins over tokenizer_config.json, as in transformers
    write(dir.path(), "chat_template.jinja", "{{ bos_token }}J");
    assert_eq!(
        Tokenizer::from_hf_dir(dir.path()).unwrap().chat_template().unwrap().render(&[], None, false).unwrap(),
        "<s>J"
    );

    // a decoder owl does not tabulate is run by the engine, streaming included
    let mut wp = tokenizer_json.clone();
    wp["decoder"] = serde_json::json!({"type": "WordPiece", "prefix": "##", "cleanup": true});
    write(dir.path(), "tokenizer.json", &wp.to_string());
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    let ids = tok.encode("hello world", false, true).unwrap();
    let whole = tok.decode(&ids, false).unwrap();
    let mut s = tok.stream_decoder(false);
    let streamed: String = ids.iter().map(|&i| s.push(i).unwrap()).collect();
    assert_eq!(streamed + &s.finish(), whole);
    assert!(tok.decode(&[99], false).is_err());
}

#[test]
fn broken_directories_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    write(dir.path(), "tokenizer.json", "{\"model\": 3");
    let err = Tokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    write(dir.path(), "tokenizer.json", "{\"version\": \"1.0\", \"model\": {\"type\": \"Nope\"}}");
    assert!(Tokenizer::from_hf_dir(dir.path()).is_err());
}
