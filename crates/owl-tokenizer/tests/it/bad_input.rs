//! Malformed vocabularies and ids are errors naming the problem, never panics; and a small
//! synthetic SentencePiece vocabulary exercises token types end to end.

use owl_tokenizer::{GgufVocab, TokenType, Tokenizer, TokenizerError};

fn toy_spm() -> GgufVocab {
    // <unk> <s> </s>, 256 byte tokens, then pieces; a control token and a user-defined one.
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
    }
    for (p, t) in [
        ("▁", TokenType::Normal),
        ("a", TokenType::Normal),
        ("b", TokenType::Normal),
        ("▁a", TokenType::Normal),
        ("ab", TokenType::Normal),
        ("▁ab", TokenType::Normal),
        ("<ctrl>", TokenType::Control),
        ("<user>", TokenType::UserDefined),
    ] {
        tokens.push(p.into());
        types.push(t);
    }
    let n = tokens.len();
    GgufVocab {
        architecture: "llama".into(),
        model: "llama".into(),
        scores: Some((0..n).map(|i| -(i as f32)).collect()),
        token_types: Some(types),
        tokens,
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        ..GgufVocab::default()
    }
}

#[test]
fn synthetic_sentencepiece_vocabulary() {
    let tok = Tokenizer::from_gguf_vocab(&toy_spm()).unwrap();
    let id = |p: &str| tok.token_to_id(p).unwrap();
    // prefix space, merges derived from scores, byte fallback for unknown characters
    assert_eq!(tok.encode("ab", true, true).unwrap(), [1, id("▁ab")]);
    let ids = tok.encode("ab é", false, true).unwrap();
    assert_eq!(ids, [id("▁ab"), id("▁"), id("<0xC3>"), id("<0xA9>")]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "ab é");
    // control tokens only with special parsing; user-defined always; prefix space after specials
    assert_eq!(tok.encode("<ctrl>a", false, true).unwrap(), [id("<ctrl>"), id("▁a")]);
    assert!(!tok.encode("<ctrl>", false, false).unwrap().contains(&id("<ctrl>")));
    assert_eq!(tok.encode("<user>", false, false).unwrap(), [id("<user>")]);
    assert!(tok.is_special(id("<ctrl>")) && tok.is_special(0) && !tok.is_special(id("<user>")));
    assert_eq!(tok.decode(&[1, id("▁a"), 2], true).unwrap(), "a");
    assert_eq!(tok.decode(&[1, id("▁a"), 2], false).unwrap(), "<s> a</s>");
    assert_eq!(tok.eog_ids(), [2]);
    assert_eq!(tok.chat_template().unwrap().origin(), owl_tokenizer::TemplateOrigin::Fallback);
}

#[test]
fn malformed_vocabularies_are_errors() {
    let mut v = toy_spm();
    v.model = "bert".into();
    assert!(matches!(Tokenizer::from_gguf_vocab(&v), Err(TokenizerError::UnsupportedModel(m)) if m == "bert"));

    let mut v = toy_spm();
    v.model = "gpt2".into();
    v.pre = Some("no-such-pre".into());
    let err = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert!(matches!(err, TokenizerError::UnsupportedPreTokenizer(ref p) if p == "no-such-pre"), "{err}");
    assert!(err.to_string().contains("qwen2"), "the message lists the known ones: {err}");

    v.pre = Some("qwen2".into());
    let err = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert!(matches!(err, TokenizerError::MissingKey { key: "tokenizer.ggml.merges" }), "{err}");

    v.merges = Some(vec!["ab".into()]);
    assert!(matches!(Tokenizer::from_gguf_vocab(&v), Err(TokenizerError::BadMerge { index: 0, .. })));
    v.merges = Some(vec!["a zz".into()]);
    let err = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert!(err.to_string().contains("zz"), "{err}");

    let tok = Tokenizer::from_gguf_vocab(&toy_spm()).unwrap();
    let n = tok.vocab_size() as u32;
    assert!(matches!(tok.decode(&[n], false), Err(TokenizerError::IdOutOfRange { id, .. }) if id == n));
    assert_eq!(tok.piece(n), None);
    assert!(!tok.is_special(n));
}

#[test]
fn broken_chat_templates_leave_the_tokenizer_usable() {
    let mut v = toy_spm();
    v.chat_template = Some("{% for m in messages %}".into());
    let tok = Tokenizer::from_gguf_vocab(&v).unwrap();
    assert!(tok.chat_template().is_none());
    assert!(matches!(tok.chat_template_error(), Some(owl_tokenizer::TemplateError::Syntax(_))));
    assert!(!tok.encode("ab", false, true).unwrap().is_empty());
}
