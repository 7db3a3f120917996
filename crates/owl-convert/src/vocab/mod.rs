//! Tokenizer metadata, as llama.cpp's convert_hf_to_gguf.py writes it (`set_vocab` of each
//! model class, llama.cpp as vendored by llama-cpp-python 0.3.36):
//!
//! - [`bpe`]: `_set_vocab_gpt2`, a byte-level BPE `tokenizer.json` (`tokenizer.ggml.model`
//!   "gpt2", the pre-tokenizer named by the hash of the ids of [`pre_table::CHKTXT`]);
//! - [`spm`]: `_set_vocab_sentencepiece` (and Phi-3's own variant), a SentencePiece
//!   `tokenizer.model` ("llama");
//! - [`llama_hf`]: `_set_vocab_llama_hf`, a `tokenizer.json` converted from SentencePiece
//!   for Llama-architecture models without `tokenizer.model` ("llama");
//! - [`special`]: gguf-py's `SpecialVocab` (merges, special ids, add-BOS/EOS, chat template).
//!
//! Each family tries them in its class's order (`vocab`); the keys land in the order the
//! Python writes them.

mod bpe;
mod llama_hf;
mod pre_table;
mod special;
mod spm;

use std::path::Path;

use owl_formats::gguf::{MetadataArray, MetadataValue};
use serde_json::Value;

use crate::arch::Arch;
use crate::error::ConvertError;
use crate::metadata::Metadata;

pub use special::SpecialVocab;

/// gguf-py's `TokenType`.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

pub(crate) fn tokenizer_error(path: &Path, reason: impl Into<String>) -> ConvertError {
    ConvertError::Tokenizer { path: path.to_path_buf(), reason: reason.into() }
}

/// A JSON file, `None` when it does not exist.
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>, ConvertError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map(Some).map_err(|e| tokenizer_error(path, format!("invalid JSON: {e}")))
}

/// The converter's view of config.json: `text_config` moved over the top level
/// (TextModel.__init__).
pub(crate) struct Hparams<'a>(pub &'a Value);

impl Hparams<'_> {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get("text_config").and_then(|t| t.get(key)).or_else(|| self.0.get(key))
    }

    pub fn usize(&self, key: &str) -> Option<usize> {
        self.get(key).and_then(Value::as_u64).map(|v| v as usize)
    }
}

/// `TextModel.does_token_look_special`.
pub(crate) fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

pub(crate) fn strings(m: &mut Metadata, key: &str, v: Vec<String>) {
    if !v.is_empty() {
        m.set(key, MetadataValue::Array(MetadataArray::String(v)));
    }
}

pub(crate) fn i32s(m: &mut Metadata, key: &str, v: Vec<i32>) {
    if !v.is_empty() {
        m.set(key, MetadataValue::Array(MetadataArray::I32(v)));
    }
}

pub(crate) fn f32s(m: &mut Metadata, key: &str, v: Vec<f32>) {
    if !v.is_empty() {
        m.set(key, MetadataValue::Array(MetadataArray::F32(v)));
    }
}

/// The tokenizer metadata for the model directory `dir`, empty when it has neither
/// `tokenizer.json` nor `tokenizer.model`.
/// `pre_override` names the `tokenizer.ggml.pre` to write when llama.cpp's table does not
/// know the hash of a BPE tokenizer (llama.cpp stops there; the user may vouch for an
/// equivalent, `owl convert --tokenizer-pre`).
pub(crate) fn metadata(
    dir: &Path,
    arch: Arch,
    raw_cfg: &Value,
    pre_override: Option<&str>,
) -> Result<Metadata, ConvertError> {
    let mut m = Metadata::default();
    let has_spm = dir.join("tokenizer.model").is_file();
    let has_json = dir.join("tokenizer.json").is_file();
    if !has_spm && !has_json {
        return Ok(m);
    }
    let hp = Hparams(raw_cfg);
    let gpt2 = |m: &mut Metadata| bpe::write(m, dir, &hp, pre_override);
    let spm = |m: &mut Metadata| spm::write(m, dir, &hp, spm::Flavour::Standard);
    let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?;
    match arch {
        // LlamaModel.set_vocab: sentencepiece, else llama_hf, else gpt2 (Llama 3).
        Arch::Llama => {
            if let Some(b) = tokenizer_config.as_ref().and_then(|c| c.get("add_prefix_space")).and_then(Value::as_bool)
            {
                m.bool("tokenizer.ggml.add_space_prefix", b);
            }
            if has_spm {
                spm(&mut m)?;
            } else if !llama_hf::write(&mut m, dir)? {
                gpt2(&mut m)?;
            }
            let vocab_size = hp.usize("vocab_size").unwrap_or(32000);
            if vocab_size == 32016 {
                // CodeLlama's infill tokens.
                let mut sv = SpecialVocab::load(dir, false, &["prefix", "suffix", "middle", "eot"], None)?;
                let cfg = dir.join("config.json");
                for (typ, id) in [("prefix", 32007), ("suffix", 32008), ("middle", 32009), ("eot", 32010)] {
                    sv.set_special_token(typ, Some(&Value::from(id)), &cfg)?;
                }
                sv.write(&mut m);
            }
            if vocab_size == 49152 {
                // Granite small models.
                m.bool("tokenizer.ggml.add_bos_token", false);
            }
        }
        // Qwen2Model / Qwen3Model: sentencepiece, else gpt2.
        Arch::Qwen2 | Arch::Qwen3 => {
            if has_spm {
                spm(&mut m)?;
            } else {
                gpt2(&mut m)?;
            }
        }
        // Qwen2MoeModel (Qwen3MoeModel) and DeepseekV2Model: TextModel's gpt2.
        Arch::Qwen3Moe | Arch::Deepseek2 => gpt2(&mut m)?,
        // Phi3MiniModel: GPT2Tokenizer (Phi-4) as gpt2, else its own sentencepiece reading.
        Arch::Phi3 => {
            let class = tokenizer_config.as_ref().and_then(|c| c.get("tokenizer_class")).and_then(Value::as_str);
            if class == Some("GPT2Tokenizer") {
                gpt2(&mut m)?;
            } else {
                spm::write(&mut m, dir, &hp, spm::Flavour::Phi3)?;
            }
        }
        Arch::Gemma => {
            spm(&mut m)?;
            // CodeGemma's infill tokens (llama.cpp writes them for every Gemma; its writer
            // has keys only for eot among them).
            let types = ["prefix", "suffix", "middle", "fsep", "eot"];
            let mut sv = SpecialVocab::load(dir, false, &types, None)?;
            let cfg = dir.join("config.json");
            for (typ, id) in [("prefix", 67), ("suffix", 69), ("middle", 68), ("fsep", 70), ("eot", 107)] {
                sv.set_special_token(typ, Some(&Value::from(id)), &cfg)?;
            }
            sv.chat_template = None;
            sv.write(&mut m);
            m.bool("tokenizer.ggml.add_space_prefix", false);
        }
        Arch::Gemma2 => {
            spm(&mut m)?;
            m.bool("tokenizer.ggml.add_space_prefix", false);
        }
        Arch::Gemma3 => {
            if has_spm {
                spm(&mut m)?;
                m.bool("tokenizer.ggml.add_space_prefix", false);
            } else {
                gpt2(&mut m)?;
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_looking_tokens() {
        for t in ["<pad>", "<|im_end|>", "<｜begin▁of▁sentence｜>", "<unused12>", "<mask>"] {
            assert!(looks_special(t), "{t}");
        }
        for t in ["<s>", "hello", "<|x", "<unused"] {
            assert!(!looks_special(t), "{t}");
        }
    }

    #[test]
    fn no_tokenizer_files_no_keys() {
        let dir = tempfile::tempdir().expect("test");
        std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"add_prefix_space": true}"#).expect("test");
        let m = metadata(dir.path(), Arch::Llama, &serde_json::json!({}), None).expect("test");
        assert!(m.entries.is_empty());
    }

    #[test]
    fn text_config_wins() {
        let v = serde_json::json!({"vocab_size": 10, "text_config": {"vocab_size": 20}});
        assert_eq!(Hparams(&v).usize("vocab_size"), Some(20));
        let v = serde_json::json!({"vocab_size": 10, "text_config": {}});
        assert_eq!(Hparams(&v).usize("vocab_size"), Some(10));
    }
}
