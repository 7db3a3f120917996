//! owl-tokenizer: text to token ids and back for the models owl runs, and their chat
//! templates.
//!
//! - [`Tokenizer`]: built from a GGUF file ([`Tokenizer::from_gguf`], through the plain-data
//!   [`GgufVocab`]) or a Hugging Face directory ([`Tokenizer::from_hf_dir`]). Byte-level BPE
//!   (`gpt2`: GPT-2, Llama 3, Qwen2, SmolLM, DeepSeek, Tekken, ... pre-tokenizers, see
//!   [`pretokenize`]) and SentencePiece BPE (`llama`: Llama 2, Mistral, Phi-3, Gemma) run on
//!   the `tokenizers` engine; special tokens are recognised in text unless the caller asks
//!   for plain text.
//! - [`StreamDecoder`]: detokenization token by token that never emits broken UTF-8.
//! - [`ChatTemplate`] / [`ChatMessage`]: the model's Jinja chat template rendered with
//!   minijinja the way transformers' `apply_chat_template` renders it, sandboxed, with a
//!   documented fallback ([`chat`]) for files that carry none.
//!
//! Reference data for the tests comes from transformers (scripts/tokenizer_reference/).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod bpe_model;
mod bpe_word;
pub mod chat;
mod decode;
mod engine;
mod error;
mod from_gguf;
mod from_hf;
mod gguf_vocab;
mod merges;
mod piece_map;
mod piece_table;
pub mod pretokenize;
mod special;
mod spm_model;
mod stream;
mod tokenizer;

pub use chat::{
    builtin_template, format_unix_utc, ChatMessage, ChatTemplate, RenderLimits, TemplateOrigin, BUILTIN_TEMPLATES,
};
pub use error::{TemplateError, TokenizerError};
pub use gguf_vocab::{GgufVocab, TokenType, RAW_TOKEN_MARK};
pub use special::EOG_TEXTS;
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;

#[cfg(test)]
mod tests {
    /// The engine shares these across threads (one tokenizer per model, decoders per request).
    #[test]
    fn shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<crate::Tokenizer>();
        send_sync::<crate::ChatTemplate>();
        send_sync::<crate::StreamDecoder>();
    }
}
