//! [`TokenizerDecoder`]: owl-tokenizer's streaming detokenizer as a [`TextDecoder`].
//!
//! A stream continues the prompt: on `reset` the last few prompt tokens are pushed through
//! a fresh decoder and their text discarded, so that the first generated token decodes as
//! it does after them — in particular a SentencePiece `▁word` keeps its space (a decoder
//! that starts from nothing strips it, which is right for a whole text and wrong for a
//! continuation; llama.cpp's per-token pieces and TGI's prefixed DecodeStream do the same).

use owl_tokenizer::{StreamDecoder, Tokenizer};

use crate::model::TextDecoder;

/// How many context tokens prime a new stream (HF's DecodeStream needs a few for
/// decoders whose output depends on neighbours; the table decoder needs one).
const PRIMING_TOKENS: usize = 4;

/// Streams text for generated ids with a [`Tokenizer`].
pub struct TokenizerDecoder<'t> {
    tokenizer: &'t Tokenizer,
    skip_special: bool,
    stream: StreamDecoder,
    discard: String,
}

impl<'t> TokenizerDecoder<'t> {
    /// `skip_special`: special tokens (`<|im_end|>`, ...) decode to nothing.
    pub fn new(tokenizer: &'t Tokenizer, skip_special: bool) -> Self {
        TokenizerDecoder {
            tokenizer,
            skip_special,
            stream: tokenizer.stream_decoder(skip_special),
            discard: String::new(),
        }
    }
}

impl TextDecoder for TokenizerDecoder<'_> {
    fn reset(&mut self, context: &[u32]) {
        self.stream = self.tokenizer.stream_decoder(self.skip_special);
        for &id in &context[context.len().saturating_sub(PRIMING_TOKENS)..] {
            // Ids the tokenizer does not know (padding rows of the embedding) prime nothing.
            let _ = self.stream.push_into(id, &mut self.discard);
        }
        self.discard.clear();
    }

    fn push(&mut self, id: u32, out: &mut String, bytes: &mut Vec<u8>) {
        // An id beyond the tokenizer's vocabulary (models pad their output matrix, e.g.
        // Qwen2.5's 151936 rows for 151665 tokens) has no text.
        let _ = self.stream.push_with_bytes(id, out, bytes);
    }

    fn finish(&mut self, out: &mut String) {
        out.push_str(&self.stream.finish());
    }
}
