//! `_set_vocab_gpt2` over `get_vocab_base`: a byte-level BPE `tokenizer.json`.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::pre_table::{CHKTXT, PRE_BY_HASH};
use super::special::{SpecialVocab, DEFAULT_TYPES};
use super::{i32s, looks_special, strings, token_type, tokenizer_error, Hparams};
use crate::error::ConvertError;
use crate::metadata::Metadata;

/// Loads `tokenizer.json` as transformers' fast tokenizer runs it (no truncation, no padding).
pub fn load_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer, ConvertError> {
    let mut tk = tokenizers::Tokenizer::from_file(path).map_err(|e| tokenizer_error(path, e.to_string()))?;
    tk.with_truncation(None).map_err(|e| tokenizer_error(path, e.to_string()))?;
    tk.with_padding(None);
    Ok(tk)
}

/// sha256 of Python's `str(ids)`: "[1, 2, 3]".
pub fn ids_hash(ids: &[u32]) -> String {
    let list = format!("[{}]", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "));
    Sha256::digest(list.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `get_vocab_base_pre`: the ids of `tokenizer.encode(chktxt)` (special tokens added, as
/// transformers' `encode` does by default), hashed and looked up.
pub fn pre_name(tk: &tokenizers::Tokenizer, path: &Path, pre_override: Option<&str>) -> Result<String, ConvertError> {
    let enc = tk.encode(CHKTXT, true).map_err(|e| tokenizer_error(path, format!("encoding the probe text: {e}")))?;
    let hash = ids_hash(enc.get_ids());
    if let Some((_, name)) = PRE_BY_HASH.iter().rev().find(|(h, _)| *h == hash) {
        return Ok(name.to_string());
    }
    match pre_override {
        Some(name) => Ok(name.to_string()),
        None => Err(tokenizer_error(
            path,
            format!(
                "the BPE pre-tokenizer was not recognized: chkhsh {hash} is not in llama.cpp's \
                 get_vocab_base_pre table (--tokenizer-pre NAME names an equivalent \
                 tokenizer.ggml.pre, e.g. llama-bpe or qwen2)"
            ),
        )),
    }
}

pub fn write(m: &mut Metadata, dir: &Path, hp: &Hparams<'_>, pre_override: Option<&str>) -> Result<(), ConvertError> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(tokenizer_error(&path, "a BPE vocabulary needs tokenizer.json (not found)"));
    }
    let tk = load_tokenizer(&path)?;
    let vocab = tk.get_vocab(true);
    let vocab_size = hp.usize("vocab_size").unwrap_or(vocab.len());
    let max_id = vocab.values().copied().max().unwrap_or(0) as usize;
    if max_id >= vocab_size {
        return Err(tokenizer_error(
            &path,
            format!("token id {max_id} is not below config.json's vocab_size {vocab_size}"),
        ));
    }
    let pre = pre_name(&tk, &path, pre_override)?;
    let mut reverse: Vec<Option<&str>> = vec![None; vocab_size];
    for (text, &id) in &vocab {
        reverse[id as usize] = Some(text);
    }
    let added = tk.get_added_tokens_decoder();
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (i, text) in reverse.iter().enumerate() {
        let Some(text) = text else {
            tokens.push(format!("[PAD{i}]"));
            types.push(token_type::UNUSED);
            continue;
        };
        match added.get(&(i as u32)) {
            Some(a) if a.special || looks_special(text) => {
                tokens.push(text.to_string());
                types.push(token_type::CONTROL);
            }
            Some(_) => {
                tokens.push(text.replace('\u{2581}', " "));
                types.push(token_type::USER_DEFINED);
            }
            None => {
                tokens.push(text.to_string());
                types.push(token_type::NORMAL);
            }
        }
    }
    m.string("tokenizer.ggml.model", "gpt2");
    m.string("tokenizer.ggml.pre", pre);
    strings(m, "tokenizer.ggml.tokens", tokens);
    i32s(m, "tokenizer.ggml.token_type", types);
    SpecialVocab::load(dir, true, &DEFAULT_TYPES, None)?.write(m);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_formats_ids_as_python_does() {
        // sha256(str([1, 2, 3]).encode()) in Python.
        assert_eq!(ids_hash(&[1, 2, 3]), "a36b1f2c3f84522dd1005145646617d7054c0851e97c72a039c0bdfac9fa07f3");
    }

    #[test]
    fn probe_text_is_llama_cpps() {
        // sha256(chktxt.encode()) of convert_hf_to_gguf.py's chktxt: 431 UTF-8 bytes.
        assert_eq!(CHKTXT.len(), 431);
        let h: String = Sha256::digest(CHKTXT.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(h, "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da");
    }

    #[test]
    fn duplicate_hashes_keep_the_last_name() {
        let find = |h: &str| PRE_BY_HASH.iter().rev().find(|(x, _)| *x == h).map(|(_, n)| *n);
        assert_eq!(find("b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166"), Some("olmo"));
        assert_eq!(find("0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f"), Some("jina-v2-en"));
        assert_eq!(PRE_BY_HASH.len(), 97);
    }
}
