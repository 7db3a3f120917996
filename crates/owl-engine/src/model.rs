//! What the engine needs from a model and a detokenizer, as traits.
//!
//! The engine drives anything that can run a causal forward pass over its own KV cache
//! ([`LanguageModel`]) and anything that turns token ids into text incrementally
//! ([`TextDecoder`]). owl-models and owl-tokenizer implement them through adapters; tests
//! implement them with tiny deterministic fakes.

use std::sync::Arc;

use owl_models::LoraSet;

use crate::error::ModelError;

/// A causal language model bound to one KV cache (one sequence).
///
/// Positions are implicit: the cache holds positions `0..kv_len()`, and `forward` appends
/// its tokens at `kv_len()..`. Prefix reuse between chat turns is `kv_truncate` followed by
/// a forward of the new suffix.
pub trait LanguageModel {
    /// Logits per position.
    fn vocab_size(&self) -> usize;

    /// Positions the KV cache can hold (the context size).
    fn context_size(&self) -> usize;

    /// Positions currently in the KV cache.
    fn kv_len(&self) -> usize;

    /// Drops cached positions `n..`, keeping the first `n` (`n <= kv_len()`). Returns how
    /// many positions are actually kept: `n`, or fewer when the cache cannot be cut there
    /// (a cache that can only be cleared returns 0); the engine re-runs what was lost.
    fn kv_truncate(&mut self, n: usize) -> usize;

    /// Runs `tokens` at positions `kv_len()..kv_len() + tokens.len()`, appending them to
    /// the cache, and writes the logits of `tokens[first_output..]` row by row into
    /// `logits`, whose length is `(tokens.len() - first_output) * vocab_size()`
    /// (`first_output == tokens.len()`: no logits wanted, `logits` is empty).
    ///
    /// The caller guarantees `1 <= tokens.len()`, `kv_len() + tokens.len() <= context_size()`,
    /// and ids below `vocab_size()`. On error the cache may hold part of the batch; the
    /// engine then clears it.
    fn forward(&mut self, tokens: &[u32], first_output: usize, logits: &mut [f32]) -> Result<(), ModelError>;

    /// Asks for batch-invariant forward passes where the model offers them (see
    /// [`crate::BatchModel::set_batch_invariant`]).
    fn set_batch_invariant(&mut self, _on: bool) {}

    /// The LoRA adapters the next forward calls run with (`None`: the base). The cache is
    /// left alone: the caller knows under which adapters it was computed. A model that
    /// cannot apply adapters refuses any.
    fn use_lora(&mut self, lora: Option<Arc<LoraSet>>) -> Result<(), ModelError> {
        match lora {
            Some(set) if !set.is_empty() => Err("this model does not take LoRA adapters".into()),
            _ => Ok(()),
        }
    }
}

/// Streaming detokenization: token ids in, complete UTF-8 text out.
///
/// A token may end in the middle of a multi-byte character (byte-fallback and byte-level
/// BPE vocabularies do this); its bytes are kept until the character is complete, so every
/// string handed out is valid UTF-8 and the concatenation of all of them is the decoded text.
pub trait TextDecoder {
    /// Starts a new stream that continues `context` (the prompt ids). Nothing of the context
    /// is emitted; a decoder may look at its last tokens so that the first generated token
    /// decodes as it would after them (SentencePiece decoders drop the leading space of a
    /// stream's first token, which is wrong for a continuation).
    fn reset(&mut self, context: &[u32]);

    /// Appends to `out` the text completed by `id` (possibly nothing), and to `bytes` the
    /// raw bytes `id` adds to the stream (all of them, even while they end inside a
    /// character), so that the bytes of all tokens concatenate to the exact output.
    fn push(&mut self, id: u32, out: &mut String, bytes: &mut Vec<u8>);

    /// End of stream: appends whatever is still pending (incomplete bytes as U+FFFD).
    fn finish(&mut self, out: &mut String);
}

impl<M: LanguageModel + ?Sized> LanguageModel for &mut M {
    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }
    fn context_size(&self) -> usize {
        (**self).context_size()
    }
    fn kv_len(&self) -> usize {
        (**self).kv_len()
    }
    fn kv_truncate(&mut self, n: usize) -> usize {
        (**self).kv_truncate(n)
    }
    fn forward(&mut self, tokens: &[u32], first_output: usize, logits: &mut [f32]) -> Result<(), ModelError> {
        (**self).forward(tokens, first_output, logits)
    }
    fn use_lora(&mut self, lora: Option<Arc<LoraSet>>) -> Result<(), ModelError> {
        (**self).use_lora(lora)
    }
    fn set_batch_invariant(&mut self, on: bool) {
        (**self).set_batch_invariant(on)
    }
}

impl<M: LanguageModel + ?Sized> LanguageModel for Box<M> {
    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }
    fn context_size(&self) -> usize {
        (**self).context_size()
    }
    fn kv_len(&self) -> usize {
        (**self).kv_len()
    }
    fn kv_truncate(&mut self, n: usize) -> usize {
        (**self).kv_truncate(n)
    }
    fn forward(&mut self, tokens: &[u32], first_output: usize, logits: &mut [f32]) -> Result<(), ModelError> {
        (**self).forward(tokens, first_output, logits)
    }
    fn set_batch_invariant(&mut self, on: bool) {
        (**self).set_batch_invariant(on)
    }
    fn use_lora(&mut self, lora: Option<Arc<LoraSet>>) -> Result<(), ModelError> {
        (**self).use_lora(lora)
    }
}

/// A [`TextDecoder`] over a fixed table of token byte strings, assembling UTF-8 across
/// tokens: the reference behaviour adapters must match, and a convenient decoder for
/// vocabularies given as raw bytes.
#[derive(Debug, Clone)]
pub struct ByteTableDecoder {
    pieces: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

impl ByteTableDecoder {
    /// `pieces[id]` is the byte string of token `id`; ids beyond the table decode to nothing.
    pub fn new(pieces: Vec<Vec<u8>>) -> Self {
        ByteTableDecoder { pieces, pending: Vec::new() }
    }
}

impl TextDecoder for ByteTableDecoder {
    fn reset(&mut self, _context: &[u32]) {
        self.pending.clear();
    }

    fn push(&mut self, id: u32, out: &mut String, bytes: &mut Vec<u8>) {
        if let Some(piece) = self.pieces.get(id as usize) {
            self.pending.extend_from_slice(piece);
            bytes.extend_from_slice(piece);
        }
        drain_complete_utf8(&mut self.pending, out);
    }

    fn finish(&mut self, out: &mut String) {
        out.push_str(&String::from_utf8_lossy(&self.pending));
        self.pending.clear();
    }
}

/// Moves the longest prefix of `pending` that can no longer change into `out`: complete
/// UTF-8 characters, and invalid bytes (as U+FFFD) that no further byte can repair. An
/// incomplete character at the end stays pending.
pub fn drain_complete_utf8(pending: &mut Vec<u8>, out: &mut String) {
    let mut start = 0;
    loop {
        match std::str::from_utf8(&pending[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = pending.len();
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // Safe by construction: from_utf8 vouched for these bytes.
                out.push_str(std::str::from_utf8(&pending[start..start + valid]).unwrap_or_default());
                start += valid;
                match e.error_len() {
                    // Bytes that can never become valid: replace and go on.
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        start += bad;
                    }
                    // An incomplete character at the end: wait for more bytes.
                    None => break,
                }
            }
        }
    }
    pending.drain(..start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_decoder_joins_split_characters() {
        let euro = "€".as_bytes(); // e2 82 ac
        let mut d = ByteTableDecoder::new(vec![
            b"a".to_vec(),
            euro[..2].to_vec(),
            euro[2..].to_vec(),
            vec![0xff],
            euro[..1].to_vec(),
        ]);
        let mut out = String::new();
        let mut bytes = Vec::new();
        d.push(0, &mut out, &mut bytes);
        assert_eq!(out, "a");
        d.push(1, &mut out, &mut bytes);
        assert_eq!(out, "a", "half a character is held");
        d.push(2, &mut out, &mut bytes);
        assert_eq!(out, "a€");
        d.push(3, &mut out, &mut bytes);
        assert_eq!(out, "a€\u{fffd}", "an invalid byte is replaced at once");
        d.push(4, &mut out, &mut bytes);
        d.finish(&mut out);
        assert_eq!(out, "a€\u{fffd}\u{fffd}", "an unfinished character is flushed at the end");
        d.push(99, &mut out, &mut bytes);
        assert_eq!(out, "a€\u{fffd}\u{fffd}");
    }
}
