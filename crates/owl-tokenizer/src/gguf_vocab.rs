//! [`GgufVocab`]: the tokenizer half of a GGUF file's metadata, read once into plain data.
//!
//! This is the only place that knows GGUF key names (llama.cpp's `LLM_KV_TOKENIZER_*`,
//! gguf-py `Keys.Tokenizer`); everything else builds from the struct, which tests can also
//! fill by hand.

use owl_formats::gguf::{GgufFile, MetadataArray};

use crate::error::TokenizerError;

/// `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    /// Special tokens such as `<s>`, `<|im_end|>`: matched in text only when special-token
    /// parsing is on, hidden when decoding with `skip_special`.
    Control,
    /// Added tokens such as `<think>` or Gemma's `\n\n`: always matched whole in text.
    UserDefined,
    Unused,
    /// `<0xNN>` byte-fallback tokens of SentencePiece vocabularies.
    Byte,
}

impl TokenType {
    pub fn from_gguf(v: i64) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// Everything a GGUF file says about its tokenizer.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `general.architecture` (selects Gemma's SentencePiece quirks and built-in template).
    pub architecture: String,
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer family of a `gpt2` vocabulary.
    pub pre: Option<String>,
    /// The token texts. A token whose stored text is not UTF-8 appears here as
    /// [`RAW_TOKEN_MARK`] followed by its bytes escaped (`\xe2\x82`): a key no input text
    /// produces (U+FFFF is a noncharacter), shown escaped; its bytes are in `raw_tokens`.
    pub tokens: Vec<String>,
    /// `(id, bytes)` of the tokens whose text is not UTF-8, in id order. llama.cpp loads such
    /// vocabularies (GGUF strings are bytes); decoding these ids yields the bytes as stored.
    pub raw_tokens: Vec<(u32, Vec<u8>)>,
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<TokenType>>,
    /// `tokenizer.ggml.merges`: `"left right"` pairs in rank order.
    pub merges: Option<Vec<String>>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub eot_id: Option<u32>,
    pub eom_id: Option<u32>,
    pub fim_pad_id: Option<u32>,
    pub fim_rep_id: Option<u32>,
    pub fim_sep_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub chat_template: Option<String>,
}

const K_MODEL: &str = "tokenizer.ggml.model";
const K_PRE: &str = "tokenizer.ggml.pre";
const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_SCORES: &str = "tokenizer.ggml.scores";
const K_TYPES: &str = "tokenizer.ggml.token_type";
const K_MERGES: &str = "tokenizer.ggml.merges";

impl GgufVocab {
    /// Reads the tokenizer metadata of a GGUF file.
    pub fn from_gguf(gguf: &GgufFile) -> Result<GgufVocab, TokenizerError> {
        let model = gguf.get_str(K_MODEL).ok_or(TokenizerError::MissingKey { key: K_MODEL })?.to_string();
        let (tokens, raw_tokens) = token_texts(gguf)?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(TokenizerError::BadKey { key: K_TOKENS, problem: format!("{n} tokens") });
        }
        let scores = match gguf.get_array(K_SCORES) {
            None => None,
            Some(a) => Some(a.to_f32s().ok_or_else(|| bad_type(K_SCORES, a, "numbers"))?),
        };
        let token_types = match gguf.get_array(K_TYPES) {
            None => None,
            Some(a) => {
                let raw = a.to_i64s().ok_or_else(|| bad_type(K_TYPES, a, "integers"))?;
                Some(raw.into_iter().map(TokenType::from_gguf).collect::<Vec<_>>())
            }
        };
        if let Some(s) = &scores {
            check_len(K_SCORES, s.len(), n)?;
        }
        if let Some(t) = &token_types {
            check_len(K_TYPES, t.len(), n)?;
        }
        let id = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            match gguf.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(id) if (id as usize) < n => Ok(Some(id as u32)),
                    Some(id) => Err(TokenizerError::BadKey {
                        key,
                        problem: format!("token id {id} is outside the vocabulary of {n} tokens"),
                    }),
                    None => Err(TokenizerError::BadKey { key, problem: format!("expected a token id, found {v:?}") }),
                },
            }
        };
        let flag = |key: &'static str| -> Result<Option<bool>, TokenizerError> {
            match gguf.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_bool()
                    .map(Some)
                    .ok_or_else(|| TokenizerError::BadKey { key, problem: format!("expected a bool, found {v:?}") }),
            }
        };
        Ok(GgufVocab {
            architecture: gguf.architecture().unwrap_or_default().to_string(),
            pre: gguf.get_str(K_PRE).map(str::to_string),
            merges: strings(gguf, K_MERGES)?,
            scores,
            token_types,
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            unk_id: id("tokenizer.ggml.unknown_token_id")?,
            pad_id: id("tokenizer.ggml.padding_token_id")?,
            eot_id: id("tokenizer.ggml.eot_token_id")?,
            eom_id: id("tokenizer.ggml.eom_token_id")?,
            fim_pad_id: id("tokenizer.ggml.fim_pad_token_id")?,
            fim_rep_id: id("tokenizer.ggml.fim_rep_token_id")?,
            fim_sep_id: id("tokenizer.ggml.fim_sep_token_id")?,
            add_bos: flag("tokenizer.ggml.add_bos_token")?,
            add_eos: flag("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix")?,
            chat_template: gguf.get_str("tokenizer.chat_template").map(str::to_string),
            model,
            tokens,
            raw_tokens,
        })
    }

    /// The type of token `id` (`Normal` when the file has no types).
    pub fn token_type(&self, id: usize) -> TokenType {
        match &self.token_types {
            Some(t) => t.get(id).copied().unwrap_or(TokenType::Undefined),
            None => TokenType::Normal,
        }
    }
}

/// `(id, bytes)` of the tokens whose text is not UTF-8 (see [`GgufVocab::raw_tokens`]).
type RawTokens = Vec<(u32, Vec<u8>)>;

/// Marks a token text that stands for bytes that are not UTF-8 (see [`GgufVocab::tokens`]).
pub const RAW_TOKEN_MARK: char = '\u{FFFF}';

/// `tokenizer.ggml.tokens` as texts, with the non-UTF-8 ones escaped and their bytes kept.
fn token_texts(gguf: &GgufFile) -> Result<(Vec<String>, RawTokens), TokenizerError> {
    let array = gguf.get_array(K_TOKENS).ok_or(TokenizerError::MissingKey { key: K_TOKENS })?;
    if let Some(texts) = array.as_strings() {
        return Ok((texts.to_vec(), Vec::new()));
    }
    let raw = array.as_byte_strings().ok_or_else(|| bad_type(K_TOKENS, array, "strings"))?;
    let mut tokens = Vec::with_capacity(raw.len());
    let mut raw_tokens = Vec::new();
    for (id, bytes) in raw.into_iter().enumerate() {
        match std::str::from_utf8(bytes) {
            Ok(text) => tokens.push(text.to_string()),
            Err(_) => {
                let mut text = String::from(RAW_TOKEN_MARK);
                for chunk in bytes.utf8_chunks() {
                    text.push_str(chunk.valid());
                    for b in chunk.invalid() {
                        text.push_str(&format!("\\x{b:02x}"));
                    }
                }
                tokens.push(text);
                raw_tokens.push((id as u32, bytes.to_vec()));
            }
        }
    }
    Ok((tokens, raw_tokens))
}

fn strings(gguf: &GgufFile, key: &'static str) -> Result<Option<Vec<String>>, TokenizerError> {
    match gguf.get_array(key) {
        None => Ok(None),
        Some(a) => Ok(Some(a.as_strings().ok_or_else(|| bad_type(key, a, "strings"))?.to_vec())),
    }
}

fn bad_type(key: &'static str, a: &MetadataArray, want: &str) -> TokenizerError {
    TokenizerError::BadKey {
        key,
        problem: format!("expected an array of {want}, found an array of {}", a.element_type_name()),
    }
}

fn check_len(key: &'static str, len: usize, n: usize) -> Result<(), TokenizerError> {
    if len == n {
        Ok(())
    } else {
        Err(TokenizerError::BadKey { key, problem: format!("{len} entries for {n} tokens") })
    }
}
