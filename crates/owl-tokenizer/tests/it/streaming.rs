//! Streaming detokenization: piecewise text equals the whole decode, every piece is whole
//! UTF-8, and characters split across tokens are held back until complete.

use crate::support::{corpus, tokenizer, MODELS};

#[test]
fn streamed_text_equals_decoded_text() {
    let texts = corpus();
    for model in MODELS {
        let tok = tokenizer(model);
        for text in &texts {
            for skip_special in [false, true] {
                let ids = tok.encode(text, true, true).unwrap();
                let mut stream = tok.stream_decoder(skip_special);
                let mut streamed = String::new();
                for &id in &ids {
                    let piece = stream.push(id).unwrap();
                    assert!(!piece.contains('\u{FFFD}'), "{model}: replacement char streamed for {text:?}");
                    streamed.push_str(&piece);
                }
                streamed.push_str(&stream.finish());
                assert_eq!(streamed, tok.decode(&ids, skip_special).unwrap(), "{model} {text:?}");
            }
        }
    }
}

#[test]
fn multibyte_characters_wait_for_their_last_byte() {
    // Qwen (byte-level BPE) and Gemma (byte fallback) both split rare characters into bytes.
    for model in ["qwen2.5-coder", "gemma3"] {
        let tok = tokenizer(model);
        let text = "𝔢😀👨‍👩‍👧\u{10FFFD}";
        let ids = tok.encode(text, false, true).unwrap();
        let mut stream = tok.stream_decoder(false);
        let mut held_back = 0;
        let mut out = String::new();
        for &id in &ids {
            let piece = stream.push(id).unwrap();
            if piece.is_empty() {
                held_back += 1;
            }
            out.push_str(&piece);
        }
        assert!(held_back > 0, "{model}: expected some tokens to end mid-character ({ids:?})");
        assert_eq!(stream.pending_bytes(), 0);
        assert_eq!(stream.finish(), "");
        assert_eq!(out, text);
    }
    // a truncated character is flushed as U+FFFD at the end, never earlier
    let tok = tokenizer("gemma3");
    let ids = tok.encode("\u{10FFFD}", false, true).unwrap(); // private use: byte fallback
    assert!(ids.len() > 1, "{ids:?}");
    let mut stream = tok.stream_decoder(false);
    for &id in &ids[..ids.len() - 1] {
        assert_eq!(stream.push(id).unwrap(), "");
    }
    assert!(stream.pending_bytes() > 0);
    assert_eq!(stream.finish(), "\u{FFFD}");
}

#[test]
fn streaming_hides_special_tokens_on_request() {
    let tok = tokenizer("smollm2");
    let ids = tok.encode("<|im_start|>assistant\nHi!<|im_end|>", false, true).unwrap();
    let collect = |skip: bool| {
        let mut s = tok.stream_decoder(skip);
        let mut out: String = ids.iter().map(|&i| s.push(i).unwrap()).collect();
        out.push_str(&s.finish());
        out
    };
    assert_eq!(collect(false), "<|im_start|>assistant\nHi!<|im_end|>");
    assert_eq!(collect(true), "assistant\nHi!");
    assert!(tok.stream_decoder(false).push(u32::MAX).is_err());
}
