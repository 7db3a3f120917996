//! `_set_vocab_llama_hf` over gguf-py's `LlamaHfVocab`: the `tokenizer.json` of a
//! SentencePiece model converted to HF's BPE with byte fallback (Llama 2 style, no
//! `tokenizer.model`). Every score is -1000; `<0xXX>` pieces are bytes, transformers'
//! special tokens control tokens, added tokens past the base vocabulary user-defined.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use super::bpe::load_tokenizer;
use super::special::{SpecialVocab, DEFAULT_TYPES};
use super::{f32s, i32s, read_json, strings, token_type, tokenizer_error};
use crate::error::ConvertError;
use crate::metadata::Metadata;

/// Whether `tokenizer.json` is one `LlamaHfVocab` takes: BPE with byte fallback and a
/// `Sequence` decoder, and not Llama 3's (ignore_merges without byte fallback).
fn applies(tokenizer: &Value) -> bool {
    let model = &tokenizer["model"];
    let is_bpe = model["type"].as_str() == Some("BPE");
    let ignore_merges = model["ignore_merges"].as_bool().unwrap_or(false);
    let is_llama3 = is_bpe && ignore_merges && !model["byte_fallback"].as_bool().unwrap_or(true);
    !is_llama3
        && is_bpe
        && model["byte_fallback"].as_bool().unwrap_or(false)
        && tokenizer["decoder"]["type"].as_str() == Some("Sequence")
}

fn is_byte_piece(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && b[3].is_ascii_hexdigit() && b[4].is_ascii_hexdigit()
}

/// transformers' `all_special_tokens`: the named special tokens and
/// `additional_special_tokens` of `tokenizer_config.json` and `special_tokens_map.json`.
fn special_texts(dir: &Path) -> Result<Vec<String>, ConvertError> {
    let mut out = Vec::new();
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        let Some(cfg) = read_json(&dir.join(file))? else { continue };
        for key in ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] {
            if let Some(t) = cfg.get(key).and_then(text) {
                out.push(t);
            }
        }
        for t in cfg.get("additional_special_tokens").and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = text(t) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// Writes the vocabulary and returns true, or returns false (writing nothing) where
/// llama.cpp's `LlamaHfVocab` refuses the directory and LlamaModel falls back to gpt2.
pub fn write(m: &mut Metadata, dir: &Path) -> Result<bool, ConvertError> {
    let path = dir.join("tokenizer.json");
    let Some(json) = read_json(&path)? else { return Ok(false) };
    if !applies(&json) {
        return Ok(false);
    }
    let tk = load_tokenizer(&path)?;
    let vocab = tk.get_vocab(true);
    let base = tk.get_vocab_size(false);
    let mut added: Vec<(u32, String)> = tk
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(id, _)| *id as usize >= base)
        .map(|(id, t)| (id, t.content))
        .collect();
    added.sort();
    let special_ids: HashSet<u32> = special_texts(dir)?.iter().filter_map(|t| vocab.get(t).copied()).collect();
    let mut reverse: Vec<Option<&str>> = vec![None; base];
    for (text, &id) in &vocab {
        if (id as usize) < base {
            reverse[id as usize] = Some(text);
        }
    }
    let mut tokens = Vec::with_capacity(base + added.len());
    let mut types = Vec::with_capacity(base + added.len());
    for (id, text) in reverse.iter().enumerate() {
        let text = text.ok_or_else(|| tokenizer_error(&path, format!("no token has id {id}")))?;
        types.push(if is_byte_piece(text) {
            token_type::BYTE
        } else if special_ids.contains(&(id as u32)) {
            token_type::CONTROL
        } else {
            token_type::NORMAL
        });
        tokens.push(text.to_string());
    }
    for (id, text) in added {
        let special = special_ids.contains(&id);
        types.push(if special { token_type::CONTROL } else { token_type::USER_DEFINED });
        tokens.push(text);
    }
    let n = tokens.len();
    m.string("tokenizer.ggml.model", "llama");
    m.string("tokenizer.ggml.pre", "default");
    strings(m, "tokenizer.ggml.tokens", tokens);
    f32s(m, "tokenizer.ggml.scores", vec![-1000.0; n]);
    i32s(m, "tokenizer.ggml.token_type", types);
    SpecialVocab::load(dir, false, &DEFAULT_TYPES, Some(n))?.write(m);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_tokenizer_json_it_takes() {
        let llama2 =
            serde_json::json!({"model": {"type": "BPE", "byte_fallback": true}, "decoder": {"type": "Sequence"}});
        let llama3 = serde_json::json!({"model": {"type": "BPE", "ignore_merges": true, "byte_fallback": false},
            "decoder": {"type": "ByteLevel"}});
        let unigram = serde_json::json!({"model": {"type": "Unigram"}, "decoder": {"type": "Sequence"}});
        assert!(applies(&llama2));
        assert!(!applies(&llama3));
        assert!(!applies(&unigram));
        assert!(is_byte_piece("<0x0A>") && !is_byte_piece("<0xZZ>") && !is_byte_piece("<s>"));
    }
}
